"""A papermill parameter that a notebook does not declare is an error naming it (shared.params)."""
from pathlib import Path

import papermill
import pytest

from shared.params import check_parameters, parameter_names, unknown_parameters

DECLARED = 'from typing import Optional\n\npreset: str = "paper"  # smoke | paper\nseed: int = 0\n' \
           'seeds: Optional[list[int]] = None\n'
NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_parameter_names_are_read_the_way_papermill_reads_them():
    assert parameter_names(DECLARED) == ["preset", "seed", "seeds"]
    assert parameter_names("# Parameters\npreset = \"smoke\"\nseeed = 3\n") == ["preset", "seeed"]


@pytest.mark.parametrize("history, unknown", [
    (["", DECLARED], []),                                                  # run by hand: no injection
    (["", DECLARED, "# Parameters\npreset = \"smoke\"\nseed = 2\n"], []),
    (["", DECLARED, "# Parameters\nseeed = 3\n"], ["seeed"]),
    (["", DECLARED, "# Parameters\nseeds = [0]\nlr = 0.1\npreset = \"smoke\"\n"], ["lr"]),
    # a later injection is the one in force; an earlier injected name declares nothing
    (["", DECLARED, "# Parameters\nfoo = 1\n", "# Parameters\nseed = 1\n"], []),
    (["", DECLARED, "# Parameters\nfoo = 1\n", "# Parameters\nfoo = 2\n"], ["foo"]),
])
def test_unknown_parameters_are_the_injected_names_no_earlier_cell_declares(history, unknown):
    assert unknown_parameters(history)[0] == unknown


def test_the_error_names_the_unknown_and_the_valid_parameters():
    with pytest.raises(ValueError, match=r"'seeed'.*preset, seed, seeds"):
        check_parameters(["", DECLARED, "# Parameters\nseeed = 3\n"])
    check_parameters(["", DECLARED])  # nothing to reject


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_checks_its_parameters(notebook):
    assert "check_parameters()" in notebook.read_text()


def test_a_misspelt_papermill_parameter_fails_the_notebook_before_it_computes(tmp_path, monkeypatch):
    monkeypatch.setenv("BN_RESULTS_DIR", str(tmp_path / "results"))
    notebook = next(p for p in NOTEBOOKS if p.name.startswith("05_"))
    with pytest.raises(papermill.PapermillExecutionError, match="unknown notebook parameter.*'seeed'"):
        papermill.execute_notebook(str(notebook), str(tmp_path / "out.ipynb"), progress_bar=False,
                                   cwd=str(notebook.parent), parameters={"preset": "smoke", "seeed": 3})
    assert not (tmp_path / "results").exists()
