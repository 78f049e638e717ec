"""The protocol every figure module that judges claims follows: load -> tables -> claims.

    found = fig2.load(Source("paper"), arch="resnet101")  # its stored runs: a frozen `Runs`
    t = fig2.tables(found)                                # its tables: a frozen `Tables` of DataFrames
    fig2.claims(t, "paper")                               # the paper's claims, judged on them

`Source` says where the runs come from (the preset, the seeds shown, which seed to compute where
it is missing), in one object that every `load` takes. A notebook shows `t`'s tables and plots
from `found`; the report and the tests recompute any figure's claims from the store through the
registry (`shared.figures.recompute_claims`) without running its notebook.
"""

from dataclasses import dataclass, fields, replace
from typing import Callable, get_args

from ..config import DEFAULT_INIT, PROBE_PRESETS, check_choice, network_fields
from ..models import build_model, weight_layers
from ..compute import RunContext, config_runs, measured
from ..results import check_seed, check_seeds

# The smoke preset's network and mini-batches for every at-initialisation measurement: seconds on a CPU
SMOKE_NETWORK = dict(arch="resnet20", batch_size=16, train_subset=200)


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
    def context(self) -> RunContext:
        """How its missing runs are computed: from its CIFAR-10 copy, without progress bars."""
        return RunContext(data_dir=self.data_dir, progress=False)

    @property
    def read_only(self) -> "Source":
        """The same runs, computing none (for a figure's comparisons beside its own network)."""
        return replace(self, compute=None)


@dataclass(frozen=True)
class Measurement:
    """An at-initialisation experiment, owned by its figure's module: its name in the store, its
    config under each preset (PROBE_PRESETS: "paper" is the paper's setup, "smoke" seconds on a
    CPU) and its measure function, (config, data, seed) -> a small JSON-able result (`data` is
    None where `needs_data` is False)."""
    name: str
    presets: dict
    measure: Callable
    needs_data: bool = True

    def config(self, preset: str = "paper", **overrides):
        """The config under `preset` with fields replaced by `overrides`. An override of None for a
        field that cannot be None (arch, init, ...) means "the preset's value": notebooks pass their
        `arch=None` parameter straight through. Layer lists given for ResNet-110 (Fig 4, Table 1)
        are scaled to the depth of another network, unless `layers` is overridden."""
        check_choice("preset", preset, PROBE_PRESETS)
        cls = type(self.presets[preset])
        names = {f.name for f in fields(cls)}
        for name in overrides:
            check_choice(f"{cls.__name__} field", name, sorted(names))
        nullable = {f.name for f in fields(cls) if type(None) in get_args(f.type)}
        overrides = {k: v for k, v in overrides.items() if v is not None or k in nullable}
        cfg = replace(self.presets[preset], **overrides)
        if "layers" in names and "layers" not in overrides and cfg.arch != "resnet110":
            depth = len(weight_layers(build_model(bn=False, **network_fields(cfg))))
            cfg = replace(cfg, layers=tuple(min(depth - 1, max(2, round(k * depth / 110))) for k in cfg.layers))
        return cfg


def training_preset(preset: str) -> str:
    """The default preset of a figure's training runs beside its at-initialisation `preset`: the
    CPU preview ("smoke" beside the smoke preset)."""
    return "smoke" if preset == "smoke" else "preview"


def probe_runs(measurement: Measurement, cfg, source: Source) -> list[dict]:
    """The stored runs of `measurement` at `cfg` that `source` shows, by seed, after computing
    `source.compute`'s run where it is missing."""
    if source.compute is not None:
        measured(measurement.name, cfg, source.compute, measurement.measure, source.context,
                 needs_data=measurement.needs_data)
    return config_runs(measurement.name, cfg, source.seeds, source.data_dir)


@dataclass(frozen=True)
class NetworkRuns:
    """The `Runs` of a figure measured on one network: its config and its runs, one per seed."""
    cfg: object
    runs: list[dict]


def network_runs(measurement: Measurement, source: Source, arch: str | None = None,
                 init: str = DEFAULT_INIT) -> NetworkRuns:
    """The runs of `measurement` on `arch` (None: the preset's) with convolutions initialised by `init`."""
    cfg = measurement.config(source.preset, arch=arch, init=init)
    return NetworkRuns(cfg, probe_runs(measurement, cfg, source))
