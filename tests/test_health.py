"""shared.health: dead ReLUs and collapsed logits, against closed forms and stacked = alone."""
import math

import pytest
import torch
from helpers import QUIET, random_cifar

from shared.config import train_config
from shared.grids import NETWORK_CANDIDATES, network_grid
from shared.health import STAGES, dead_fraction, health, logit_spread
from shared.models import build_model, stack_models
from shared.results import config_hash
from shared.train import train


def test_dead_fraction_counts_units_zero_on_every_image():
    a = torch.ones(4, 6, 2, 2)          # 2 runs x 3 channels x 2 x 2 = 12 units per run
    a[:, 0] = 0                         # run 0: channel 0 dead everywhere (4 of 12 units)
    a[:3, 1, 0, 0] = 0                  # zero on 3 of 4 images only: alive
    a[:, 4, 1, 1] = 0                   # run 1: one unit dead
    assert dead_fraction(a, runs=2) == pytest.approx([4 / 12, 1 / 12])
    assert dead_fraction(torch.zeros(5, 3, 2), runs=1) == [1.0]


def test_logit_spread_of_a_constant_prediction_is_zero_across_images():
    constant = torch.tensor([1.0, 2.0, 3.0]).repeat(7, 1)
    spread = logit_spread(constant)
    assert spread["across_images"] == 0
    assert spread["across_classes"] == pytest.approx(1.0)
    x = torch.tensor([[0.0, 0.0], [2.0, 4.0]])     # std over images: sqrt(2), 2 sqrt(2)
    assert logit_spread(x)["across_images"] == pytest.approx(1.5 * math.sqrt(2))


def test_health_of_a_network_whose_classifier_is_zero():
    torch.manual_seed(0)
    model = build_model("resnet20", bn=False)
    torch.nn.init.zeros_(model.fc.weight)
    x = torch.randn(16, 3, 32, 32)
    (h,) = health(model, x)
    assert set(h["dead_relu"]) == set(STAGES)
    assert all(0 <= v <= 1 for v in h["dead_relu"].values())
    assert h["logit_spread"]["across_images"] == 0  # the output is the bias alone
    assert model.training  # the mode it was in is restored


def test_health_of_stacked_runs_equals_each_alone():
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(build_model("resnet20", bn=True).eval())
    x = torch.randn(8, 3, 32, 32)
    alone = [health(m, x)[0] for m in models]
    together = health(stack_models(models).eval(), x.repeat(1, 2, 1, 1), runs=2)
    for a, t in zip(alone, together):
        assert t["dead_relu"] == pytest.approx(a["dead_relu"], abs=1e-6)
        assert t["logit_spread"] == pytest.approx(a["logit_spread"], rel=1e-4)


def test_training_records_health_per_epoch_only_when_asked():
    data = random_cifar()
    cfg = train_config("smoke", record_health=20)
    result = train(cfg, data, seed=0, ctx=QUIET)
    assert [sorted(m["health"]) for m in result["metrics"]] == [["dead_relu", "features", "grad_norm", "logit_spread"]] * cfg.epochs
    plain = train(train_config("smoke"), data, seed=0, ctx=QUIET)
    assert all("health" not in m for m in plain["metrics"])
    # recording health changes no trained number
    assert [m["train_loss"] for m in plain["metrics"]] == [m["train_loss"] for m in result["metrics"]]


def test_network_grid_asks_the_question_without_bn_first():
    grid = network_grid("smoke")
    assert [c.bn for c in grid] == [False] * len(NETWORK_CANDIDATES) + [True] * len(NETWORK_CANDIDATES)
    assert len({config_hash(c) for c in grid}) == len(grid)
    assert all(c.lr == 1e-4 and c.lr_drops == () and c.record_health > 0 for c in grid)
    # the field is an addition: a run that does not record health keeps its old key
    assert config_hash(train_config("smoke", record_health=0)) == config_hash(train_config("smoke"))
