"""What a stored run records of how it was computed: the code (its commit, the diff where it was
not committed, a hash of the files where git cannot tell), the device and CPU, torch, the data, the
date and the duration (`provenance`); and the rule that a run is computed only from committed code
(`code_version`). `shared.compute` records it with every run it stores.
"""

import hashlib
import os
import subprocess
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import torch

from .paths import REPO_ROOT
from .precision import cpu_capability
from .results import config_hash


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
