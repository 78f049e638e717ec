"""Claims as data: each claim of the paper, its number beside ours, and a verdict by a written rule.

Every figure notebook ends with its claims: a list of `Claim` records built by the figure's module
in `shared/`, shown as a table (`claims_frame`) and saved beside the figures (`save_claims`) as
`claims_<item>_<preset>.json`, which the report reads for its summary and its figure sections.

A verdict is one of VERDICTS: "yes" (the claim holds within the rule's tolerance), "partly" (it
holds in direction but not in size, within a looser tolerance), "no", or "not judged" (the note
says why: a reduced preset, runs missing). The rules below are the only place verdicts are made.
"""

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from .fileio import write_atomic
from .paths import FIGURES_DIR, saved_figures_dir

YES, PARTLY, NO, NOT_JUDGED = "yes", "partly", "no", "not judged"
VERDICTS = (YES, PARTLY, NO, NOT_JUDGED)
KEY = re.compile(r"[a-z][a-z0-9_]*")  # a claim's key: a snake_case name


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: its key (a snake_case name, unique among its figure's claims, by
    which the report quotes it), what it says, its number, ours, the verdict and why."""
    key: str
    claim: str
    paper: str
    ours: str
    verdict: str
    note: str = ""

    def __post_init__(self):
        if not KEY.fullmatch(self.key):
            raise ValueError(f"a claim's key is a snake_case name ({KEY.pattern}), got {self.key!r}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.verdict == NOT_JUDGED and not self.note:
            raise ValueError(f"a claim that is not judged says why in its note: {self.claim!r}")


def judged(key: str, claim: str, paper: str, ours: str, verdict: str, unless: str | None = None) -> Claim:
    """A claim with `verdict`, or "not judged" with the reason `unless` when there is one (a note
    on a judged claim: `dataclasses.replace(claim, note=...)`)."""
    return Claim(key, claim, paper, ours, NOT_JUDGED if unless else verdict, unless or "")


def slug(text: object, sep: str = "_") -> str:
    """`text` as a part of a claim's key (or, with sep "-", of an id in the report): lower case,
    each run of other characters one `sep` ("BN, lr 0.1" -> "bn_lr_0_1")."""
    return re.sub(r"[^a-z0-9]+", sep, str(text).lower()).strip(sep)


def unjudged_reason(preset: str, missing: int = 0, needs: str | None = None) -> str | None:
    """Why a preset's claims are not judged: the smoke preset only checks the code; `missing`
    runs are not in the store; `needs` names the preset a claim needs (e.g. "paper")."""
    if preset == "smoke":
        return "smoke preset: it checks the code, not the numbers"
    if needs and preset != needs:
        return f"{preset} preset: this claim needs the {needs} preset"
    if missing:
        return f"{missing} run(s) not yet in the store"
    return None


def holds(condition: bool | None, partly: bool = False) -> str:
    """yes if `condition`; otherwise partly if `partly`; no; NaN-derived None: not judged."""
    if condition is None:
        return NOT_JUDGED
    return YES if condition else PARTLY if partly else NO


def _missing(*values) -> bool:
    return any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values)


def within_range(value: float, low: float, high: float,
                 partly: tuple[float, float] | None = None) -> str:
    """yes if low <= value <= high; partly if within the looser range `partly`; else no."""
    if _missing(value):
        return NOT_JUDGED
    return holds(low <= value <= high, partly is not None and partly[0] <= value <= partly[1])


def at_least(value: float, threshold: float, partly: float | None = None) -> str:
    """yes if value >= threshold; partly if value >= `partly`; else no."""
    if _missing(value):
        return NOT_JUDGED
    return holds(value >= threshold, partly is not None and value >= partly)


def claims_frame(claims: list[Claim]) -> pd.DataFrame:
    """The claims as the notebooks show them: one row per claim; paper, ours, holds (the verdict,
    with the note where there is one)."""
    rows = [{"claim": c.claim, "paper": c.paper, "ours": c.ours,
             "holds": f"{c.verdict} ({c.note})" if c.note else c.verdict} for c in claims]
    return pd.DataFrame(rows, columns=["claim", "paper", "ours", "holds"]).set_index("claim")


def claims_path(item: str, preset: str, directory: Path | None = None) -> Path:
    return Path(directory or FIGURES_DIR) / f"claims_{item}_{preset}.json"


def save_claims(item: str, preset: str, claims: list[Claim], directory: Path | None = None) -> pd.DataFrame:
    """Write the claims of a report item (fig1 ... fig7, table1, lr_sweep) for `preset` into
    `directory` (default: where the notebooks save their figures, `shared.paths.saved_figures_dir`;
    nowhere if that is unset), and return them as a table to show."""
    keys = [c.key for c in claims]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{item}: two claims share a key: {sorted(k for k in set(keys) if keys.count(k) > 1)}")
    directory = directory or saved_figures_dir()
    if directory is None:
        return claims_frame(claims)
    record = {"item": item, "preset": preset, "claims": [asdict(c) for c in claims]}
    text = json.dumps(record, indent=1, ensure_ascii=False) + "\n"
    write_atomic(claims_path(item, preset, directory), text.encode())
    return claims_frame(claims)


def load_claims(item: str, preset: str, directory: Path | None = None) -> list[Claim] | None:
    """The saved claims of `item` for `preset`, or None if none were saved."""
    path = claims_path(item, preset, directory)
    if not path.exists():
        return None
    try:
        return [Claim(**c) for c in json.loads(path.read_text())["claims"]]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"cannot read the claims file {path} ({error}); re-execute its notebook "
                         f"to write it again") from error


def verdict_counts(claims: list[Claim]) -> dict[str, int]:
    """How many claims have each verdict, in VERDICTS order."""
    return {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
