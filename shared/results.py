"""The results store: every number in the report comes from a run recorded here.

A run is identified by (experiment name, hash of its full config, seed) and lives in
`data/results/<experiment>/<config hash>/seed<seed>/`:

    result.json       what the run measured (small: metrics, histograms, ...); committed to git
    provenance.json   config, seed, git commit, torch version, device, precision, date, duration,
                      data; a training run's code per segment (a resumed run has several)
    code.diff         (code-<n>.diff) the uncommitted changes it (its n-th segment) was computed from
    state.pt          a truncated training run's final state (`Store.state`), so that a longer run
                      continues it (a checkpoint: ignored by git)

Both are written atomically, result last, so a directory with `result.json` is a completed run.
Checkpoints and lock files live under `data/checkpoints/` (ignored by git). Different seeds are
different directories, and a lock per run keeps two processes from computing the same one.

`Store` holds both places once and is the whole API: keyed `get`, `put`, `lock` and `runs` of
`StoredRun` records; `Store()` is the project's own (`shared.paths`: moved by $BN_RESULTS_DIR /
$BN_CHECKPOINT_DIR). It computes nothing: getting a run or computing and storing it, with its
provenance, is `shared.compute`'s.
"""

import fcntl
import hashlib
import json
import math
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from . import paths
from .config import identity
from .fileio import read_json, read_provenance, remove_stale_temps, write_atomic


STATE_FILE = "state.pt"


def config_hash(config) -> str:
    """A short, stable hash of a config's identity (`shared.config.identity`: every field, except
    fields added later while they hold their neutral value)."""
    text = json.dumps(identity(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def check_seed(seed) -> int:
    """A seed is a non-negative int (not a bool, not a string): raise a ValueError naming it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r} ({type(seed).__name__})")
    return seed


def check_seeds(seeds) -> list[int]:
    """Seeds are a list (or tuple) of non-negative ints: raise a ValueError naming a bad value."""
    if not isinstance(seeds, (list, tuple, range)):
        raise ValueError(f"seeds must be a list of non-negative ints (or None: every stored seed), got "
                         f"{seeds!r} ({type(seeds).__name__}); for one seed write [{seeds!r}]")
    return [check_seed(s) for s in seeds]


def json_safe(obj):
    """`obj` with every non-finite float (NaN, inf: a diverged run's numbers) replaced by None, and
    every float rounded to 7 significant digits (what float32 measurements carry; it keeps the
    stored files small)."""
    if isinstance(obj, float):
        return float(f"{obj:.7g}") if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    """Write strict JSON (non-finite floats become null) atomically."""
    text = json.dumps(json_safe(obj), indent=1, sort_keys=True, allow_nan=False)
    write_atomic(path, (text + "\n").encode())


@dataclass(frozen=True)
class StoredRun:
    """One stored run: what it measured (`result`), how it was computed (`provenance`: its config,
    seed, code, device, data, date, duration), and, to write, the files kept beside it (`files`:
    the diffs of uncommitted code, by name); `folder`: where it was read from."""
    result: dict
    provenance: dict
    files: dict = field(default_factory=dict, compare=False, repr=False)
    folder: Path | None = field(default=None, compare=False, repr=False)

    @property
    def seed(self) -> int:
        return self.provenance["seed"]

    @property
    def config(self) -> dict:
        return self.provenance["config"]


def read_run(directory: Path) -> StoredRun:
    """The run stored in `directory`, as `Store.get` gives it; its provenance checked complete."""
    return StoredRun(read_json(directory / "result.json"), read_provenance(directory / "provenance.json"),
                     folder=directory)


@dataclass(frozen=True)
class Store:
    """The results store under `root`, with its checkpoints and locks under `checkpoints`
    (default: the project's, `shared.paths.RESULTS_ROOT` and `CHECKPOINT_ROOT`)."""
    root: Path = field(default_factory=lambda: paths.RESULTS_ROOT)
    checkpoints: Path = field(default_factory=lambda: paths.CHECKPOINT_ROOT)

    def run_dir(self, experiment: str, config, seed: int) -> Path:
        return Path(self.root) / experiment / config_hash(config) / f"seed{check_seed(seed)}"

    def checkpoint(self, experiment: str, config, seed: int) -> Path:
        """Where an interrupted computation of the run keeps its progress."""
        return Path(self.checkpoints) / experiment / config_hash(config) / f"seed{check_seed(seed)}.pt"

    def state(self, experiment: str, config, seed: int) -> Path:
        """Where a stored run keeps the training state it ended in, so that a longer run of it can
        continue it (`shared.train.runner.continue_shorter`): in the run's folder, beside its result
        (a checkpoint: ignored by git), so that a copy of the store carries it."""
        return self.run_dir(experiment, config, seed) / STATE_FILE

    def get(self, experiment: str, config, seed: int) -> StoredRun | None:
        """The completed run, or None."""
        directory = self.run_dir(experiment, config, seed)
        if not (directory / "result.json").exists():
            return None
        return read_run(directory)

    def put(self, experiment: str, config, seed: int, run: StoredRun, overwrite: bool = False) -> StoredRun:
        """Store `run` (its files, provenance, then result: a folder with result.json is a completed
        run); return it as `get` gives it back. A stored run is replaced only with `overwrite`."""
        directory = self.run_dir(experiment, config, seed)
        if not overwrite and (directory / "result.json").exists():
            raise FileExistsError(f"the run {directory} is stored already; it is replaced only when "
                                  "recomputed on purpose (recompute=True, --recompute)")
        for old in directory.glob("code*.diff"):  # a replaced run's diffs
            if old.name not in run.files:
                old.unlink()
        for name in (*run.files, "provenance.json", "result.json"):  # a killed writer's temp files:
            remove_stale_temps(directory / name, older_than_s=0)   # the run's one writer holds its lock
        for name, text in run.files.items():
            write_atomic(directory / name, text.encode())
        write_json(directory / "provenance.json", run.provenance)
        write_json(directory / "result.json", run.result)
        return self.get(experiment, config, seed)

    def check_writable(self, experiment: str, config=None, seed: int | None = None) -> None:
        """Raise a ValueError naming the folder if a run of `experiment` (of `config` and `seed`, if
        given) could not be written: the store's folder or the checkpoints' read-only, or a file
        where the run's folder should be. Checked before computing, not after."""
        writable_folder(Path(self.root) / experiment, "the results store", "$BN_RESULTS_DIR")
        if config is None:
            writable_folder(Path(self.checkpoints) / experiment, "the checkpoints", "$BN_CHECKPOINT_DIR")
            return
        writable_folder(self.checkpoint(experiment, config, seed).parent, "the checkpoints", "$BN_CHECKPOINT_DIR")
        directory = self.run_dir(experiment, config, seed)
        for folder in (directory.parent, directory):
            if folder.exists() and not folder.is_dir():
                raise ValueError(f"{folder} is a file where the run's folder should be; move or delete it")

    @contextmanager
    def lock(self, experiment: str, config, seed: int, wait: bool = True, suffix: str = ".lock"):
        """An exclusive lock on one run, so that concurrent processes do not compute it twice;
        yields the lock file's path, which the holder deletes once the run is stored (a process
        still waiting on it then finds the run stored, later ones load it without locking).
        With `wait=False` it does not wait for another holder: it yields None instead. Another
        `suffix` is another lock on the same run (`shared.rerun`'s claim on re-running it)."""
        path = self.checkpoint(experiment, config, seed).with_suffix(suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            try:
                yield path
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def runs(self, experiment: str, config=None, seeds: Iterable[int] | None = None,
             **config_filters) -> list[StoredRun]:
        """Completed runs of `experiment`, by (config hash, seed): those of exactly
        `config` if given, else those whose config has the `config_filters` values; only `seeds` if
        given (a notebook executed for the report shows the seeds it was executed with)."""
        wanted = None if seeds is None else set(check_seeds(seeds))
        pattern = f"{config_hash(config) if config is not None else '*'}/seed*/result.json"
        paths = sorted((Path(self.root) / experiment).glob(pattern),
                       key=lambda p: (p.parent.parent.name, int(p.parent.name[4:])))
        found = []
        for path in paths:
            if wanted is not None and int(path.parent.name[4:]) not in wanted:
                continue
            run = read_run(path.parent)
            if all(run.config.get(k) == v for k, v in config_filters.items()):
                found.append(run)
        return found


def writable_folder(folder: Path, what: str, variable: str) -> None:
    """Make `folder` if missing; raise a ValueError naming it, `what` it holds and the `variable`
    that moves it, where a file cannot be written in it (read-only, or a file in its place)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".writable-"):
            pass
    except OSError as error:
        raise ValueError(f"{what} cannot be written at {folder} ({error.strerror or error}); "
                         f"make it a writable folder or point {variable} at one") from None
