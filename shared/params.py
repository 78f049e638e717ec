"""Notebook parameters: a papermill parameter that the notebook does not declare is an error.

papermill injects every `-p NAME VALUE` as an assignment in a cell after the notebook's
`parameters` cell and only warns about names it does not know, so a misspelt parameter
(`-p seeed 3`) silently runs the default. Each notebook calls `check_parameters()` in the cell
after its parameters; it reads the cells executed so far and compares the injected names with
the declared ones, both parsed by papermill's own parameter reader.
"""
import nbformat
from papermill.translators import PythonTranslator

INJECTED_HEADER = "# Parameters\n"  # how papermill opens the cell it injects


def parameter_names(source: str) -> list[str]:
    """The names a parameters cell assigns, as papermill reads them."""
    return [p.name for p in PythonTranslator.inspect(nbformat.v4.new_code_cell(source))]


def unknown_parameters(history: list[str]) -> tuple[list[str], list[str]]:
    """(unknown, declared): the names injected by papermill's last parameters cell in `history`
    (the sources of the cells executed so far, in order) that no earlier cell declares, and the
    declared ones. Without an injected cell (a notebook run by hand) nothing is unknown."""
    injected = [i for i, source in enumerate(history) if source.startswith(INJECTED_HEADER)]
    if not injected:
        return [], []
    last = injected[-1]
    declared = {name for source in history[:last] if source and not source.startswith(INJECTED_HEADER)
                for name in parameter_names(source)}
    unknown = [name for name in parameter_names(history[last]) if name not in declared]
    return unknown, sorted(declared)


def check_parameters(history: list[str] | None = None) -> None:
    """Raise a ValueError naming each papermill parameter that this notebook does not declare,
    and the ones it does. `history` defaults to the running kernel's executed cells (`In`)."""
    if history is None:
        from IPython import get_ipython

        shell = get_ipython()
        history = list(shell.user_ns.get("In", [])) if shell is not None else []
    unknown, declared = unknown_parameters(history)
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {', '.join(map(repr, unknown))}; "
                         f"this notebook's parameters are: {', '.join(declared)}")
