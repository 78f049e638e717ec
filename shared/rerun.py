"""Re-run the stored runs whose code is not on record, and say how far their numbers moved.

A run computed from uncommitted code before the store refused that (`shared.results.code_version`)
records a commit ending in "+dirty" and no diff beside it: nothing can reproduce it. For the
at-initialisation experiments (`shared.experiments.EXPERIMENTS`),

    python -m shared.rerun fig2_gradients fig4_diverging_update --list   # what would be re-run
    python -m shared.rerun fig2_gradients fig4_diverging_update

recomputes each such run from the committed code (the store refuses a tree with changes under
shared/), replaces it, and prints how its numbers moved: the largest relative change of any
number of its result, and the share of them that changed by more than 1e-6.
"""

import argparse
import math
import time

from .config import stored_config
from .experiments import EXPERIMENTS, run_experiment
from .fileio import read_json
from .results import Store, config_hash

DIRTY = "+dirty"


def unrecorded(experiment: str, store: Store | None = None) -> list[tuple[object, int, dict]]:
    """(config, seed, result) of every stored run of `experiment` whose code is not on record."""
    store = store or Store()
    cls = EXPERIMENTS[experiment][0]
    found = []
    for path in sorted((store.root / experiment).glob("*/seed*/provenance.json")):
        prov = read_json(path)
        if not prov["git_commit"].endswith(DIRTY) or "code_diff" in prov:
            continue
        cfg = stored_config(cls, prov["config"])
        if config_hash(cfg) != path.parent.parent.name:  # the config's identity changed since: not this run
            raise ValueError(f"{path.parent}: its stored config hashes to {config_hash(cfg)} today, not to its "
                             "folder's name; re-run it by hand")
        found.append((cfg, prov["seed"], read_json(path.parent / "result.json")))
    return found


def numbers(obj) -> list[float]:
    """Every number of a stored result, depth first in its order (None, a non-finite value, is NaN)."""
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in numbers(v)]
    if isinstance(obj, (list, tuple)):
        return [x for v in obj for x in numbers(v)]
    if obj is None:
        return [math.nan]
    return [float(obj)] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


def change(old: dict, new: dict) -> tuple[float, float]:
    """(the largest relative change, the share of numbers changed by more than 1e-6 relative) from
    `old` to `new`; (inf, 1) when their shapes differ. NaN against NaN is no change."""
    a, b = numbers(old), numbers(new)
    if len(a) != len(b):
        return math.inf, 1.0
    rel = [0.0 if (math.isnan(x) and math.isnan(y)) or x == y else
           math.inf if math.isnan(x) or math.isnan(y) else abs(x - y) / max(abs(x), abs(y))
           for x, y in zip(a, b)]
    return max(rel, default=0.0), sum(r > 1e-6 for r in rel) / max(len(rel), 1)


def rerun(experiment: str, data_dir=None, store: Store | None = None, log=print) -> list[tuple[float, float]]:
    """Recompute every run of `experiment` whose code is not on record, replacing it in `store`;
    per run, `change` from the old result to the new, also logged."""
    changes = []
    for cfg, seed, old in unrecorded(experiment, store):
        start = time.perf_counter()
        new = run_experiment(experiment, cfg, seed, data_dir, recompute=True, store=store)["result"]
        changes.append(change(old, new))
        log(f"  {config_hash(cfg)} seed {seed}: largest relative change {changes[-1][0]:.2g}, "
            f"{changes[-1][1]:.1%} of the numbers moved ({time.perf_counter() - start:.0f} s)")
    return changes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.rerun", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", choices=sorted(EXPERIMENTS))
    parser.add_argument("--list", action="store_true", help="only list the runs that would be re-run")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    for experiment in args.experiments:
        print(f"{experiment}: {len(unrecorded(experiment))} run(s) with code not on record", flush=True)
        if not args.list:
            rerun(experiment, args.data_dir, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
