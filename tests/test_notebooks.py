"""Every figure notebook runs end to end under papermill with the smoke preset, on tiny generated
data, writing its runs and figures to a temporary store (the committed one is left alone)."""

import json
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
    parameters = {"preset": "smoke", "data_dir": str(tiny_image_folder)}
    if "together" in notebook.read_text():  # the training notebooks: their runs trained together
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
