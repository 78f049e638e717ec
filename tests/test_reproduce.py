"""The committed paper-preset results can be recomputed from scratch: Fig 2 and Fig 5 for seed 0
on the real dataset (the JPEG copy of CIFAR-10 the results were computed on)."""

import pytest

from shared.experiments import experiment_config, run_experiment
from shared.results import Store


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["fig2_gradients", "fig5_depth_profile"])
def test_stored_result_is_reproduced(experiment, real_archive, tmp_path):
    cfg = experiment_config(experiment, "paper")
    stored = Store().get(experiment, cfg, 0)
    assert stored is not None, f"no committed {experiment} result for seed 0"
    assert real_archive.name in stored["provenance"]["data"]
    fresh = run_experiment(experiment, cfg, 0, real_archive, device="cpu", store=Store(tmp_path, tmp_path / "ck"))
    assert fresh["provenance"]["data"] == stored["provenance"]["data"]  # the same pixels
    compare(fresh["result"], stored["result"])


def compare(fresh, stored, path="result"):
    """Equal structure; numbers equal to float32 rounding; histogram counts within one per bin."""
    if isinstance(stored, dict):
        assert fresh.keys() == stored.keys(), path
        for key in stored:
            compare(fresh[key], stored[key], f"{path}.{key}")
    elif isinstance(stored, list):
        assert len(fresh) == len(stored), path
        if path.endswith("counts"):
            assert all(abs(a - b) <= 1 for a, b in zip(fresh, stored)), path
        else:
            for i, (a, b) in enumerate(zip(fresh, stored)):
                compare(a, b, f"{path}[{i}]")
    elif isinstance(stored, float):
        assert fresh == pytest.approx(stored, rel=1e-3, abs=1e-9), path
    else:
        assert fresh == stored, path
