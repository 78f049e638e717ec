"""The figure registry (shared.figures): every notebook reproduces a registered figure, every
figure has its module, and a name the registry does not know is refused with the valid ones."""

import dataclasses
import inspect
import json
from pathlib import Path

import pytest

from shared import figures
from shared.figures.protocol import Source
from shared.paths import FIGURES_DIR

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


# The protocol (shared.figures.protocol): load -> tables -> claims, the same names in every module.
PROTOCOL_FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "table1", "lr_sweep", "depth_ladder",
                    "normfree")  # all but the choice of network, which judges no claim of the paper
SAVED_CLAIMS = sorted(FIGURES_DIR.glob("claims_*.json"))


def test_every_figure_with_claims_follows_the_protocol():
    assert tuple(f.id for f in figures.FIGURES if figures.follows_protocol(f.id)) == PROTOCOL_FIGURES
    assert {figures.of_name(p.stem).id for p in SAVED_CLAIMS} <= set(PROTOCOL_FIGURES)
    for id in PROTOCOL_FIGURES:
        fig = figures.module(id)
        assert list(inspect.signature(fig.load).parameters)[0] == "source"
        assert list(inspect.signature(fig.tables).parameters) == ["found"]
        assert list(inspect.signature(fig.claims).parameters) == ["t", "preset"]
        assert dataclasses.is_dataclass(fig.Runs) and dataclasses.is_dataclass(fig.Tables)


@pytest.mark.parametrize("path", [p for p in SAVED_CLAIMS if figures.of_name(p.stem).id in PROTOCOL_FIGURES],
                         ids=lambda p: p.stem)
def test_every_saved_claim_is_what_the_store_gives_today(path):
    """A notebook's saved claims (what the report shows) equal its figure's claims recomputed from
    the committed store by the current code: no claim in the report is stale."""
    saved = json.loads(path.read_text())
    recomputed = figures.recompute_claims(figures.of_name(path.stem).id, saved["preset"])
    assert [dataclasses.asdict(c) for c in recomputed] == saved["claims"]


def test_a_source_names_a_bad_seed():
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        Source("paper", compute=-1)
    with pytest.raises(ValueError, match="got 3"):
        Source("paper", seeds=3)
    assert Source("paper", [2, 0]).seeds == (2, 0) and Source("paper", [1], 1).read_only.compute is None
