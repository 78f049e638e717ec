"""The distances to the paper's figures (shared.paper) on results built from the paper's own values."""

import math

import numpy as np
import pandas as pd
import pytest

from shared import paper
from shared.figures import candidates


def fig5_result(scale: float = 1.0, reading=math.exp) -> dict:
    return {net: {str(k): {stat: scale * reading(v) for (n, stat), values in paper.FIG5_LOG.items() if n == net
                           for kk, v in zip(paper.FIG5_LAYERS, values) if kk == k}
                  for k in paper.FIG5_LAYERS} for net in ("bn", "no_bn")}


def test_the_papers_own_values_are_at_distance_zero_and_a_factor_10_at_one_decade():
    exact = [{"bn": {"max_abs": 0.04}, "no_bn": {"max_abs": 4.0}}]
    assert paper.fig2_distance(exact) == pytest.approx(0, abs=1e-12)
    assert paper.fig2_distance([{"bn": {"max_abs": 0.4}, "no_bn": {"max_abs": 40.0}}]) == pytest.approx(1)
    assert paper.fig5_distance([fig5_result()], "ln") == pytest.approx(0, abs=1e-12)
    assert paper.fig5_distance([fig5_result(reading=lambda v: 10 ** v)], "log10") == pytest.approx(0, abs=1e-12)
    assert paper.fig5_distance([fig5_result(scale=math.e)], "ln") == pytest.approx(1)  # 1 ln unit everywhere
    ratios = [{"bn": {"2": {"ratio": 1000.0}}, "no_bn": {"2": {"ratio": 1.0}}}]
    assert paper.table1_distance(ratios) == pytest.approx(math.sqrt(0.5))  # 1 decade off for one of two


def test_fig4_distance_scores_an_overflow_at_float32s_limit():
    def result(scale, overflow=False):
        layers = {}
        for layer, values in paper.FIG4_AT_100.items():
            mean, var = scale * values["max_abs_mean"], scale * values["max_variance"]
            layers[layer] = {"means": [[0.0, 0.0], [-mean, mean / 2]],
                             "variances": [[1.0, 1.0], [None if overflow and layer == "80" else var, 0.0]]}
        return {"layers": layers}
    assert paper.fig4_distance([result(1.0)]) == pytest.approx(0, abs=1e-12)
    assert paper.fig4_distance([result(10.0)] * 3) == pytest.approx(1)
    assert paper.fig4_at_end(result(1.0, overflow=True), "80")["max_variance"] == paper.FLOAT32_MAX
    assert math.isnan(paper.fig4_distance([{"layers": {"2": {}, "9": {}, "16": {}}}]))  # not ResNet-110


def test_top_probability_is_recovered_from_the_logit_gradients():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), size=128)
    labels = rng.integers(0, 10, 128)
    gradients = (p - np.eye(10)[labels]) / 128
    assert paper.top_probability(gradients.tolist()) == pytest.approx(p.max(1).mean())


def test_candidates_cover_each_network_once():
    names = [c.name for c in candidates.candidates()]
    assert len(names) == len(set(names)) == 10
    assert "B | conv xavier_uniform | fc pytorch_default" in names
    cfg = candidates.candidate_config("fig2_gradients", candidates.Candidate(None, "xavier_uniform", "same"))
    assert (cfg.shortcut, cfg.init, cfg.fc_init) == (None, "xavier_uniform", "same")


def test_findings_name_every_candidate_tied_on_the_mean_rank():
    names = [c.name for c in candidates.candidates()]
    a, b = "A | conv xavier_uniform | fc pytorch_default", "B | conv xavier_uniform | fc pytorch_default"
    columns = ["Fig 2", "Fig 5 (ln)", "Fig 5 (log10)", "Fig 6"]
    table = pd.DataFrame(5.0, index=names, columns=columns)
    table.loc[a, "Fig 6"], table.loc[b, ["Fig 2", "Fig 5 (ln)", "Fig 5 (log10)"]] = 0.1, 0.5
    table["mean rank"] = [1.5 if n in (a, b) else 5.0 for n in names]
    first = candidates.findings(table)[0]
    assert first.startswith("Closest overall (mean rank 1.50 of 10, a tie of 2): ")
    assert f"{a}, the closest on Fig 6" in first
    assert f"{b}, the closest on Fig 2, Fig 5 (ln), Fig 5 (log10)" in first
    table.loc[b, "mean rank"] = 2.0
    assert candidates.findings(table)[0] == f"Closest overall (mean rank 1.50 of 10): {a}, the closest on Fig 6."
