"""The results store: every number in the report comes from a run recorded here.

A run is identified by (experiment name, hash of its full config, seed) and lives in
`data/results/<experiment>/<config hash>/seed<seed>/`:

    result.json       what the run measured (small: metrics, histograms, ...); committed to git
    provenance.json   config, seed, git commit, torch version, device, precision, date, duration

Both are written atomically, result last, so a directory with `result.json` is a completed run.
Checkpoints and lock files live under `data/checkpoints/` (ignored by git). Different seeds are
different directories, and a lock per run keeps two processes from computing the same one.

`Store` holds both places once and is the whole API: `get`, `put`, `get_or_compute` and `runs`;
`Store()` is the project's own (`shared.paths`: moved by $BN_RESULTS_DIR / $BN_CHECKPOINT_DIR). Loading data and
choosing the device are the callers' (`load_data`, `default_device`).
"""

import fcntl
import hashlib
import json
import math
import os
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import torch

from .data import Cifar10, data_source, load_cifar10, source_digest
from .config import identity
from .fileio import read_json, remove_stale_temps, write_atomic
from .precision import cpu_capability
from . import paths
from .paths import REPO_ROOT


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


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


# The code a stored number depends on, and the variable that lets a run be computed from uncommitted code
CODE_PATHS = ("shared",)
ALLOW_DIRTY = "BN_ALLOW_DIRTY"
DIFF_FILE = "code.diff"


def _git(*args: str, ok: tuple[int, ...] = (0,)) -> str:
    done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode not in ok:
        raise subprocess.CalledProcessError(done.returncode, ["git", *args], done.stdout, done.stderr)
    return done.stdout


def code_changes() -> list[str]:
    """The files under CODE_PATHS that differ from HEAD (changed, staged or untracked), as `git status
    --porcelain` names them; [] when the code is committed, or when there is no git to ask."""
    try:
        return _git("status", "--porcelain", "--", *CODE_PATHS).splitlines()
    except (OSError, subprocess.CalledProcessError):
        return []


DIRTY = "+dirty"  # the end of a stored commit when the code under CODE_PATHS differed from it


def git_commit() -> str:
    """The code version: HEAD's hash, with "+dirty" when the code under CODE_PATHS differs from it."""
    try:
        head = _git("rev-parse", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (DIRTY if code_changes() else "")


class UncommittedCodeError(RuntimeError):
    """A run was about to be computed from code that no commit holds."""


@dataclass(frozen=True)
class CodeVersion:
    """The code a run is computed from: a commit, and the diff from it when the code was not committed."""
    commit: str
    diff: str | None = None


def code_version() -> CodeVersion:
    """The code version to store with a run, checked before computing: refused (UncommittedCodeError)
    when the code under CODE_PATHS has uncommitted changes, unless $BN_ALLOW_DIRTY is 1 (an
    experiment), and then with the diff against HEAD, new files included, to store beside the run."""
    changes = code_changes()
    if not changes:
        return CodeVersion(git_commit())
    if os.environ.get(ALLOW_DIRTY) != "1":
        shown = ", ".join(line[3:] for line in changes[:5]) + (", ..." if len(changes) > 5 else "")
        raise UncommittedCodeError(
            f"the code under {', '.join(CODE_PATHS)}/ has uncommitted changes ({shown}), so a run computed now "
            f"could not be reproduced from its record. Commit them first, or set {ALLOW_DIRTY}=1 to compute "
            f"anyway (an experiment): the run's provenance then says '+dirty' and {DIFF_FILE} beside it "
            "holds the diff.")
    diff = _git("diff", "HEAD", "--", *CODE_PATHS)
    for path in _git("ls-files", "--others", "--exclude-standard", "--", *CODE_PATHS).splitlines():
        diff += _git("diff", "--no-index", "--", "/dev/null", path, ok=(0, 1))
    return CodeVersion(git_commit(), diff)


def provenance(config, seed: int, device, duration_s: float, data_source: str | None,
               code: CodeVersion | None = None) -> dict:
    """`code`: the code version the computation started from (default: now's commit)."""
    code = code or CodeVersion(git_commit())
    return {
        "config": asdict(config),
        "config_hash": config_hash(config),
        "seed": seed,
        "git_commit": code.commit,
        **({"code_diff": DIFF_FILE} if code.diff is not None else {}),
        "torch_version": torch.__version__,
        "device": device_name(device),
        "cpu": cpu_capability(),
        "precision": getattr(config, "precision", "fp32"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 3),
        "data": data_source,
    }


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

    def get(self, experiment: str, config, seed: int) -> dict | None:
        """The completed run as {"result": ..., "provenance": ...}, or None."""
        directory = self.run_dir(experiment, config, seed)
        if not (directory / "result.json").exists():
            return None
        return {"result": read_json(directory / "result.json"),
                "provenance": read_json(directory / "provenance.json")}

    def put(self, experiment: str, config, seed: int, result: dict, device, duration_s: float,
            data_source: str | None = None, code: CodeVersion | None = None, overwrite: bool = False) -> dict:
        """Store `result` with its provenance (result last: a folder with result.json is a
        completed run); return the run as `get` gives it back. `code`: the code version the
        computation started from (`code_version`; default: now's commit), its diff written beside
        the run when it has one. A stored run is replaced only with `overwrite`."""
        directory = self.run_dir(experiment, config, seed)
        if not overwrite and (directory / "result.json").exists():
            raise FileExistsError(f"the run {directory} is stored already; it is replaced only when "
                                  "recomputed on purpose (recompute=True, --recompute)")
        for name in (DIFF_FILE, "provenance.json", "result.json"):  # a killed writer's temp files: the
            remove_stale_temps(directory / name, older_than_s=0)      # run's one writer holds its lock
        if code is not None and code.diff is not None:
            write_atomic(directory / DIFF_FILE, code.diff.encode())
        write_json(directory / "provenance.json",
                   provenance(config, seed, device, duration_s, data_source, code))
        write_json(directory / "result.json", result)
        return self.get(experiment, config, seed)

    def check_writable(self, experiment: str) -> None:
        """Raise a ValueError naming the store's folder if a run of `experiment` could not be
        written there (read-only, or a file in its place): checked before computing, not after."""
        folder = Path(self.root) / experiment
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".writable-"):
                pass
        except OSError as error:
            raise ValueError(f"the results store cannot be written at {folder} ({error.strerror or error}); "
                             f"make it a writable folder or point $BN_RESULTS_DIR at one") from None

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

    def get_or_compute(self, experiment: str, config, seed: int, compute: Callable[[], dict], device,
                       data_source: str | None = None, recompute: bool = False,
                       wait: bool = True) -> dict | None:
        """The completed run, or `compute()` called under the run's lock and stored. A result may
        carry "earlier_segments_s", the seconds spent on it before a resume, added to its duration.
        With `wait=False`, a run whose lock another process holds, or that another process stored
        after the first look, is left to it: None (so None means exactly "not computed here")."""
        if not recompute and (stored := self.get(experiment, config, seed)):
            return stored
        self.check_writable(experiment)
        code = code_version()  # refused here, before computing, if the code is not committed
        with self.lock(experiment, config, seed, wait) as lock:
            if lock is None:
                return None
            if not recompute and (stored := self.get(experiment, config, seed)):
                return stored if wait else None  # another process stored it meanwhile
            start = time.perf_counter()
            result = compute()
            duration = time.perf_counter() - start + result.pop("earlier_segments_s", 0.0)
            stored = self.put(experiment, config, seed, result, device, duration, data_source, code,
                              overwrite=recompute)
            lock.unlink(missing_ok=True)
            return stored

    def runs(self, experiment: str, config=None, seeds: Iterable[int] | None = None,
             **config_filters) -> list[dict]:
        """Completed runs of `experiment`, by (config hash, seed): those of exactly `config` if
        given, else those whose config has the `config_filters` values; only `seeds` if given (a
        notebook executed for the report shows the seeds it was executed with)."""
        wanted = None if seeds is None else set(check_seeds(seeds))
        pattern = f"{config_hash(config) if config is not None else '*'}/seed*/result.json"
        paths = sorted((Path(self.root) / experiment).glob(pattern),
                       key=lambda p: (p.parent.parent.name, int(p.parent.name[4:])))
        runs = []
        for path in paths:
            if wanted is not None and int(path.parent.name[4:]) not in wanted:
                continue
            prov = read_json(path.parent / "provenance.json")
            if all(prov["config"].get(k) == v for k, v in config_filters.items()):
                runs.append({"result": read_json(path), "provenance": prov})
        return runs


def config_runs(experiment: str, config, seeds: Iterable[int] | None = None) -> list[dict]:
    """The project store's completed runs of exactly `config` (only `seeds`, if given), by seed:
    what the notebooks show."""
    return Store().runs(experiment, config, seeds)


def get_or_measure(experiment: str, config, seed: int, measure: Callable[[Cifar10], dict], data_dir=None,
                   device=None, recompute: bool = False, store: Store | None = None,
                   wait: bool = True) -> dict | None:
    """The run from `store`, or `measure(data)` computed and stored: `data` is CIFAR-10 from
    `data_dir` as the config asks (its train_subset / test_subset), on `device` (default: the GPU
    if there is one), loaded only when the run is missing. With `wait=False`, None if another
    process is computing it."""
    store = store or Store()
    if not recompute and (stored := store.get(experiment, config, seed)):
        check_same_data(stored, data_dir, store.run_dir(experiment, config, seed))
        return stored
    device = torch.device(device or default_device())
    data = load_data(config, data_dir, device)
    return store.get_or_compute(experiment, config, seed, lambda: measure(data), device, data.source, recompute,
                                wait)


class OtherDataError(ValueError):
    """A stored run was computed on other images than the data dir holds now."""


def check_same_data(stored: dict, data_dir, where: Path) -> None:
    """Refuse to serve a stored run computed on other data than the data dir holds (compared by the
    hash of pixels and labels in its provenance's "data"). Where the data dir holds no copy, or the
    run recorded no hash, there is nothing to compare and the run is served."""
    was = stored["provenance"].get("data")
    now = data_source(data_dir)
    if source_digest(was) and source_digest(now) and source_digest(was) != source_digest(now):
        raise OtherDataError(
            f"the stored run {where} was computed on other data ({was}) than the data dir holds now "
            f"({now}); its numbers do not describe this data. Point $BN_RESULTS_DIR at a store of "
            "your own to compute on this data, point data_dir / $CIFAR10_DIR at the data the store "
            "was computed on, or recompute the run (recompute=True, --recompute) to replace it.")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_devices() -> list[str]:
    return ["cpu", *(["cuda"] if torch.cuda.is_available() else []),
            *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


def check_device(name: str | torch.device) -> torch.device:
    """`name` as a torch.device if this machine has it, else a ValueError naming the valid ones."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or str(device) not in available_devices():
        raise ValueError(f"unknown device {str(name)!r}; valid here: {', '.join(available_devices())}")
    return device


def load_data(config, data_dir=None, device=None) -> Cifar10:
    """CIFAR-10 from `data_dir` as `config` asks (its train_subset / test_subset, if it has them),
    on `device`."""
    return load_cifar10(data_dir).subset(getattr(config, "train_subset", None),
                                         getattr(config, "test_subset", None)).to(device)
