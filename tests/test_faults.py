"""A run's life under faults: a training process killed with SIGKILL mid-epoch, during its
checkpoint write or during its result write resumes to the same result as an uninterrupted run;
damaged store files and checkpoints give one error naming the file and the way out; temp files
of interrupted writes and lock files do not accumulate."""

import json
import os
import subprocess
import sys
import time

import pytest

from shared.config import train_config
from shared.fileio import remove_stale_temps, write_atomic
from shared.results import Store

# Run in a subprocess: one smoke training run into the store at argv[1]; it SIGKILLs itself just
# before the argv[3]-th atomic rename onto a file named argv[2] ("-": never).
TRAIN = """
import os, signal, sys
from pathlib import Path
from shared.config import train_config
from shared.results import Store
from shared.train import run_training

root, target, nth = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
real_replace, calls = os.replace, [0]

def replace(src, dst):
    if Path(dst).name == target:
        calls[0] += 1
        if calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)

os.replace = replace
cfg = train_config("smoke", epochs=3, max_epochs=3, steps_per_epoch=4)
run_training(cfg, 1, "fault", sys.argv[4], device="cpu", progress=False,
             store=Store(root / "results", root / "checkpoints"))
"""


def train_process(root, data, target="-", nth=0) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", TRAIN, str(root), target, str(nth), str(data)],
                          capture_output=True, text=True, env=env, timeout=600)


def stored_result(root) -> dict:
    cfg = train_config("smoke", epochs=3, max_epochs=3, steps_per_epoch=4)
    run = Store(root / "results").get("fault", cfg, 1)
    assert run is not None, "the run was not stored"
    return {**run["result"], "metrics": [{k: v for k, v in m.items() if k != "wall_s"} for m in run["result"]["metrics"]]}


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_image_folder) -> dict:
    """The uninterrupted run's stored result."""
    root = tmp_path_factory.mktemp("straight")
    process = train_process(root, tiny_image_folder)
    assert process.returncode == 0, process.stderr[-2000:]
    return stored_result(root)


@pytest.mark.parametrize("target, nth", [("seed1.pt", 1), ("seed1.pt", 2), ("result.json", 1)],
                         ids=["first-checkpoint-write", "second-checkpoint-write", "result-write"])
def test_a_killed_training_process_resumes_to_the_uninterrupted_result(tmp_path, tiny_image_folder, straight,
                                                                      target, nth):
    killed = train_process(tmp_path / "killed", tiny_image_folder, target, nth)
    assert killed.returncode == -9, "the process was not killed where asked"
    resumed = train_process(tmp_path / "killed", tiny_image_folder)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert stored_result(tmp_path / "killed") == straight
    leftovers = [p for p in (tmp_path / "killed").rglob("*") if p.is_file() and p.suffix in (".pt", ".lock")]
    assert not leftovers, f"a completed run leaves no checkpoint or lock: {leftovers}"


def test_a_damaged_result_names_its_file_and_the_way_out(tmp_path):
    cfg = train_config("smoke")
    store = Store(tmp_path, tmp_path / "ck")
    store.get_or_compute("unit", cfg, 0, lambda: {"x": 1}, "cpu")
    path = store.run_dir("unit", cfg, 0) / "result.json"
    path.write_text(path.read_text()[:5])
    with pytest.raises(ValueError, match=r"result.json .*delete its folder .*seed0 to compute it again"):
        store.get("unit", cfg, 0)


@pytest.mark.parametrize("content", [b"PK\x03\x04 truncated zip", os.urandom(2000)], ids=["truncated", "random"])
def test_a_damaged_checkpoint_names_its_file_and_the_way_out(tmp_path, tiny_image_folder, content):
    from shared.train import run_training

    cfg = train_config("smoke", epochs=1, max_epochs=1, steps_per_epoch=2)
    store = Store(tmp_path / "results", tmp_path / "ck")
    path = store.checkpoint("unit", cfg, 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"seed0.pt .*delete it to start these runs afresh") as error:
        run_training(cfg, 0, "unit", tiny_image_folder, device="cpu", progress=False, store=store)
    assert "weights_only" not in str(error.value)


def test_stale_temp_files_are_removed_by_the_next_write_and_fresh_ones_kept(tmp_path):
    target = tmp_path / "result.json"
    stale, fresh = tmp_path / ".result.json.abc123", tmp_path / ".result.json.def456"
    stale.write_text("{")
    fresh.write_text("{")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    write_atomic(target, b"{}")
    assert target.read_text() == "{}" and not stale.exists() and fresh.exists()
    assert remove_stale_temps(target, older_than_s=-1) == [fresh]


def test_a_stored_run_leaves_no_lock_file(tmp_path):
    cfg = train_config("smoke")
    store = Store(tmp_path, tmp_path / "ck")
    store.get_or_compute("unit", cfg, 0, lambda: {"x": 1}, "cpu")
    assert not list((tmp_path / "ck").rglob("*.lock"))
    assert json.loads((store.run_dir("unit", cfg, 0) / "result.json").read_text()) == {"x": 1}


def test_killed_three_times_the_run_resumes_to_the_uninterrupted_result(tmp_path, tiny_image_folder, straight):
    """SIGKILL during the first checkpoint write, then during the next process's second one, then
    during the third process's result write: the fourth stores the uninterrupted result, and no
    checkpoint, lock or temp file of an interrupted write is left behind."""
    root = tmp_path / "killed"
    for target, nth in (("seed1.pt", 1), ("seed1.pt", 2), ("result.json", 1)):
        killed = train_process(root, tiny_image_folder, target, nth)
        assert killed.returncode == -9, f"the process was not killed at {target} write {nth}"
    resumed = train_process(root, tiny_image_folder)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert stored_result(root) == straight
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert [n for n in names if n.endswith((".pt", ".lock")) or "/." in n] == [], names
