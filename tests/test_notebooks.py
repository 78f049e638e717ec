"""Every figure notebook runs end to end under papermill with the smoke preset, on tiny generated
data, writing its runs and figures to a temporary store (the committed one is left alone)."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_with_the_smoke_preset(notebook, tmp_path, monkeypatch, tiny_image_folder):
    for var, folder in (("BN_RESULTS_DIR", "results"), ("BN_FIGURES_DIR", "figures"),
                        ("BN_CHECKPOINT_DIR", "checkpoints")):
        monkeypatch.setenv(var, str(tmp_path / folder))
    out = tmp_path / notebook.name
    declared = papermill.inspect_notebook(str(notebook))  # a notebook rejects what it does not declare
    parameters = {"preset": "smoke"}
    if "data_dir" in declared:  # every notebook that reads CIFAR-10 (not Fig 7's)
        parameters["data_dir"] = str(tiny_image_folder)
    if "together" in declared:  # the training notebooks: their runs trained together
        parameters["together"] = 3
    papermill.execute_notebook(str(notebook), str(out), cwd=str(notebook.parent), progress_bar=False,
                               parameters=parameters)
    executed = nbformat.read(out, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    assert list((tmp_path / "results").rglob("result.json")), "the notebook stored no run"
    assert list((tmp_path / "figures").glob("*_smoke.png")), "the notebook saved no figure"
    if "together" in parameters:
        engines = [json.loads(p.read_text())["engine"] for p in (tmp_path / "results").rglob("result.json")]
        assert max(e["runs_together"] for e in engines) == 3


def text_outputs(path: Path) -> str:
    cells = nbformat.read(path, as_version=4).cells
    return "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                   for c in cells if c.cell_type == "code" for o in c.outputs)


def test_seeds_added_by_a_batch_leave_the_executed_notebook_and_nbval_alone(tmp_path, monkeypatch,
                                                                           tiny_image_folder):
    """The README's two uses together: a notebook executed for the report shows the seeds it was
    executed with, a papermill batch adds seeds to the store, `pytest --nbval` on the executed
    notebook still passes, and executing it again (`make report`) shows the new seeds; executing
    an unchanged notebook leaves its file byte-identical, and a failed execution leaves it alone."""
    from shared import execution

    store = {var: tmp_path / folder for var, folder in (
        ("BN_RESULTS_DIR", "results"), ("BN_FIGURES_DIR", "figures"), ("BN_CHECKPOINT_DIR", "checkpoints"))}
    for var, folder in store.items():
        monkeypatch.setenv(var, str(folder))
    monkeypatch.setattr(execution, "RESULTS_ROOT", store["BN_RESULTS_DIR"])
    source = next(p for p in NOTEBOOKS if p.name.startswith("05_"))
    notebook = tmp_path / "nb" / source.name
    notebook.parent.mkdir()
    notebook.write_text(source.read_text())
    smoke = {"data_dir": str(tiny_image_folder)}

    assert execution.execute_notebooks([notebook], "smoke", smoke) == [notebook]
    assert execution.committed_parameters(notebook)["seeds"] == [0]
    assert "1 seed(s) in the store" in text_outputs(notebook)

    saved = {p.name: p.read_bytes() for p in store["BN_FIGURES_DIR"].iterdir()}
    monkeypatch.delenv("BN_FIGURES_DIR")  # as a user's shell: the batch saves no figure
    for seed in (1, 2):  # the README's batch
        papermill.execute_notebook(str(notebook), str(tmp_path / f"seed{seed}.ipynb"), progress_bar=False,
                                   parameters={"preset": "smoke", "seed": seed, **smoke})
    monkeypatch.setenv("BN_FIGURES_DIR", str(store["BN_FIGURES_DIR"]))
    assert {p.name: p.read_bytes() for p in store["BN_FIGURES_DIR"].iterdir()} == saved
    assert {int(p.parent.name[4:]) for p in store["BN_RESULTS_DIR"].rglob("result.json")} == {0, 1, 2}
    nbval = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "-q", "-p", "no:cacheprovider",
                            str(notebook)], cwd=tmp_path, capture_output=True, text=True)
    assert nbval.returncode == 0, nbval.stdout[-3000:]

    before = notebook.read_bytes()
    failing = {"seed": 3, "data_dir": str(tmp_path / "no-data-here")}
    with pytest.raises(papermill.PapermillExecutionError):
        execution.execute_notebooks([notebook], "smoke", failing)
    assert notebook.read_bytes() == before

    assert execution.execute_notebooks([notebook], "smoke", smoke) == [notebook]
    assert execution.committed_parameters(notebook)["seeds"] == [0, 1, 2]
    assert "3 seed(s) in the store" in text_outputs(notebook)
    again = notebook.read_bytes()
    assert execution.execute_notebooks([notebook], "smoke", smoke) == []
    assert notebook.read_bytes() == again
