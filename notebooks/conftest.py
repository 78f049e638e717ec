"""`pytest --nbval notebooks/`, however it is started, writes nothing tracked: the notebooks it
re-runs save their figures and claim records to a temporary folder (where it is unset they would
save nothing; `make report` alone writes figures/)."""

import os
import tempfile

# read by shared.plotting in the notebooks' kernels, which inherit this process's environment
os.environ.setdefault("BN_FIGURES_DIR", tempfile.mkdtemp(prefix="nbval-figures-"))
