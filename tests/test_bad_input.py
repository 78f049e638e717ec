"""Bad input, one table: every case gives a ValueError that names the bad value (and, where
there is a list, the valid ones). Damaged store files and checkpoints: tests/test_faults.py."""

import math

import pytest

from shared.config import train_config
from shared.experiments import experiment_config
from shared.compute import config_runs
from shared.results import Store

CASES = {
    "seed True": (lambda: Store().run_dir("x", train_config("smoke"), True), r"seed must be a non-negative int, got True \(bool\)"),
    "seed 'abc'": (lambda: Store().run_dir("x", train_config("smoke"), "abc"), r"got 'abc' \(str\)"),
    "seeds with -1": (lambda: config_runs("x", train_config("smoke"), seeds=[1, -1]), r"got -1 \(int\)"),
    "lr inf": (lambda: train_config("smoke", lr=math.inf), r"TrainConfig.lr must be a finite number, got inf"),
    "bn 'False'": (lambda: train_config("smoke", bn="False"), r"TrainConfig.bn must be True or False, got 'False'"),
    "momentum -5": (lambda: train_config("smoke", momentum=-5), r"momentum must be >= 0, got -5"),
    "weight decay nan": (lambda: train_config("smoke", weight_decay=math.nan), r"weight_decay must be a finite number, got nan"),
    "unknown preset": (lambda: train_config("nope"), r"unknown preset 'nope'; valid: smoke, cpu, preview, quick, paper"),
    "unknown field": (lambda: train_config("smoke", lrr=1), r"unknown TrainConfig field 'lrr'; valid: arch, bn"),
    "unknown arch": (lambda: train_config("smoke", arch="resnet7"), r"unknown arch 'resnet7'; valid: resnet20"),
    "unknown init": (lambda: train_config("smoke", init="he"), r"unknown init 'he'; valid: xavier_uniform"),
    "probe lr -1": (lambda: experiment_config("fig4_diverging_update", "smoke", lr=-1), r"DivergingUpdateConfig.lr must be positive, got -1"),
    "probe lr nan": (lambda: experiment_config("fig4_diverging_update", "smoke", lr=math.nan), r"lr must be a finite number, got nan"),
    "fig7 n 0": (lambda: experiment_config("fig7_singular_values", "smoke", n=0), r"SingularValueConfig.n must be positive, got 0"),
    "probe unknown field": (lambda: experiment_config("fig4_diverging_update", "smoke", n=0), r"unknown DivergingUpdateConfig field 'n'; valid: arch"),
    "unknown experiment": (lambda: experiment_config("fig9", "smoke"), r"unknown experiment 'fig9'; valid: fig2_gradients"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_names_the_value_and_the_valid_ones(case):
    call, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        call()
