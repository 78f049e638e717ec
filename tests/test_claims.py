"""The verdict rules of shared.claims at their borders, and claim records' round trip."""

import math

import pytest

from shared.claims import (NO, NOT_JUDGED, PARTLY, YES, Claim, at_least, claims_frame, judged, load_claims,
                           save_claims, slug, unjudged_reason, verdict_counts, within_range)


def test_within_range_borders_and_looser_range():
    assert within_range(1.0, 1.0, 2.0) == YES and within_range(2.0, 1.0, 2.0) == YES
    assert within_range(2.5, 1.0, 2.0) == NO
    assert within_range(2.5, 1.0, 2.0, partly=(0.5, 3.0)) == PARTLY
    assert within_range(math.nan, 1.0, 2.0) == NOT_JUDGED


def test_at_least():
    assert at_least(2, 2) == YES and at_least(1.9, 2) == NO and at_least(1.9, 2, partly=1) == PARTLY


def test_unjudged_reasons():
    assert "smoke" in unjudged_reason("smoke")
    assert unjudged_reason("paper") is None
    assert "needs the paper preset" in unjudged_reason("cpu", needs="paper")
    assert "2 run(s)" in unjudged_reason("cpu", missing=2)
    claim = judged("c", "c", "1", "2", YES, unless=unjudged_reason("smoke"))
    assert claim.verdict == NOT_JUDGED and "smoke" in claim.note


def test_a_claim_rejects_an_unknown_verdict_an_unexplained_not_judged_and_a_bad_key():
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim("c", "c", "1", "2", "True")
    with pytest.raises(ValueError, match="says why"):
        Claim("c", "c", "1", "2", NOT_JUDGED)
    with pytest.raises(ValueError, match="snake_case name .*got 'BN 0.1'"):
        Claim("BN 0.1", "c", "1", "2", YES)
    assert slug("BN, lr 0.1") == "bn_lr_0_1" and slug(1e-4) == "0_0001" and slug("(ln) ") == "ln"


def test_two_claims_of_a_figure_never_share_a_key(tmp_path):
    with pytest.raises(ValueError, match=r"fig9: two claims share a key: \['a'\]"):
        save_claims("fig9", "paper", [Claim("a", "x", "1", "1", YES), Claim("a", "y", "1", "1", YES)], tmp_path)
    assert not list(tmp_path.iterdir())


def test_claims_round_trip_through_their_file(tmp_path):
    claims = [Claim("a", "A", "1", "1.1", YES), Claim("b", "B", "2", "9", NO, "an order of magnitude off"),
              judged("c", "C", "3", "-", YES, unless="smoke preset")]
    table = save_claims("fig9", "paper", claims, tmp_path)
    assert list(table["holds"]) == ["yes", "no (an order of magnitude off)", "not judged (smoke preset)"]
    assert load_claims("fig9", "paper", tmp_path) == claims
    assert load_claims("fig9", "cpu", tmp_path) is None
    assert verdict_counts(claims) == {YES: 1, PARTLY: 0, NO: 1, NOT_JUDGED: 1}
    assert claims_frame(claims).index.tolist() == ["A", "B", "C"]


def test_an_unreadable_claims_file_names_itself(tmp_path):
    (tmp_path / "claims_fig9_paper.json").write_text('{"claims": [{"claim": 1')
    with pytest.raises(ValueError, match="claims_fig9_paper.json.*re-execute"):
        load_claims("fig9", "paper", tmp_path)


def test_without_a_figures_folder_nothing_is_saved(tmp_path, monkeypatch):
    """An interactive run or a papermill batch ($BN_FIGURES_DIR unset) shows its figures and claims
    and writes no file; `make report` sets the folder."""
    import matplotlib.pyplot as plt

    from shared.plotting import save_figure

    monkeypatch.delenv("BN_FIGURES_DIR", raising=False)
    fig = plt.figure()
    assert save_figure(fig, "demo", "paper") is None
    assert len(save_claims("fig9", "paper", [Claim("a", "a", "1", "1", YES)])) == 1
    monkeypatch.setenv("BN_FIGURES_DIR", str(tmp_path))
    assert save_figure(fig, "demo", "cpu") == tmp_path / "demo_cpu.png" and (tmp_path / "demo_cpu.svg").exists()
    save_claims("fig9", "paper", [Claim("a", "a", "1", "1", YES)])
    assert load_claims("fig9", "paper", tmp_path) == [Claim("a", "a", "1", "1", YES)]
    plt.close(fig)
