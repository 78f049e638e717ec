"""The protocol every figure module that judges claims follows: load -> tables -> claims.

    found = fig2.load(Source("paper"), arch="resnet101")  # its stored runs: a frozen `Runs`
    t = fig2.tables(found)                                # its tables: a frozen `Tables` of DataFrames
    fig2.claims(t, "paper")                               # the paper's claims, judged on them

`Source` says where the runs come from (the preset, the seeds shown, which seed to compute where
it is missing), in one object that every `load` takes. A notebook shows `t`'s tables and plots
from `found`; the report and the tests recompute any figure's claims from the store through the
registry (`shared.figures.recompute_claims`) without running its notebook.
"""

from dataclasses import dataclass, replace

from ..config import DEFAULT_INIT
from ..results import check_seed, check_seeds, config_runs


@dataclass(frozen=True)
class Source:
    """Where a figure's runs come from: the store's runs of `preset` for `seeds` (None: every
    stored seed), after computing `compute`'s run of each config where it is missing (None:
    compute nothing, only read), from the CIFAR-10 copy at `data_dir` (None: the default)."""
    preset: str = "paper"
    seeds: tuple[int, ...] | None = None
    compute: int | None = None
    data_dir: str | None = None

    def __post_init__(self):
        if self.seeds is not None:
            object.__setattr__(self, "seeds", tuple(check_seeds(self.seeds)))
        if self.compute is not None:
            check_seed(self.compute)

    @property
    def read_only(self) -> "Source":
        """The same runs, computing none (for a figure's comparisons beside its own network)."""
        return replace(self, compute=None)


def experiment_config(experiment: str, preset: str, **overrides):
    """`shared.experiments.experiment_config`, imported when called: the registry of experiments
    imports the figure modules for their configs and measure functions."""
    from ..experiments import experiment_config as config
    return config(experiment, preset, **overrides)


def training_preset(preset: str) -> str:
    """The default preset of a figure's training runs beside its at-initialisation `preset`: the
    CPU preview ("smoke" beside the smoke preset)."""
    return "smoke" if preset == "smoke" else "preview"


def probe_runs(experiment: str, cfg, source: Source) -> list[dict]:
    """The stored runs of `experiment` at `cfg` that `source` shows, by seed, after computing
    `source.compute`'s run where it is missing."""
    if source.compute is not None:
        from ..experiments import run_experiment  # the measurements import the figures' registry
        run_experiment(experiment, cfg, source.compute, source.data_dir)
    return config_runs(experiment, cfg, seeds=source.seeds)


@dataclass(frozen=True)
class NetworkRuns:
    """The `Runs` of a figure measured on one network: its config and its runs, one per seed."""
    cfg: object
    runs: list[dict]


def network_runs(experiment: str, source: Source, arch: str | None = None, init: str = DEFAULT_INIT) -> NetworkRuns:
    """The runs of `experiment` on `arch` (None: the preset's) with convolutions initialised by `init`."""
    cfg = experiment_config(experiment, source.preset, arch=arch, init=init)
    return NetworkRuns(cfg, probe_runs(experiment, cfg, source))
