"""Plotting and reporting helpers shared by the figure notebooks."""

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from .paths import saved_figures_dir
from .results import StoredRun


def setup_style() -> None:
    """Matplotlib and pandas display settings shared by the notebooks."""
    pd.set_option("display.max_colwidth", None)  # claims tables show their whole text
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "axes.grid": True,
                         "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
                         "font.size": 10, "svg.hashsalt": "bn", "svg.fonttype": "none"})


def save_figure(fig: plt.Figure, name: str, preset: str) -> Path | None:
    """Save `fig` as <name>.png and .svg (with the preset in the name unless "paper") where
    `shared.paths.saved_figures_dir` says (figures/ under `make report`); None if nowhere."""
    directory = saved_figures_dir()
    if directory is None:
        return None
    stem = name if preset == "paper" else f"{name}_{preset}"
    directory.mkdir(parents=True, exist_ok=True)
    fig.savefig(directory / f"{stem}.png", bbox_inches="tight")
    fig.savefig(directory / f"{stem}.svg", bbox_inches="tight", metadata={"Date": None})
    return directory / f"{stem}.png"


def seed_result(runs: list[dict], seed: int) -> dict:
    """The stored result of `seed`'s run among `runs` (the one a figure draws)."""
    return next(r.result for r in runs if r.provenance["seed"] == seed)


def seed_count(table: pd.DataFrame) -> int:
    """How many seeds a per-seed table (a "seed" index level) holds."""
    return table.index.get_level_values("seed").nunique()


class Provenance:
    """A notebook's closing provenance: one line per group of runs (`runs_summary`), shown collapsed
    at the end of its page (an HTML <details> element); its text is the lines themselves."""

    def __init__(self, lines: dict[str, str]):
        self.lines = lines

    def __repr__(self) -> str:
        return "\n".join(f"{name}: {line}" for name, line in self.lines.items())

    def _repr_html_(self) -> str:
        from html import escape
        items = "".join(f"<li><b>{escape(name)}</b>: {escape(line)}</li>" for name, line in self.lines.items())
        return (f"<details><summary>Provenance: the runs behind this page (preset, seeds, devices, data, "
                f"code versions, dates)</summary><ul>{items}</ul></details>")


def stored_runs(grouped) -> list[StoredRun]:
    """Every stored run in `grouped`, however a figure module groups them: a run (`StoredRun`), or
    a list, tuple or dict (its values) of groups; the configs of (config, runs) pairs
    (`shared.figures.sweep.Runs`) are not runs and are skipped."""
    if isinstance(grouped, StoredRun):
        return [grouped]
    if isinstance(grouped, dict):
        return stored_runs(list(grouped.values()))
    if isinstance(grouped, (list, tuple)):
        return [run for group in grouped for run in stored_runs(group)]
    return []


def runs_summary(runs, preset: str) -> str:
    """One line of provenance for a figure: preset, seeds, devices, data, code versions of the
    stored runs in `runs`, grouped as a figure module holds them (`stored_runs`)."""
    runs = stored_runs(runs)
    provs = [r.provenance for r in runs]
    seeds = sorted({p["seed"] for p in provs})
    counted = f"{len(seeds)} seed(s)" if len(seeds) == len(provs) else f"{len(provs)} runs, seed(s)"
    devices = sorted({p["device"] for p in provs})
    data = sorted({p["data"] or "no data" for p in provs})
    # the stored commit, and every commit a resumed training run was trained under before it
    versions = [p["git_commit"] for p in provs] + [c for r in runs for c in r.result.get("code", [])]
    commits = sorted({c[:7] + ("+dirty" if c.endswith("+dirty") else "") for c in versions})
    dates = sorted(p["date"][:10] for p in provs)
    return (f"preset {preset}; {counted} {seeds}; device {', '.join(devices)}; "
            f"data {', '.join(data)}; code {', '.join(commits)}; "
            f"dates {dates[0]}..{dates[-1]}" if provs else f"preset {preset}: no runs")


def training_title(cfg, preset: str, runs) -> str:
    """A training figure's title: network, preset and how it departs from the paper's protocol,
    number of seeds and the devices that trained `runs` (grouped as in `stored_runs`; Fig 1 and
    the sweep)."""
    provs = [r.provenance for r in stored_runs(runs)]
    seeds = len({p["seed"] for p in provs})
    devices = ", ".join(sorted({p["device"] for p in provs})) or "no device"
    reductions = [f"{cfg.train_subset:,}-image training subset"] if cfg.train_subset else []
    reductions += [f"{cfg.test_subset:,}-image test subset"] if cfg.test_subset else []
    reductions += [f"{cfg.steps_per_epoch} steps per epoch"] if cfg.steps_per_epoch else []
    reductions += [f"{cfg.epochs} epochs"] if preset != "paper" else []
    reductions += [cfg.precision] if cfg.precision != "fp32" else []
    scope = "paper protocol" if preset == "paper" else "reduced: " + ", ".join(reductions)
    return f"{cfg.arch}, {preset} preset ({scope}); {seeds} seed(s); {devices}"


def network_label(cfg) -> str:
    """A figure title's name of the network a config builds: its architecture and, where they are
    not the architecture's plain ones, its shortcut and classifier init beside the convolutions'."""
    parts = [cfg.arch]
    if cfg.shortcut:
        parts.append(f"option-{cfg.shortcut} shortcuts")
    parts.append(f"{cfg.init} convs" if cfg.fc_init != "same" else cfg.init)
    if cfg.fc_init != "same":
        parts.append(f"{cfg.fc_init} classifier")
    return ", ".join(parts)
