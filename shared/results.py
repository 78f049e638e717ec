"""The results store: every number in the report comes from a run recorded here.

A run is identified by (experiment name, hash of its full config, seed) and lives in
`data/results/<experiment>/<config hash>/seed<seed>/`:

    result.json       what the run measured (small: metrics, histograms, ...); committed to git
    provenance.json   config, seed, git commit, torch version, device, precision, date, duration,
                      data; a training run's code per segment (a resumed run has several)
    code.diff         (code-<n>.diff) the uncommitted changes it (its n-th segment) was computed from

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
from .fileio import read_json, read_provenance, remove_stale_temps, write_atomic
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
UNKNOWN = "unknown"  # the stored commit where git cannot read the checkout (no .git, "dubious ownership")


def git_head() -> str | None:
    """HEAD's hash, or None where git cannot read the checkout (no .git folder; git refusing a
    checkout that another user owns, "dubious ownership"; no git at all)."""
    try:
        return _git("rev-parse", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_commit() -> str:
    """The code version: HEAD's hash, with "+dirty" when the code under CODE_PATHS differs from it;
    "unknown" where git cannot read the checkout (`git_head`)."""
    head = git_head()
    if head is None:
        return UNKNOWN
    return head + (DIRTY if code_changes() else "")


def code_hash() -> str:
    """The sha256 of the code under CODE_PATHS: every .py file's path and content, by sorted path.
    What a run records where git cannot tell its commit, so that its code can still be recognised."""
    digest = hashlib.sha256()
    files = sorted(path for folder in CODE_PATHS for path in (REPO_ROOT / folder).rglob("*.py"))
    for path in files:
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class UncommittedCodeError(RuntimeError):
    """A run was about to be computed from code that no commit holds."""


@dataclass(frozen=True)
class CodeVersion:
    """The code a run is computed from: a commit, and the diff from it when the code was not
    committed; where git could not tell the commit ("unknown"), a hash of the files (`code_hash`)."""
    commit: str
    diff: str | None = None
    code_hash: str | None = None


def working_diff() -> str:
    """The diff of the code under CODE_PATHS against HEAD, new files included."""
    diff = _git("diff", "HEAD", "--", *CODE_PATHS)
    for path in _git("ls-files", "--others", "--exclude-standard", "--", *CODE_PATHS).splitlines():
        diff += _git("diff", "--no-index", "--", "/dev/null", path, ok=(0, 1))
    return diff


def code_of(commit: str) -> CodeVersion:
    """The code as it is now, named by `commit` (what `git_commit` says): with its diff against HEAD
    when "+dirty", with the hash of its files when "unknown". Not checked (`code_version` is)."""
    if commit == UNKNOWN:
        return CodeVersion(UNKNOWN, code_hash=code_hash())
    return CodeVersion(commit, working_diff() if commit.endswith(DIRTY) else None)


def code_version() -> CodeVersion:
    """The code version to store with a run, checked before computing: refused (UncommittedCodeError)
    when the code under CODE_PATHS has uncommitted changes, unless $BN_ALLOW_DIRTY is 1 (an
    experiment), and then with the diff against HEAD, new files included, to store beside the run.
    Where git cannot read the checkout, the commit is "unknown" and a hash of the files is stored."""
    changes = code_changes()
    if changes and os.environ.get(ALLOW_DIRTY) != "1":
        shown = ", ".join(line[3:] for line in changes[:5]) + (", ..." if len(changes) > 5 else "")
        raise UncommittedCodeError(
            f"the code under {', '.join(CODE_PATHS)}/ has uncommitted changes ({shown}), so a run computed now "
            f"could not be reproduced from its record. Commit them first, or set {ALLOW_DIRTY}=1 to compute "
            f"anyway (an experiment): the run's provenance then says '+dirty' and {DIFF_FILE} beside it "
            "holds the diff.")
    return code_of(git_commit())


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
        **({"code_hash": code.code_hash} if code.code_hash is not None else {}),
        "torch_version": torch.__version__,
        "device": device_name(device),
        "cpu": cpu_capability(),
        "precision": getattr(config, "precision", "fp32"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 3),
        "data": data_source,
    }


# A result's key for the code of each segment that computed it (`shared.train.loop.RunState.segments`:
# {"commit", "diff" where "+dirty", "code_hash" where "unknown"}), which `Store.put` moves to the provenance
SEGMENTS = "code_segments"


def segment_records(segments: list[dict], code: CodeVersion | None) -> tuple[list[dict], dict[str, str]]:
    """Each segment's record for the provenance, {"commit"; "diff": the file beside the run holding
    its diff, and "diff_sha256", where it was "+dirty"; "code_hash" where "unknown"}, and the diffs to
    write, by file name: DIFF_FILE for the diff of `code` (the code the last segment started from),
    code-<n>.diff for the n-th segment's (from 0) where it differs."""
    records, files = [], {}
    for n, segment in enumerate(segments):
        record = {"commit": segment["commit"]}
        if (diff := segment.get("diff")) is not None:
            name = DIFF_FILE if code is not None and diff == code.diff else f"code-{n}.diff"
            files[name] = diff
            record.update(diff=name, diff_sha256=hashlib.sha256(diff.encode()).hexdigest())
        if segment.get("code_hash") is not None:
            record["code_hash"] = segment["code_hash"]
        records.append(record)
    return records, files


def read_run(directory: Path) -> dict:
    """The run stored in `directory`, as `Store.get` gives it; its provenance checked complete."""
    return {"result": read_json(directory / "result.json"),
            "provenance": read_provenance(directory / "provenance.json")}


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
        return read_run(directory)

    def put(self, experiment: str, config, seed: int, result: dict, device, duration_s: float,
            data_source: str | None = None, code: CodeVersion | None = None, overwrite: bool = False) -> dict:
        """Store `result` with its provenance (result last: a folder with result.json is a
        completed run); return the run as `get` gives it back. `code`: the code version the
        computation started from (`code_version`; default: now's commit), its diff written beside
        the run when it has one. The code of each segment that computed it, where `result` lists it
        (SEGMENTS), goes to the provenance, their diffs beside the run (`segment_records`). A stored
        run is replaced only with `overwrite`."""
        directory = self.run_dir(experiment, config, seed)
        if not overwrite and (directory / "result.json").exists():
            raise FileExistsError(f"the run {directory} is stored already; it is replaced only when "
                                  "recomputed on purpose (recompute=True, --recompute)")
        result = dict(result)
        segments, files = segment_records(result.pop(SEGMENTS, None) or [], code)
        if code is not None and code.diff is not None:
            files[DIFF_FILE] = code.diff
        for old in directory.glob("code*.diff"):  # a replaced run's diffs
            if old.name not in files:
                old.unlink()
        for name in (*files, "provenance.json", "result.json"):  # a killed writer's temp files: the
            remove_stale_temps(directory / name, older_than_s=0)  # run's one writer holds its lock
        for name, diff in files.items():
            write_atomic(directory / name, diff.encode())
        record = provenance(config, seed, device, duration_s, data_source, code)
        write_json(directory / "provenance.json", {**record, **({SEGMENTS: segments} if segments else {})})
        write_json(directory / "result.json", result)
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

    def get_or_compute(self, experiment: str, config, seed: int, compute: Callable[[], dict], device,
                       data_source: str | None = None, recompute: bool = False,
                       wait: bool = True) -> dict | None:
        """The completed run, or `compute()` called under the run's lock and stored. A result may
        carry "earlier_segments_s", the seconds spent on it before a resume, added to its duration.
        With `wait=False`, a run whose lock another process holds, or that another process stored
        after the first look, is left to it: None (so None means exactly "not computed here")."""
        if not recompute and (stored := self.get(experiment, config, seed)):
            return stored
        self.check_writable(experiment, config, seed)
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

    def runs(self, experiment: str, config=None, seeds: Iterable[int] | None = None, data_dir=None,
             **config_filters) -> list[dict]:
        """Completed runs of `experiment`, by (config hash, seed): those of exactly `config` if
        given, else those whose config has the `config_filters` values; only `seeds` if given (a
        notebook executed for the report shows the seeds it was executed with). Refused
        (OtherDataError) where they were computed on different images, from each other or from
        the copy in `data_dir` (default: $CIFAR10_DIR, else data/): `check_one_data`."""
        wanted = None if seeds is None else set(check_seeds(seeds))
        pattern = f"{config_hash(config) if config is not None else '*'}/seed*/result.json"
        paths = sorted((Path(self.root) / experiment).glob(pattern),
                       key=lambda p: (p.parent.parent.name, int(p.parent.name[4:])))
        found = {}
        for path in paths:
            if wanted is not None and int(path.parent.name[4:]) not in wanted:
                continue
            run = read_run(path.parent)
            if all(run["provenance"]["config"].get(k) == v for k, v in config_filters.items()):
                found[path.parent] = run
        check_one_data(found, data_dir)
        return list(found.values())


def config_runs(experiment: str, config, seeds: Iterable[int] | None = None, data_dir=None) -> list[dict]:
    """The project store's completed runs of exactly `config` (only `seeds`, if given), by seed:
    what the notebooks show; refused where they were computed on different images (`Store.runs`)."""
    return Store().runs(experiment, config, seeds, data_dir)


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


def check_one_data(runs: dict[Path, dict], data_dir=None, shown: int = 4) -> None:
    """Refuse `runs` ({folder: run}) computed on different images (the hash in their provenance's
    "data"), from each other or from the copy the data dir holds (`check_same_data`): a figure would
    average numbers of different data. Runs that recorded no hash are served."""
    by_data: dict[str, list[tuple[Path, str]]] = {}
    for folder, run in runs.items():
        if digest := source_digest(run["provenance"]["data"]):
            by_data.setdefault(digest, []).append((folder, run["provenance"]["data"]))
    if len(by_data) > 1:
        groups = "; ".join(", ".join(str(folder) for folder, _ in found[:shown])
                           + (f" and {len(found) - shown} more" if len(found) > shown else "") + f" on {found[0][1]}"
                           for found in by_data.values())
        raise OtherDataError(
            f"the stored runs read together were computed on different data: {groups}. Their numbers "
            "would be averaged as one; keep the runs of one copy of the data (delete the others' "
            "folders to compute them again on the data dir's copy).")
    if by_data:
        (folder, _), *_ = next(iter(by_data.values()))
        check_same_data(runs[folder], data_dir, folder)


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
            "your own to compute on this data, point --data-dir (data_dir, $CIFAR10_DIR) at the data "
            f"the store was computed on, or delete {where} to compute the run again on this data.")


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
