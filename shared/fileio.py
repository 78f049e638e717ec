"""Atomic file writes: a reader sees the old file or the new one, never a part of either."""

import glob
import io
import json
import os
import tempfile
import time
from pathlib import Path

# a temp file of an atomic write older than this was left by a killed writer: the next write of
# the same file removes it (a write takes seconds; checkpoints are a few MB)
STALE_TEMP_S = 600


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, flush it to disk, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, 0o644)  # mkstemp makes the file private; results are meant to be read
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def remove_stale_temps(path: Path, older_than_s: float = STALE_TEMP_S) -> list[Path]:
    """Delete the temp files that interrupted atomic writes of `path` left beside it."""
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*"):
        try:
            if time.time() - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:  # another writer cleaned it first
            pass
    return removed


def save_torch_atomic(path: Path, obj) -> None:
    """`torch.save(obj)` to `path`, written atomically (checkpoints, the decoded-data cache)."""
    import torch  # here, so that modules writing only text (the report) do not import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def read_json(path: Path):
    """A stored file's content; a damaged file raises a ValueError naming it and the way out."""
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read the stored file {path} ({error}): the run is damaged; delete "
                         f"its folder {Path(path).parent} to compute it again") from None


# The keys of every stored run's provenance that runs are read, compared and reported by
PROVENANCE_KEYS = ("config", "config_hash", "seed", "git_commit", "date", "device", "precision", "duration_s", "data")


def read_provenance(path: Path) -> dict:
    """A stored run's provenance.json; one that is missing, damaged or lacks a key of PROVENANCE_KEYS
    raises a ValueError naming it and the way out."""
    path = Path(path)
    provenance = read_json(path) if path.exists() else None
    missing = [key for key in PROVENANCE_KEYS if not isinstance(provenance, dict) or key not in provenance]
    if missing:
        what = "is missing" if provenance is None else f"lacks {', '.join(missing)}"
        raise ValueError(f"the stored file {path} {what}: the run's record is incomplete; delete its folder "
                         f"{path.parent} to compute it again")
    return provenance
