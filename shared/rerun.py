"""Re-run the stored runs whose code is not on record, and say how far their numbers moved.

A run computed from uncommitted code before the store refused that (`shared.provenance.code_version`)
records a commit ending in "+dirty" and no diff beside it: nothing can reproduce it, nor a run
one segment of which (a resumed run: `shared.train.loop.RunState.segments`) was computed from
uncommitted code whose diff is not stored, nor one whose commit git could not tell ("unknown"). For the
at-initialisation experiments (`shared.experiments.EXPERIMENTS`) and the training runs,

    python -m shared.rerun fig2_gradients training --list   # what would be re-run
    python -m shared.rerun fig2_gradients training --under 600   # those that took under 10 minutes

recomputes each such run from the committed code (the store refuses a tree with changes under
shared/), replaces it, and prints how its numbers moved (`Change`): the median and the largest
relative change over the numbers both results hold, and the numbers measured only since. It takes
the longest runs first, and several processes share the work: each claims a run before recomputing
it, and leaves a run that another process has claimed (or has recomputed meanwhile) to that one.
"""

import argparse
import math
import statistics
import time
from dataclasses import MISSING, dataclass, fields

from .compute import RunContext
from .config import TRAINING_EXPERIMENT, TrainConfig, stored_config
from .experiments import EXPERIMENTS, run_experiment
from .provenance import DIRTY, SEGMENTS, UNKNOWN
from .results import Store, config_hash
from .train import run_training
CONFIGS = {TRAINING_EXPERIMENT: TrainConfig, **{name: type(m.presets["paper"]) for name, m in EXPERIMENTS.items()}}


def code_segments(provenance: dict, result: dict | None = None) -> list[dict]:
    """The code of each segment that computed a stored run, as its provenance records them
    (`shared.provenance.segment_records`), then the code its provenance names (the last segment's,
    with "diff" where it keeps one). A run stored before segments were recorded has, before that,
    the other commits its result lists ("code"), whose diffs were not kept."""
    diff = {"diff": provenance["code_diff"]} if "code_diff" in provenance else {}
    last = {"commit": provenance["git_commit"], **diff}
    if SEGMENTS in provenance:
        return [*provenance[SEGMENTS], last]
    earlier = result.get("code", []) if isinstance(result, dict) else []
    return [{"commit": commit} for commit in earlier if commit != last["commit"]] + [last]


def on_record(provenance: dict, result: dict | None = None) -> bool:
    """Whether a stored run's code is on record: every segment that computed it (`code_segments`)
    from a known commit, and one with changes ("+dirty") with its diff stored."""
    return all(s["commit"] != UNKNOWN and (not s["commit"].endswith(DIRTY) or "diff" in s)
               for s in code_segments(provenance, result))


def unrecorded(experiment: str, store: Store | None = None, under_s: float = math.inf) -> list[tuple[object, int, dict]]:
    """(config, seed, result) of every stored run of `experiment` whose code is not on record (and
    whose computation took under `under_s` seconds), the longest first (as recorded)."""
    found = []
    for run in sorted((store or Store()).runs(experiment), key=lambda run: -run.provenance["duration_s"]):
        prov = run.provenance
        if on_record(prov, run.result) or prov["duration_s"] >= under_s:
            continue
        cfg = stored_config(CONFIGS[experiment], prov["config"])
        if config_hash(cfg) != prov["config_hash"]:  # the config's identity changed since: not this run
            raise ValueError(f"{experiment} {prov['config_hash']} seed {prov['seed']}: its stored config hashes "
                             f"to {config_hash(cfg)} today; re-run it by hand")
        found.append((cfg, prov["seed"], run.result))
    return found


def numbers(obj, path: str = "") -> dict[str, float]:
    """Every number of a stored result by its path ("bn/109/ratio", "sizes/3"), but the wall-clock
    times (keys ending in "_s": a training epoch's "wall_s"); None (a non-finite value) is NaN."""
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() if not key.endswith("_s")
                for k, v in numbers(value, f"{path}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, value in enumerate(obj) for k, v in numbers(value, f"{path}/{i}").items()}
    if obj is None:
        return {path: math.nan}
    return {path: float(obj)} if isinstance(obj, (int, float)) and not isinstance(obj, bool) else {}


@dataclass(frozen=True)
class Change:
    """How a result's numbers moved when it was recomputed: relative changes |a - b| / max(|a|, |b|)
    over the numbers both hold (NaN beside NaN: none; beside a number: inf), and the numbers only
    the new result holds (a field measured since)."""
    median: float
    largest: float
    moved: float    # the share of the numbers that moved by more than 1e-6
    new: int        # numbers only the new result holds
    lost: int       # numbers only the old result held

    def __str__(self) -> str:
        return (f"relative change median {self.median:.2g}, largest {self.largest:.2g}; {self.moved:.0%} of "
                f"the numbers moved" + (f"; {self.new} new number(s)" if self.new else "")
                + (f"; {self.lost} number(s) no longer measured" if self.lost else ""))


def change(old: dict, new: dict) -> Change:
    """How the numbers moved from `old` to `new` (`Change`)."""
    a, b = numbers(old), numbers(new)
    rel = [0.0 if (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] else
           math.inf if math.isnan(a[k]) or math.isnan(b[k]) else abs(a[k] - b[k]) / max(abs(a[k]), abs(b[k]))
           for k in a.keys() & b.keys()]
    return Change(statistics.median(rel) if rel else 0.0, max(rel, default=0.0),
                  sum(r > 1e-6 for r in rel) / max(len(rel), 1), len(b.keys() - a.keys()), len(a.keys() - b.keys()))


def recompute(experiment: str, cfg, seed: int, data_dir=None, store: Store | None = None) -> dict:
    """The run of (cfg, seed) computed again and stored in place of the old one."""
    if experiment == TRAINING_EXPERIMENT:
        return run_training(cfg, seed, experiment, RunContext(store or Store(), data_dir, recompute=True, progress=False))
    return run_experiment(experiment, cfg, seed, RunContext(store or Store(), data_dir, recompute=True))


def rerun(experiment: str, data_dir=None, store: Store | None = None, under_s: float = math.inf,
          log=print) -> list[Change]:
    """Recompute every run of `experiment` whose code is not on record (`unrecorded`), replacing it
    in `store`; per run, `change` from the old result to the new, also logged."""
    store = store or Store()
    changes, found = [], unrecorded(experiment, store, under_s)
    log(f"{experiment}: {len(found)} run(s) with code not on record, recomputed one by one")
    for cfg, seed, old in found:
        start = time.perf_counter()
        if (moved := rerun_one(experiment, cfg, seed, old, data_dir, store)) is None:
            log(f"  {config_hash(cfg)} seed {seed}: left to the process that claimed it or re-ran it")
            continue
        changes.append(moved)
        log(f"  {config_hash(cfg)} seed {seed}: {moved} ({time.perf_counter() - start:.0f} s)")
    return changes


def rerun_one(experiment: str, cfg, seed: int, old: dict, data_dir=None, store: Store | None = None) -> Change | None:
    """Recompute one run whose code is not on record and say how its numbers moved (`change`);
    None, leaving it alone, where another process has claimed it or its code is on record by now
    (recomputed since the list was made). The claim is a lock of its own, taken without waiting,
    beside the run's compute lock (`Store.lock`)."""
    store = store or Store()
    with store.lock(experiment, cfg, seed, wait=False, suffix=".rerun") as claim:
        if claim is None:
            return None
        stored = store.runs(experiment, cfg, seeds=[seed])
        if not stored or on_record(stored[0].provenance, stored[0].result):
            return None
        new = recompute(experiment, cfg, seed, data_dir, store).result
        claim.unlink(missing_ok=True)
        return change(old, new)


def describe(cfg) -> str:
    """A config by the fields where it differs from its class's defaults ("arch='resnet32', bn=False")."""
    def default(f):
        return f.default_factory() if f.default_factory is not MISSING else f.default
    return ", ".join(f"{f.name}={getattr(cfg, f.name)!r}" for f in fields(cfg) if getattr(cfg, f.name) != default(f))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.rerun", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", choices=sorted(CONFIGS))
    parser.add_argument("--list", action="store_true", help="only list the runs that would be re-run")
    parser.add_argument("--under", type=float, default=math.inf, metavar="SECONDS",
                        help="only the runs whose computation took under SECONDS (as recorded)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    log = lambda line: print(line, flush=True)  # noqa: E731
    for experiment in args.experiments:
        if args.list:
            store = Store()
            recorded_s = {(run.provenance["config_hash"], run.provenance["seed"]): run.provenance["duration_s"]
                          for run in store.runs(experiment)}
            found = [(cfg, seed, recorded_s[config_hash(cfg), seed]) for cfg, seed, _ in unrecorded(experiment, store, args.under)]
            log(f"{experiment}: {len(found)} run(s) with code not on record, "
                f"{sum(s for _, _, s in found) / 3600:.1f} h as recorded")
            for cfg, seed, seconds in found:
                log(f"  {config_hash(cfg)} seed {seed}, {seconds:.0f} s: {describe(cfg)}")
        else:
            rerun(experiment, args.data_dir, under_s=args.under, log=log)


if __name__ == "__main__":
    main()
