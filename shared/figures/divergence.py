"""Where and how ResNet-110 without BN diverges, beside Fig 1 (the paper: larger rates diverge,
"not shown"): how a stored training run ended (`failure`, `trained`: the definitions Fig 1, the
learning-rate sweep and the network choice judge runs by), and the divergence probes (the network
without BN at 0.1, 0.01, 0.003 and 0.001 for its first DIVERGENCE_STEPS steps on the full training
set) as a table, a summary per rate and a plot of their first steps. The notebook
`01_fig1_accuracy` shows them.
"""

import numpy as np
import pandas as pd

from ..config import TrainConfig
from ..grids import DIVERGENCE_STEPS
from ..train import CHANCE_ACCURACY, learning_failure

CHANCE = 0.1  # the test accuracy of a constant guess on CIFAR-10's balanced classes


def failure(result: dict) -> str | None:
    """Why a run failed ("diverged", or `shared.train.learning_failure`'s reason), or None; derived
    from the stored metrics, so that every run is judged by today's definition."""
    if result["status"] != "completed":
        return "diverged"
    if result.get("initial_loss") is None:  # runs stored before the initial loss was recorded
        return "final test accuracy at chance" if result["metrics"][-1]["test_acc"] <= CHANCE_ACCURACY else None
    return learning_failure(result["initial_loss"], result["metrics"])


def trained(result: dict) -> bool:
    """A run trains when it neither diverges nor fails to learn."""
    return failure(result) is None


def divergence_table(runs: list[tuple[TrainConfig, list[dict]]]) -> pd.DataFrame:
    """One row per run: its rate and seed, the loss before any update, the first step whose loss
    passes the paper's 1e3 (step 0 included), the step it diverged at (our definition), its
    status and why it failed, and its loss after 1 and 10 updates and at its last step."""
    rows = []
    for cfg, found in runs:
        for r in found:
            res = r.result
            losses = step_losses(res)
            rows.append({"lr": cfg.lr, "seed": r.provenance["seed"], "initial loss": res["initial_loss"],
                         "first step > 1e3": res["first_above_step"], "diverged at step": res["diverged_step"],
                         "steps run": len(losses), "status": res["status"],
                         "failure": failure(res),
                         "loss at step 1": losses[1] if len(losses) > 1 else np.nan,
                         "loss at step 10": losses[10] if len(losses) > 10 else np.nan,
                         "last loss": losses[-1]})
    columns = ["lr", "seed", "initial loss", "first step > 1e3", "diverged at step", "steps run", "status",
               "failure", "loss at step 1", "loss at step 10", "last loss"]
    return pd.DataFrame(rows, columns=columns).set_index(["lr", "seed"]).sort_index(ascending=[False, True])


def step_losses(result: dict) -> np.ndarray:
    """Every recorded step loss of a run's first epoch (non-finite ones as inf)."""
    values = result["metrics"][0].get("step_losses") or result["diverged_trace"]
    return np.array([np.inf if v is None else v for v in values], dtype=float)


def divergence_summary(divergence: pd.DataFrame) -> pd.DataFrame:
    """Per rate: runs, how many diverged and at which steps, how many passed 1e3 at their initial
    loss already, and the median loss of the last step run by those that did not diverge."""
    rows = []
    for lr, group in divergence.groupby(level="lr", sort=False):
        diverged = group[group["status"] == "diverged"]
        kept = group[group["status"] == "completed"]
        rows.append({"lr": lr, "runs": len(group), "diverged": len(diverged),
                     "diverged at steps": ", ".join(str(int(s)) for s in diverged["diverged at step"]) or "-",
                     "initial loss > 1e3": int((group["first step > 1e3"] == 0).sum()),
                     "median initial loss": group["initial loss"].median(),
                     f"median last loss (step {DIVERGENCE_STEPS - 1}), not diverged":
                         kept["last loss"].median() if len(kept) else np.nan})
    return pd.DataFrame(rows).set_index("lr")


def plot_first_steps(axes, runs: list[tuple[TrainConfig, list[dict]]]) -> None:
    """Left: the loss after the first update, relative to the loss before it, against the rate
    (one point per seed). Right: every step's mini-batch loss (log steps; one line per seed, one
    colour per rate; a cross where a run diverged, and the line ends there). Losses beyond 10^12
    or non-finite are drawn at 10^12 (triangles on the left)."""
    top = 1e12
    first, traces = axes
    for i, (cfg, found) in enumerate(runs):
        for j, r in enumerate(found):
            losses = step_losses(r.result)
            if r.result["status"] == "diverged":  # the steps after it are not part of the story
                losses = losses[:r.result["diverged_step"] + 1]
            shown = np.minimum(np.where(np.isfinite(losses), losses, top), top)
            label = f"lr {cfg.lr:g} ({len(found)} seed(s))" if j == 0 else None
            if len(losses) > 1:
                ratio = losses[1] / losses[0]
                first.plot(cfg.lr, min(ratio, top) if np.isfinite(ratio) else top,
                           "^" if not np.isfinite(ratio) or ratio >= top else "o", color=f"C{i}", ms=7)
            steps = np.arange(1, len(shown) + 1)  # step k drawn at k + 1 on the log axis
            traces.loglog(steps, shown, color=f"C{i}", lw=1.2, alpha=0.8, label=label)
            if r.result["status"] == "diverged":
                step = r.result["diverged_step"]
                traces.plot(step + 1, shown[min(step, len(shown) - 1)], "x", color=f"C{i}", ms=9, mew=2)
    first.axhline(1, color="grey", ls=":", lw=1)
    first.set(xscale="log", yscale="log", xlabel="learning rate", ylim=(0.1, top * 10),
              ylabel="loss after the first update / before it")
    traces.axhline(1e3, color="k", ls="--", lw=1, label="the paper's threshold, 1e3")
    traces.set(xlabel="step + 1", ylabel="mini-batch loss", ylim=(1, top * 10))
