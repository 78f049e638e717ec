"""Where the project's files live. The environment variables move the writable ones elsewhere
(tests, scratch batches): $BN_RESULTS_DIR, $BN_CHECKPOINT_DIR, $BN_FIGURES_DIR."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"  # datasets (never committed), their decoded cache, the store
RESULTS_ROOT = Path(os.environ.get("BN_RESULTS_DIR") or DATA_DIR / "results")
CHECKPOINT_ROOT = Path(os.environ.get("BN_CHECKPOINT_DIR") or DATA_DIR / "checkpoints")
FIGURES_DIR = Path(os.environ.get("BN_FIGURES_DIR") or REPO_ROOT / "figures")
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
