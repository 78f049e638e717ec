"""The figures: one module each, and the registry the report, the notebooks and the tests loop over.

Each module holds one figure: its measurement's config and measure function where it is measured
at initialisation (`shared.experiments` registers them and computes the stored runs; training is
`shared.train`), then its tables, claims and plots from stored runs, with the paper's numbers
it is compared against at its top. `FIGURES` lists them in the report's order: the paper's figures
and table, then what the paper says only in words (the learning-rate sweep), the choice of its
network, and our experiments beyond it. A notebook reproduces a figure when its file name holds
the figure's id (`01_fig1_accuracy.ipynb` -> "fig1"); its claims are saved under that id.

Modules are imported when asked for (`module`), so that importing the registry imports no figure.
"""

import importlib
import re
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Figure:
    id: str            # "fig1": the notebook's name holds it; the claims and figures are saved under it
    label: str         # the report's name for it
    module: str        # its module in shared.figures
    in_paper: bool = True  # one of the paper's figures or tables (False: what the paper says in words, or beyond it)


FIGURES = (
    Figure("fig1", "Figure 1", "fig1"),
    Figure("fig2", "Figure 2", "fig2"),
    Figure("fig3", "Figure 3", "fig3"),
    Figure("fig4", "Figure 4", "fig4"),
    Figure("fig5", "Figure 5", "fig5"),
    Figure("fig6", "Figure 6", "fig6"),
    Figure("fig7", "Figure 7", "fig7"),
    Figure("table1", "Table 1", "table1"),
    Figure("lr_sweep", "The learning-rate sweep", "sweep", in_paper=False),
    Figure("network_choice", "The choice of network", "candidates", in_paper=False),
    Figure("depth_ladder", "Beyond the paper: depth", "depth", in_paper=False),
    Figure("normfree", "Beyond the paper: without BN, without the explosion", "normfree", in_paper=False),
)
IDS = tuple(f.id for f in FIGURES)
_BY_ID = {f.id: f for f in FIGURES}
_IN_NAME = re.compile(r"(?:^|_)(%s)(?:_|$)" % "|".join(sorted(IDS, key=len, reverse=True)))


def figure(id: str) -> Figure:
    """The registered figure `id`; an unknown id names the valid ones."""
    if id not in _BY_ID:
        raise KeyError(f"unknown figure {id!r}; valid: {', '.join(IDS)}")
    return _BY_ID[id]


def of_name(name: str) -> Figure | None:
    """The figure a notebook's or a saved figure's name refers to ("02_fig2_gradients" -> fig2), or None."""
    match = _IN_NAME.search(name)
    return _BY_ID[match[1]] if match else None


def module(id: str) -> ModuleType:
    """The figure's module (shared.figures.<module>), imported on first use."""
    return importlib.import_module(f"{__name__}.{figure(id).module}")


PROTOCOL = ("Runs", "load", "Tables", "tables", "claims")  # shared.figures.protocol


def follows_protocol(id: str) -> bool:
    """Whether the figure's module has every name of the protocol (load -> tables -> claims)."""
    return all(hasattr(module(id), name) for name in PROTOCOL)


def recompute_claims(id: str, preset: str, seeds=None) -> list:
    """The claims of figure `id` under `preset`, recomputed from the store through its module's
    protocol, for its notebook's default network, computing nothing: what its notebook saves."""
    from .protocol import Source  # imports torch: the report, which reads claims only, does not

    fig = module(id)
    return fig.claims(fig.tables(fig.load(Source(preset, seeds))), preset)
