"""The report: include files generated from the notebooks and the results store, then the site.

`index.qmd` is the report's front page; every number and figure on it comes from markdown files
this module generates into `_generated/` (ignored by git) and the page includes:

    _generated/story.md       the question, the paper's answer and ours (shared.frontpage)
    _generated/headline.md    the headline figures, each beside its paper panel, with its finding
    _generated/scorecard.md   one row per figure: the paper's number, ours, the verdict counts
    _generated/summary.md     every claim of the paper, figure by figure (the claims page, claims.qmd)
    _generated/<item>.md      per figure or table of the paper (fig1 ... fig7, table1): the
                              notebook(s) reproducing it, their saved figures (figures/*.png) and
                              their claims, or "not yet reproduced"
    _generated/notebooks.md   every notebook in reading order, with its preset and date
    _generated/provenance.md  every run in the results store, summarised per configuration

The claims come from the records each notebook saves beside its figures
(`figures/claims_<item>_<preset>.json`, `shared.claims`), never from the notebooks' HTML.
Then, if Quarto is installed, `quarto render` builds the website (`_quarto.yml`) into `_site/`;
otherwise an offline HTML version of the same pages is written there (shared.offline_site), which
opens from the file system.

    python -m shared.report [--execute] [--preset PRESET]

`--execute` first runs every notebook in place with papermill (`-p preset PRESET`).
"""

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import yaml

from . import figures, frontpage
from .execution import execute_notebooks
from .offline_site import Notebook, SiteSources, build_offline
from .config import PROBE_PRESETS, TRAIN_PRESETS
from .claims import Claim, load_claims, slug, verdict_counts
from .fileio import read_json, read_provenance
from .paths import FIGURES_DIR, NOTEBOOKS_DIR, REPO_ROOT, RESULTS_ROOT

GENERATED_DIR = REPO_ROOT / "_generated"
SITE_DIR = REPO_ROOT / "_site"
INDEX = REPO_ROOT / "index.qmd"
CLAIMS_PAGE = REPO_ROOT / "claims.qmd"   # every claim in one table, one click from the front page
QUARTO_CONFIG = REPO_ROOT / "_quarto.yml"

PRESET_NAMES = sorted({*TRAIN_PRESETS, *PROBE_PRESETS})
QUARTO_MISSING = ("Quarto is not installed; writing an offline HTML report to _site/ instead "
                  "(install Quarto from https://quarto.org/docs/get-started/ for the full site)")


def paper_item(stem: str) -> str | None:
    """The figure a notebook or figure name refers to (shared.figures): "02_fig2_gradients" -> "fig2"."""
    found = figures.of_name(stem)
    return found.id if found else None


def item_label(item: str) -> str:
    """"fig2" -> "Figure 2", "lr_sweep" -> "The learning-rate sweep" (shared.figures.FIGURES)."""
    return figures.figure(item).label


def front_matter(nb: nbformat.NotebookNode) -> dict:
    """The notebook's front matter (Quarto's: a first raw cell holding YAML between --- lines), or {}."""
    if nb.cells and nb.cells[0].cell_type == "raw" and nb.cells[0].source.startswith("---"):
        return yaml.safe_load(nb.cells[0].source.strip().strip("-")) or {}
    return {}


def notebook_title(nb: nbformat.NotebookNode, default: str) -> str:
    """The notebook's title: its front matter's, else its first markdown heading, else `default`."""
    if title := front_matter(nb).get("title"):
        return title
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if match := re.match(r"#+\s+(.+)", line):
                    return match[1].strip()
    return default


def figure_preset(stem: str) -> str:
    """The preset a saved figure was made with: shared.plotting.save_figure appends it unless paper."""
    return next((p for p in PRESET_NAMES if p != "paper" and stem.endswith(f"_{p}")), "paper")


def executed_date(path: Path) -> str | None:
    """The date the notebook was last committed (its execution's date: notebooks are committed
    executed, without papermill's timestamps), or None outside git or before its first commit."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cs", "--", path.name], cwd=path.parent,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def read_notebook(path: Path, figures_dir: Path = FIGURES_DIR) -> Notebook:
    """Read what the report needs from an executed notebook and the files it saved."""
    nb = nbformat.read(path, as_version=4)
    preset = nb.metadata.get("papermill", {}).get("parameters", {}).get("preset", "paper")
    item = paper_item(path.stem)
    saved = sorted([*figures_dir.glob(f"{item}.png"), *figures_dir.glob(f"{item}_*.png")]) if item else []
    return Notebook(path, notebook_title(nb, path.stem), item, preset, executed_date(path),
                    [f for f in saved if figure_preset(f.stem) == preset],
                    load_claims(item, preset, figures_dir) if item else None)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A pipe table (Quarto's and mistune's markdown), its cells' pipes escaped."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in line) + " |" for line in lines)


def verdict_text(claim: Claim) -> str:
    return f"{claim.verdict} ({claim.note})" if claim.note else claim.verdict


def claims_markdown(claims: list[Claim]) -> str:
    return markdown_table(["claim", "paper", "ours", "holds"],
                          [[c.claim, c.paper, c.ours, verdict_text(c)] for c in claims])


def counts_text(claims: list[Claim]) -> str:
    counts = verdict_counts(claims)
    return ", ".join(f"{n} {verdict}" for verdict, n in counts.items() if n)


def summary_markdown(notebooks: list[Notebook]) -> str:
    """Every claim of every notebook, figure by figure in the paper's order, with its verdict,
    and how many hold: the report's one-glance summary."""
    rows, everything = [], []
    for item in figures.IDS:
        for nb in notebooks:
            if nb.item == item and nb.claims:
                everything += nb.claims
                rows += [[item_label(item) if i == 0 else "",
                          c.claim, c.paper, c.ours, f"**{c.verdict}**" + (f" ({c.note})" if c.note else "")]
                         for i, c in enumerate(nb.claims)]
    if not rows:
        return "*No notebook has saved its claims yet.*\n"
    missing = [f.label for f in figures.FIGURES if f.in_paper
               and not any(nb.item == f.id and nb.claims for nb in notebooks)]
    lead = (f"{len(everything)} claims (the paper's, and the predictions our extensions test), each "
            f"with our number and a verdict by a written rule (`shared/claims.py`): {counts_text(everything)}."
            + (f" Not yet reproduced: {', '.join(missing)}." if missing else ""))
    return lead + "\n\n" + markdown_table(["", "claim", "paper", "ours", "holds"], rows) + "\n"


def figure_markdown(figure: Path) -> str:
    """A cross-referenceable image of a saved figure, its path relative to the site root."""
    return f"![{figure.name}](figures/{figure.name}){{#fig-{slug(figure.stem, '-')}}}"


def item_markdown(item: str, notebooks: list[Notebook]) -> str:
    """The generated part of a paper item's section: our figures and claims, or that there are none."""
    ours = [nb for nb in notebooks if nb.item == item]
    if not ours:
        return (f"*{item_label(item)} is not yet reproduced: no notebook `notebooks/NN_{item}_*.ipynb` "
                f"exists yet.*\n")
    parts = []
    for nb in ours:
        executed = f", executed {nb.executed}" if nb.executed else ""
        parts.append(f"**Our reproduction:** [{nb.title}]({nb.page}) (preset `{nb.preset}`{executed}).")
        labels = [label for label, _ in frontpage.figure_cells(nb.path)]
        headline = [label for label in labels if label in frontpage.HEADLINE_LABELS]
        if headline:  # a figure appears once on the page: the headline figures are shown above
            parts.append(f"*{len(headline)} of its figures {'are' if len(headline) > 1 else 'is'} among the "
                         "headline figures at the top of the page.*")
        embeds = [f"{{{{< embed notebooks/{nb.path.name}#{label} >}}}}"  # with the cells' captions
                  for label in labels if label not in frontpage.HEADLINE_LABELS]
        parts += embeds or ([] if headline else [figure_markdown(f) for f in nb.figures]) or (
            [] if headline else [f"*No stored figure for preset `{nb.preset}` yet.*"])
        if nb.claims:
            parts += [f"The notebook's claims, the paper's numbers beside ours ({counts_text(nb.claims)}):",
                      claims_markdown(nb.claims)]
        else:
            parts.append("*The notebook has no claims table yet.*")
    return "\n\n".join(parts) + "\n"


def notebooks_markdown(notebooks: list[Notebook]) -> str:
    """A numbered list of the notebooks in reading order."""
    if not notebooks:
        return "*No notebooks yet.*\n"
    lines = [f"{i}. [{nb.title}]({nb.page}): preset `{nb.preset}`"
             + (f", executed {nb.executed}" if nb.executed else "")
             + f"; another seed: `cd notebooks && papermill {nb.path.name} out.ipynb -p preset {nb.preset} -p seed 5`"
             for i, nb in enumerate(notebooks, 1)]
    return "\n".join(lines) + "\n"


def load_runs(results_dir: Path = RESULTS_ROOT) -> list[dict]:
    """The provenance of every completed run in the store, with its experiment's name added; a
    damaged run (a result or provenance that is not whole JSON, a provenance lacking a key it is read
    by) stops it, naming the file."""
    runs = []
    for path in sorted(results_dir.glob("**/provenance.json")):
        if (path.parent / "result.json").exists():
            read_json(path.parent / "result.json")  # complete only if its result reads
            experiment = path.relative_to(results_dir).parts[0]
            runs.append({"experiment": experiment, **read_provenance(path)})
    return runs


def short_config(config: dict, varying: set[str]) -> str:
    """The fields that tell an experiment's configs apart (always the architecture, if it has one)."""
    keys = [k for k in config if k == "arch" or k in varying]
    return ", ".join(f"{k}={config[k]}" for k in keys) or "default"


def short_commit(commit: str) -> str:
    return commit[:7] + ("+dirty" if commit.endswith("+dirty") else "")


def provenance_markdown(runs: list[dict]) -> str:
    """A table of the store's runs, one row per (experiment, config): seeds, devices, dates, code."""
    if not runs:
        return "*The results store holds no runs yet.*\n"
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["experiment"], run["config_hash"]), []).append(run)
    configs: dict[str, list[dict]] = {}
    for (experiment, _), group in groups.items():
        configs.setdefault(experiment, []).append(group[0]["config"])
    rows = ["| experiment | config | seeds | device | dates | code | precision |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for (experiment, config_hash), group in sorted(groups.items()):
        others = configs[experiment]
        varying = {k for c in others for k in c if any(o.get(k) != c[k] for o in others)}
        dates = sorted(r["date"][:10] for r in group)
        cells = [f"`{experiment}`", f"{short_config(group[0]['config'], varying)} (`{config_hash[:7]}`)",
                 str(len({r["seed"] for r in group})),
                 ", ".join(sorted({r["device"] for r in group})),
                 dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}",
                 ", ".join(sorted({f"`{short_commit(r['git_commit'])}`" for r in group})),
                 ", ".join(sorted({r["precision"] for r in group}))]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    summary = (f"{len(runs)} runs of {len(groups)} configurations of {len(configs)} experiments, "
               f"read from `data/results/<experiment>/<config hash>/seed<N>/provenance.json`. "
               + dirty_summary(runs))
    return summary + "\n\n" + "\n".join(rows) + "\n"


def dirty_summary(runs: list[dict]) -> str:
    """How many runs record uncommitted code ("+dirty"), per experiment, and how many of them keep
    their diff: the runs computed before the store refused uncommitted code kept none."""
    dirty = [r for r in runs if r["git_commit"].endswith("+dirty")]
    if not dirty:
        return "Every run was computed from committed code."
    kept = sum("code_diff" in r for r in dirty)
    by_experiment: dict[str, int] = {}
    for r in dirty:
        by_experiment[r["experiment"]] = by_experiment.get(r["experiment"], 0) + 1
    listed = ", ".join(f"{n} of `{e}`" for e, n in sorted(by_experiment.items()))
    return (f"{len(dirty)} of the {len(runs)} runs were computed from code with uncommitted changes "
            f"('+dirty': {listed}); {kept} of them keep the diff beside them (`code.diff`), the others "
            "were stored before the store refused uncommitted code, and the commit they name is the "
            "closest record of their code.")


def generate_includes(notebooks: list[Notebook], runs: list[dict]) -> dict[str, str]:
    """The include files' contents by file name (`fig1.md`, ..., `notebooks.md`, `provenance.md`, and
    the front page's `story.md`, `headline.md`, `scorecard.md`: `shared.frontpage`)."""
    includes = {f"{item}.md": item_markdown(item, notebooks) for item in figures.IDS}
    includes["summary.md"] = summary_markdown(notebooks)
    includes["notebooks.md"] = notebooks_markdown(notebooks)
    includes["provenance.md"] = provenance_markdown(runs)
    includes["story.md"] = frontpage.story_markdown(notebooks)
    includes["headline.md"] = frontpage.headline_markdown(notebooks)
    includes["scorecard.md"] = frontpage.scorecard_markdown(notebooks, item_label)
    return includes


def write_includes(includes: dict[str, str], generated_dir: Path = GENERATED_DIR) -> None:
    generated_dir.mkdir(parents=True, exist_ok=True)
    for name, text in includes.items():
        (generated_dir / name).write_text(text)


def render_quarto(out_dir: Path) -> None:
    """Render the Quarto website (stored outputs only, see _quarto.yml) into `out_dir`."""
    subprocess.run(["quarto", "render", "--output-dir", os.path.relpath(out_dir, REPO_ROOT)],
                   cwd=REPO_ROOT, check=True)


def build_report(out_dir: Path = SITE_DIR, notebook_paths: list[Path] | None = None,
                 figures_dir: Path = FIGURES_DIR, results_dir: Path = RESULTS_ROOT,
                 generated_dir: Path = GENERATED_DIR, quarto: bool | None = None) -> dict:
    """Generate the include files, then render with Quarto (if `quarto`, default: if installed)
    or write the offline site. Returns what the report holds: pages, figures and runs."""
    paths = sorted(notebook_paths if notebook_paths is not None else NOTEBOOKS_DIR.glob("*.ipynb"),
                   key=lambda p: p.name)
    notebooks = [read_notebook(p, figures_dir) for p in paths]
    runs = load_runs(results_dir)
    includes = generate_includes(notebooks, runs)
    write_includes(includes, generated_dir)
    if quarto if quarto is not None else shutil.which("quarto"):
        render_quarto(out_dir)
    else:
        print(QUARTO_MISSING, flush=True)
        build_offline(out_dir, notebooks, includes, SiteSources(INDEX, CLAIMS_PAGE, QUARTO_CONFIG, figures_dir))
    return {"index": out_dir / "index.html", "pages": 2 + len(notebooks),  # the index, the claims page
            "figures": sum(len(nb.figures) for nb in notebooks), "runs": len(runs),
            "experiments": len({r["experiment"] for r in runs})}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the report into _site/.")
    parser.add_argument("--execute", action="store_true",
                        help="first run every notebook in place with papermill")
    parser.add_argument("--preset", default=None, choices=PRESET_NAMES,
                        help="the preset every notebook is executed with (with --execute); "
                             "default: each notebook's committed parameters")
    parser.add_argument("--includes", action="store_true",
                        help="only generate the include files into _generated/ (Quarto's pre-render step)")
    args = parser.parse_args(argv)
    if args.includes:
        paths = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
        write_includes(generate_includes([read_notebook(p) for p in paths], load_runs()))
        return
    if args.execute:
        execute_notebooks(sorted(NOTEBOOKS_DIR.glob("*.ipynb")), args.preset)
    report = build_report()
    print(f"Report: {report['index'].relative_to(REPO_ROOT)}: {report['pages']} pages (the index, the claims "
          f"page and {report['pages'] - 2} notebooks), {report['figures']} figures, {report['runs']} runs of "
          f"{report['experiments']} experiments from the results store.")


if __name__ == "__main__":
    main()
