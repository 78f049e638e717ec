"""The figure registry (shared.figures): every notebook reproduces a registered figure, every
figure has its module, and a name the registry does not know is refused with the valid ones."""

from pathlib import Path

import pytest

from shared import figures

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_every_notebook_reproduces_one_registered_figure_in_the_registrys_order():
    found = [figures.of_name(p.stem) for p in NOTEBOOKS]
    assert None not in found, [p.name for p, f in zip(NOTEBOOKS, found) if f is None]
    assert [f.id for f in found] == list(figures.IDS)  # one notebook per figure, in the report's order


def test_every_figure_has_its_module_and_the_paper_comes_first():
    for f in figures.FIGURES:
        assert figures.module(f.id).__name__ == f"shared.figures.{f.module}"
    in_paper = [f.in_paper for f in figures.FIGURES]
    assert in_paper == sorted(in_paper, reverse=True) and sum(in_paper) == 8  # Figs 1-7 and Table 1


def test_names_are_read_whole_and_unknown_ids_are_named():
    assert figures.of_name("fig1_accuracy_cpu").id == "fig1"
    assert figures.of_name("claims_lr_sweep_preview").id == "lr_sweep"
    assert figures.of_name("fig10_accuracy") is None and figures.of_name("prefig1") is None
    with pytest.raises(KeyError, match="unknown figure 'fig8'; valid: fig1, fig2"):
        figures.figure("fig8")
