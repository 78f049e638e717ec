"""The package's structure: data flows one way down. Its imports (read from the source, every
import wherever it stands) form no circle, the store imports nothing it stores results of, and
every run in the committed store reads back through today's code under the key it was stored at;
no function takes more than six parameters and no module more than 350 lines."""

import ast
from pathlib import Path

from shared.compute import config_runs
from shared.paths import RESULTS_ROOT
from shared.results import Store, StoredRun

PACKAGE = Path(__file__).resolve().parent.parent / "shared"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each module of `shared` -> the modules of `shared` it imports (relative or absolute, at any
    depth of its code: an import inside a function is an import)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    found = {}
    for name, path in paths.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = (package[:len(package) - node.level + 1] if node.level else [])
                base = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    whole = f"{base}.{alias.name}"
                    targets.add(whole if whole in paths else base)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        found[name] = {t for t in targets if t in paths and t != name}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `graph`: its strongly connected components of more than one module."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert cycles(imports()) == []


def test_the_store_imports_neither_data_models_training_nor_figures():
    below = imports()["shared.results"]
    assert not {m for m in below if m.split(".")[1] in ("data", "models", "train", "figures", "compute")}


def test_every_committed_run_reads_back_under_its_key():
    """Every stored run of the committed store, read through today's code: a StoredRun whose
    provenance's config hash is its folder's name, served to the figures (`config_runs`)."""
    store, count = Store(), 0
    for experiment in sorted(p.name for p in Path(RESULTS_ROOT).iterdir() if p.is_dir()):
        for run in store.runs(experiment):
            assert isinstance(run, StoredRun) and run.folder.parent.name == run.provenance["config_hash"]
            assert run.folder.name == f"seed{run.seed}"
            count += 1
        config_runs(experiment, None)  # one copy of the data across the experiment
    assert count >= 626


MAX_PARAMETERS = 6  # a function needing more takes a record (a RunContext, a Source, a dataclass)
MAX_LINES = 350     # a module reads in one sitting


def parameters(function: ast.FunctionDef) -> list[str]:
    """A function's parameters, `self` and `cls` aside, *args and **kwargs included."""
    a = function.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs) if p.arg not in ("self", "cls")]
    return names + [p.arg for p in (a.vararg, a.kwarg) if p is not None]


def test_parameters_counts_every_kind_but_self():
    tree = ast.parse("class A:\n    def f(self, a, /, b, *c, d, **e): pass")
    assert parameters(tree.body[0].body[0]) == ["a", "b", "d", "c", "e"]


def test_no_function_takes_more_than_six_parameters_and_no_module_is_long():
    long_functions, long_modules = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > MAX_LINES:
            long_modules.append(f"{module_name(path)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and len(parameters(node)) > MAX_PARAMETERS:
                long_functions.append(f"{module_name(path)}.{node.name}({', '.join(parameters(node))})")
    assert long_functions == [] and long_modules == []
