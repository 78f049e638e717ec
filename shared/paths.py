"""Where the project's files live. $BN_RESULTS_DIR and $BN_CHECKPOINT_DIR move the store elsewhere
(tests, scratch batches); $BN_FIGURES_DIR says where notebooks save their figures and claims."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"  # datasets (never committed), their decoded cache, the store
RESULTS_ROOT = Path(os.environ.get("BN_RESULTS_DIR") or DATA_DIR / "results")
CHECKPOINT_ROOT = Path(os.environ.get("BN_CHECKPOINT_DIR") or DATA_DIR / "checkpoints")
FIGURES_DIR = REPO_ROOT / "figures"  # the report's figures and claim records
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def saved_figures_dir() -> Path | None:
    """Where a notebook saves its figures and claims: $BN_FIGURES_DIR, which `make report` sets to
    figures/ while it executes the notebooks; unset (an interactive run, a papermill batch), they are
    shown and not saved, so that only the report writes the report's files."""
    value = os.environ.get("BN_FIGURES_DIR")
    return Path(value) if value else None
