"""The paper's numbers, read off its figures, and one distance to them per at-init figure.

Bjorck et al. (2018) publish figures, not tables of numbers, so every value here was read off a
figure by eye (the precision is about a tenth of a decade on log axes, a few percent on linear
colour bars). Each distance is in decades (|log10(ours / paper)|, as a root mean square over the
figure's numbers), so 0 is on the paper's values and 1 is a factor of 10 off, except Fig 6's,
which compares probabilities. Ours is the geometric mean over seeds (the median for Fig 4, whose
values can overflow float32).
"""

import math

import numpy as np

# Fig 2: the largest |gradient| of layer 55's weights at initialisation (the histograms' ranges)
FIG2_MAX_ABS = {"bn": 0.04, "no_bn": 4.0}

# Fig 3, without BN: the step size at which the relative loss passes 1e3, mini-batches 1, 4, 7
# (with BN it stays below 10^0.5 up to the largest step shown, about 0.2)
FIG3_NO_BN_FIRST_ABOVE_1E3 = {"1": 1.4e-3, "4": 2.8e-3, "7": 4.5e-3}

# Fig 4, no BN, at the end of the diverging update: the top of each colour bar
FIG4_AT_100 = {"8": {"max_abs_mean": 1.2, "max_variance": 1.0},
               "44": {"max_abs_mean": 3.5e3, "max_variance": 5e6},
               "80": {"max_abs_mean": 3e8, "max_variance": 5.5e16}}

# Fig 5: "Log [magnitude]" (base not stated) at layers 6, 18, ..., 102, 110
FIG5_LAYERS = (6, 18, 30, 42, 54, 66, 78, 90, 102, 110)
FIG5_LOG = {
    ("bn", "abs_mean"): (-1.0, 0.2, 0.5, -0.9, -0.35, 0.1, -1.15, -0.35, 0.0, -0.6),
    ("bn", "std"): (0.05, 0.6, 0.9, 0.0, 0.6, 1.0, -0.05, 0.55, 0.9, -0.9),
    ("no_bn", "abs_mean"): (-1.55, -1.45, -0.3, -0.3, -0.35, 0.8, 1.25, 1.9, 2.85, 3.5),
    ("no_bn", "std"): (-1.3, -1.15, -0.3, -0.25, 0.15, 0.9, 1.4, 2.2, 3.0, 2.0),
}
LOG_READINGS = {"ln": math.log, "log10": math.log10}

# Fig 6, first mini-batch: the mean over images of the largest softmax probability, recovered from
# the colours: without BN one column is at or beyond the colour bar's top (p / 128 >= 0.004, i.e.
# p >~ 0.5, read as 1); with BN the positive entries are faint (about 0.002, p ~ 0.3)
FIG6_TOP_PROBABILITY = {"no_bn": 1.0, "bn": 0.3}

# Table 1: sum_b |g_b| / |sum_b g_b| of a kernel's per-example contributions: "close" without BN,
# about two orders of magnitude with BN
TABLE1_RATIO = {"no_bn": 1.0, "bn": 100.0}

FLOAT32_MAX = 3.4e38  # an overflowed float32 forward pass is scored as reaching this


def _decades(ours: float, paper: float) -> float:
    return abs(math.log10(ours / paper))


def _rms(values) -> float:
    return float(np.sqrt(np.mean(np.square(list(values)))))


def _geomean(values) -> float:
    return float(np.exp(np.mean(np.log(values))))


def fig2_distance(results: list[dict]) -> float:
    return _rms(_decades(_geomean([r[net]["max_abs"] for r in results]), FIG2_MAX_ABS[net])
                for net in FIG2_MAX_ABS)


def fig3_distance(results: list[dict]) -> float:
    """Step sizes that never passed 1e3 are scored at the largest size probed (a lower bound)."""
    def first_above(r, batch):
        value = r["no_bn"]["batches"][batch]["first_above_1e3"]
        return value if value is not None else max(r["sizes"])
    return _rms(_decades(_geomean([first_above(r, b) for r in results]), paper)
                for b, paper in FIG3_NO_BN_FIRST_ABOVE_1E3.items())


def fig4_at_end(result: dict, layer: str) -> dict:
    """The largest |channel mean| and channel variance of `layer` at 100 % of the update."""
    moments = result["layers"][layer]
    end = lambda rows: np.array([FLOAT32_MAX if v is None else v for v in rows[-1]], dtype=float)
    return {"max_abs_mean": float(np.nan_to_num(np.abs(end(moments["means"])), nan=FLOAT32_MAX).max()),
            "max_variance": float(np.nan_to_num(end(moments["variances"]), nan=FLOAT32_MAX).max())}


def fig4_distance(results: list[dict]) -> float:
    """NaN for a network without the paper's layers 8, 44 and 80 (not ResNet-110)."""
    if any(set(r["layers"]) != set(FIG4_AT_100) for r in results):
        return float("nan")
    return _rms(_decades(float(np.median([fig4_at_end(r, layer)[key] for r in results])), paper)
                for layer, values in FIG4_AT_100.items() for key, paper in values.items())


def fig5_distance(results: list[dict], reading: str) -> float:
    """RMS difference of our log magnitudes (in the paper's units under `reading`, ln or log10) from
    the paper's, over the four curves and the ten layers; NaN for a network without them."""
    if any(set(map(str, FIG5_LAYERS)) - set(r["bn"]) for r in results):
        return float("nan")
    log = LOG_READINGS[reading]
    gaps = [log(_geomean([r[net][str(k)][stat] for r in results])) - paper_value
            for (net, stat), paper in FIG5_LOG.items() for k, paper_value in zip(FIG5_LAYERS, paper)]
    return _rms(gaps)


def fig5_curve_distances(results: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """Per curve of Fig 5 ((network, statistic)), the RMS difference from the paper's under each
    log reading: {("bn", "std"): {"ln": ..., "log10": ...}, ...}; NaN for a network without the
    paper's layers."""
    if any(set(map(str, FIG5_LAYERS)) - set(r["bn"]) for r in results):
        return {curve: {reading: float("nan") for reading in LOG_READINGS} for curve in FIG5_LOG}
    out = {}
    for (net, stat), values in FIG5_LOG.items():
        ours = [_geomean([r[net][str(k)][stat] for r in results]) for k in FIG5_LAYERS]
        out[net, stat] = {reading: _rms(log(o) - v for o, v in zip(ours, values))
                          for reading, log in LOG_READINGS.items()}
    return out


def top_probability(first_batch_gradients: list[list[float]]) -> float:
    """The mean over images of the largest softmax probability, recovered from the gradients of
    the mean cross-entropy w.r.t. the logits ((p - onehot(label)) / B)."""
    g = np.asarray(first_batch_gradients)
    p = g * len(g)
    p[p < 0] += 1  # the label's entry: p - 1 < 0
    return float(p.max(1).mean())


def fig6_distance(results: list[dict]) -> float:
    """Mean absolute difference of the mean top-class probability (0..1, not decades)."""
    return float(np.mean([abs(np.mean([top_probability(r[net]["first_batch"]) for r in results]) - paper)
                          for net, paper in FIG6_TOP_PROBABILITY.items()]))


def table1_distance(results: list[dict]) -> float:
    """Over both networks, the ratio of averages, geometric mean over the layers and seeds."""
    return _rms(_decades(_geomean([v["ratio"] for r in results for v in r[net].values()]), paper)
                for net, paper in TABLE1_RATIO.items())
