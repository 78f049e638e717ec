"""Executing the notebooks for the report: each with the parameters it was committed with (or a
preset), in a scratch folder, written back only when its content changed, with the seeds stored
now; papermill's volatile metadata (times, paths) dropped, so an unchanged notebook stays
byte-identical. `make report` calls this through `python -m shared.report --execute`."""

import os
from pathlib import Path

import nbformat

from .paths import FIGURES_DIR, RESULTS_ROOT


def committed_parameters(path: Path) -> dict:
    """The parameters papermill last executed the notebook with (empty if it never did)."""
    return dict(nbformat.read(path, as_version=4).metadata.get("papermill", {}).get("parameters", {}))


# papermill's and Jupyter's per-execution metadata: times and the paths it ran from
VOLATILE_METADATA = ("start_time", "end_time", "duration")


def without_volatile_metadata(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """`nb` with execution times removed and papermill's paths set to the notebook's own name, so
    that executing an unchanged notebook again gives the same file."""
    run = nb.metadata.get("papermill", {})
    for key in VOLATILE_METADATA:
        run.pop(key, None)
    if run:
        run["input_path"] = run["output_path"] = name
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"  # papermill draws a new random id every time
        cell.metadata.pop("execution", None)
        for key in VOLATILE_METADATA:
            cell.metadata.get("papermill", {}).pop(key, None)
    return nb


def stored_seeds(results_dir: Path | None = None) -> list[int]:
    """Every seed with a completed run of any experiment in the store, ascending."""
    paths = Path(results_dir or RESULTS_ROOT).glob("*/*/seed*/result.json")
    return sorted({int(p.parent.name[4:]) for p in paths})


def execution_parameters(path: Path, preset: str | None, extra: dict | None = None) -> dict:
    """What `execute_notebooks` runs a notebook with: its committed parameters (or only `preset`),
    `extra`, and `seeds`, the seeds in the store now (and the notebook's own seed), which the
    notebook then shows, and `pytest --nbval` re-runs, whatever seeds are added later."""
    import papermill

    parameters = {"preset": preset} if preset else committed_parameters(path)
    parameters.update(extra or {})
    if "seeds" in papermill.inspect_notebook(str(path)):
        parameters["seeds"] = sorted(set(stored_seeds()) | {parameters.get("seed", 0)})
    return parameters


def execute_notebooks(paths: list[Path], preset: str | None = None, extra: dict | None = None) -> list[Path]:
    """Execute every notebook with papermill, from its own folder, and write it back only if its
    content changed; returns the notebooks written.

    Each runs in a scratch folder first, so a failed execution raises and leaves the committed
    notebook as it was; volatile metadata (times, absolute paths) is dropped, so an unchanged
    notebook stays byte-identical. Parameters: see `execution_parameters`. The notebooks save
    their figures and claims into figures/ (or $BN_FIGURES_DIR where it is set).
    """
    written = []
    saved_to = os.environ.get("BN_FIGURES_DIR")
    os.environ["BN_FIGURES_DIR"] = saved_to or str(FIGURES_DIR)  # the kernels save the report's figures
    try:
        for path in paths:
            if execute_notebook(path, execution_parameters(path, preset, extra)):
                written.append(path)
    finally:
        if saved_to is None:
            del os.environ["BN_FIGURES_DIR"]
    return written


def execute_notebook(path: Path, parameters: dict) -> bool:
    """Execute one notebook in a scratch folder; write it back if its content changed (True)."""
    import tempfile

    import papermill

    print(f"executing {path.name} ({parameters})", flush=True)
    with tempfile.TemporaryDirectory(prefix="report-") as scratch:
        out = Path(scratch) / path.name
        papermill.execute_notebook(str(path), str(out), parameters=parameters,
                                   cwd=str(path.parent), kernel_name="python3",
                                   language="python", progress_bar=False)
        executed = without_volatile_metadata(nbformat.read(out, as_version=4), path.name)
    text = nbformat.writes(executed)
    text += "" if text.endswith("\n") else "\n"
    if text == path.read_text():
        return False
    path.write_text(text)
    return True
