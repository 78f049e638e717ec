"""Fig 1's ablation of the start: BN at 0.1 after He et al.'s warm-up (notebook 01).

With BN at 0.1, ResNet-110's first epoch can stay at chance (Fig 1 on the cpu preset, seed 0). He
et al. (2016, Sec. 4.2) found 0.1 "slightly too large to start converging" for ResNet-110 and
trained it at 0.01 until the training error fell below 80 % (about 400 steps), then at 0.1. The
`warmup` grid (`shared.grids.warmup_grid`, loaded with Fig 1's runs by `fig1.load`) trains Fig 1's
BN run at 0.1 with one such epoch first and the same schedule after it; this module sets it beside
the run without, seed by seed. It is
not the paper's protocol: it asks how much of the short schedule's gap to the paper the slow start
at 0.1 costs.
"""

import numpy as np
import pandas as pd

from .divergence import CHANCE
from .fig1 import PAPER_COLOURS, completed, first_drop

PLAIN = "BN, lr 0.1"                 # Fig 1's run, the baseline
WARM = "BN, lr 0.1 after a warm-up"  # the warm-up grid's


def paired(plain: list[dict], warm: list[dict]) -> dict[int, tuple[list[dict], list[dict]]]:
    """Per seed that completed both: the per-epoch metrics without and with the warm-up."""
    a, b = completed(plain), completed(warm)
    return {seed: (a[seed], b[seed]) for seed in sorted(a.keys() & b.keys())}


def before_drop(metrics: list[dict]) -> int:
    """The 0-based index of the last epoch at the schedule's initial rate (of a run without warm-up)."""
    drop = first_drop(metrics)
    return len(metrics) - 1 if drop is None else drop - 1


def table(plain: list[dict], warm: list[dict]) -> pd.DataFrame:
    """Per seed that completed both runs, then their mean ("mean"): test accuracy after the first
    epoch, at the last epoch before the first rate drop and at the end, and the final train
    accuracy, without the warm-up (PLAIN) and with it (WARM)."""
    rows = []
    for seed, (a, b) in paired(plain, warm).items():
        d = before_drop(a)
        for name, m in ((PLAIN, a), (WARM, b)):
            rows.append({"seed": seed, "run": name, "test acc, epoch 1": m[0]["test_acc"],
                         f"test acc, epoch {d + 1}": m[d]["test_acc"], "final test acc": m[-1]["test_acc"],
                         "final train acc": m[-1]["train_acc"]})
    if not rows:
        return pd.DataFrame(columns=["seed", "run"]).set_index(["seed", "run"])
    df = pd.DataFrame(rows)
    mean = df.drop(columns="seed").groupby("run", sort=False).mean().reset_index().assign(seed="mean")
    return pd.concat([df, mean]).set_index(["seed", "run"])


def findings(plain: list[dict], warm: list[dict]) -> list[str]:
    """The ablation in sentences: per seed, the warm-up's final test accuracy against the run
    without, and where each stood after the first epoch."""
    pairs = paired(plain, warm)
    if not pairs:
        return ["The warm-up ablation (BN at 0.1 after one epoch at 0.01): no seed has both runs yet."]
    lines = []
    for seed, (a, b) in pairs.items():
        gain = b[-1]["test_acc"] - a[-1]["test_acc"]
        lines.append(f"Warm-up, seed {seed}: after epoch 1 {b[0]['test_acc']:.1%} against {a[0]['test_acc']:.1%} "
                     f"without; at the end {b[-1]['test_acc']:.1%} against {a[-1]['test_acc']:.1%} "
                     f"({100 * gain:+.1f} points).")
    return lines


def plot(ax, plain: list[dict], warm: list[dict]) -> None:
    """Test accuracy per epoch of the seeds that completed both runs (mean), without the warm-up
    (Fig 1's colour for BN at 0.1, solid) and with it (dashed); a legend where there are both."""
    pairs = paired(plain, warm)
    for k, (name, ls) in enumerate(((PLAIN, "-"), (WARM, "--"))):
        if not pairs:
            break
        acc = np.mean([[m["test_acc"] for m in runs[k]] for runs in pairs.values()], axis=0)
        ax.plot(np.arange(1, len(acc) + 1), acc, ls, color=PAPER_COLOURS[PLAIN], marker="o", ms=3,
                label=f"{name} ({len(pairs)} seed(s))")
    ax.axhline(CHANCE, color="grey", ls=":", lw=1)
    ax.set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1))
    if pairs:
        ax.legend(fontsize=8, loc="lower right")
