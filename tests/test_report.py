"""The report: include files generated from notebooks and the results store, and the offline site
opened in headless Chromium (every page loads, every image and internal link resolves; screenshots of
the front page and a figure page are kept in .pytest_cache/).

The site is built from the project's notebooks plus a small generated one (an image output and a
claims table), so the check means something even before the project has notebooks. Notebooks are
never executed here.
"""

import base64
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import pytest
from PIL import Image

from shared import execution, figures, report
from shared.claims import Claim, save_claims

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium")
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def png_bytes(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 80), color).save(buffer, format="PNG")
    return buffer.getvalue()


def demo_notebook(path: Path, figures: Path) -> None:
    """An executed-looking notebook reproducing "fig7" with the quick preset: an image output,
    then its claims, saved beside the figures as the figure notebooks save theirs."""
    claims = [Claim("holds", "the demo holds", "1.0", "1.0", "yes"),
              Claim("waits", "the demo waits", "2", "-", "not judged", "demo")]
    table = save_claims("fig7", "quick", claims, figures)
    image = nbformat.v4.new_output("display_data", data={
        "image/png": base64.b64encode(png_bytes("steelblue")).decode(), "text/plain": "<Figure>"})
    shown = nbformat.v4.new_output("execute_result", execution_count=2,
                                   data={"text/html": table.to_html(), "text/plain": str(table)})
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Demo: a generated notebook\n\nText before the figure."),
        nbformat.v4.new_code_cell("plot()", execution_count=1, outputs=[image]),
        nbformat.v4.new_markdown_cell("## Claims"),
        nbformat.v4.new_code_cell("claims", execution_count=2, outputs=[shown])])
    nb.metadata["papermill"] = {"parameters": {"preset": "quick"}, "end_time": "2026-01-02T03:04:05"}
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """The offline report built into a temporary folder from the project's notebooks and a demo."""
    tmp = tmp_path_factory.mktemp("report")
    figures = tmp / "figures"
    figures.mkdir()
    for saved in [*report.FIGURES_DIR.glob("*.png"), *report.FIGURES_DIR.glob("claims_*.json")]:
        shutil.copy2(saved, figures / saved.name)
    (figures / "fig7_demo_quick.png").write_bytes(png_bytes("darkorange"))
    demo_notebook(tmp / "99_fig7_demo.ipynb", figures)
    notebooks = sorted(report.NOTEBOOKS_DIR.glob("*.ipynb")) + [tmp / "99_fig7_demo.ipynb"]
    summary = report.build_report(tmp / "_site", notebooks, figures, report.RESULTS_ROOT,
                                  tmp / "_generated", quarto=False)
    return {"tmp": tmp, "out": tmp / "_site", "notebooks": notebooks, "summary": summary}


def test_includes_tolerate_no_notebooks_and_no_runs(tmp_path):
    includes = report.generate_includes([], report.load_runs(tmp_path))
    for item in figures.IDS:
        assert "not yet reproduced" in includes[f"{item}.md"]
    assert "no runs" in includes["provenance.md"]
    assert "No notebooks" in includes["notebooks.md"]
    assert "No notebook has saved its claims" in includes["summary.md"]


def test_the_pages_include_every_generated_file():
    text = report.INDEX.read_text() + report.CLAIMS_PAGE.read_text()
    names = [f"{item}.md" for item in figures.IDS] + ["summary.md", "notebooks.md", "provenance.md",
                                                              "story.md", "headline.md", "scorecard.md"]
    for name in names:
        assert f"{{{{< include _generated/{name} >}}}}" in text
    assert set(report.generate_includes([], [])) == set(names)


# What a typed result looks like in prose: a percentage, a decimal number, a ratio ("100x", "30
# times", "12-fold"), a power of ten or a number in scientific notation
TYPED_RESULT = re.compile(r"\d\s*%|\d\.\d|\d\s*(?:x\b|×|times\b|-fold)|10\^|\de[-+]?\d", re.I)


def prose(text: str) -> str:
    """A page's text without its front matter, shortcodes (includes, embeds), code spans and links' targets."""
    text = text.split("---\n", 2)[2] if text.startswith("---\n") else text
    text = re.sub(r"\{\{<.*?>\}\}", "", text)
    text = re.sub(r"`[^`]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def test_the_front_page_types_no_result():
    """Every number of ours on the front page comes from a generated include: its prose holds no
    percentage, decimal, ratio or power of ten (the paper's identifiers, such as "ResNet-110" or
    "layer 55", are not results)."""
    for page in (report.INDEX, report.CLAIMS_PAGE):
        typed = [line for line in prose(page.read_text()).splitlines() if TYPED_RESULT.search(line)]
        assert not typed, f"{page.name} types results outside its includes: {typed}"
    assert TYPED_RESULT.search("ends at 93.2 % test accuracy") and TYPED_RESULT.search("about 500x larger")
    assert TYPED_RESULT.search("passes 10^3 at s = 2e-3") and not TYPED_RESULT.search("ResNet-110, layer 55")


def test_the_front_page_tells_the_story_first_with_generated_numbers(site):
    generated = site["tmp"] / "_generated"
    story = (generated / "story.md").read_text()
    assert story.startswith("**The question.**") and "**Our answer.** Of the" in story
    claims = [c for p in site["notebooks"] for c in report.read_notebook(p, site["tmp"] / "figures").claims or []]
    assert f"Of the {len(claims)} claims we test" in story
    headline = (generated / "headline.md").read_text()
    assert "{{< embed notebooks/01_fig1_accuracy.ipynb#fig-fig1-accuracy >}}" in headline
    scorecard = (generated / "scorecard.md").read_text()
    assert "| [Demo: Figure 7]" not in scorecard and "(notebooks/99_fig7_demo.html)" in scorecard
    index = report.INDEX.read_text()
    assert index.index("story.md") < index.index("headline.md") < index.index("scorecard.md") < index.index("## The question")


def test_generated_files_show_the_demo_notebook(site):
    fig7 = (site["tmp"] / "_generated" / "fig7.md").read_text()
    assert "[Demo: a generated notebook](notebooks/99_fig7_demo.html)" in fig7
    assert "figures/fig7_demo_quick.png" in fig7
    assert "| the demo holds | 1.0 | 1.0 | yes |" in fig7
    assert "| the demo waits | 2 | - | not judged (demo) |" in fig7
    summary = (site["tmp"] / "_generated" / "summary.md").read_text()
    assert "the demo holds" in summary and "| the demo waits | 2 | - | **not judged** (demo) |" in summary
    reproduced = {report.paper_item(p.stem) for p in site["notebooks"]}
    for item in set(figures.IDS) - reproduced:
        assert "not yet reproduced" in (site["tmp"] / "_generated" / f"{item}.md").read_text()
    assert site["summary"]["pages"] == 2 + len(site["notebooks"])


class PageLinks(HTMLParser):
    """The <title>, <img src> and <a href> of a page."""

    def __init__(self):
        super().__init__()
        self.title, self.images, self.links, self._in_title = "", [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._in_title = tag == "title"
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag):
        self._in_title = False


def chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium with a fresh profile; return its stdout."""
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: the report cannot be checked in a browser")
        pytest.skip("chromium is not installed (`make test` installs it: apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    result = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def local_target(page: Path, ref: str) -> Path | None:
    """The file a relative reference on `page` points to; None for data:, external and #anchors."""
    url = urlparse(ref)
    if url.scheme or url.netloc or not url.path:
        return None
    return (page.parent / unquote(url.path)).resolve()


def test_every_page_loads_with_its_images_and_links(site, tmp_path):
    pages = [site["out"] / "index.html"] + [site["out"] / "notebooks" / f"{p.stem}.html"
                                             for p in site["notebooks"]]
    for page in pages:
        dom = chromium(tmp_path, "--dump-dom", page.as_uri())
        parsed = PageLinks()
        parsed.feed(dom)
        assert parsed.title.strip(), f"{page.name} has no title"
        assert "jp-Notebook" in dom, f"{page.name} lacks its body"
        if page.name != "index.html":
            assert "../index.html" in parsed.links, f"{page.name} does not link back to the index"
        for src in parsed.images:
            assert src, f"an <img> without src on {page.name}"
            if src.startswith("data:"):
                assert len(src.split(",", 1)[1]) > 100, f"an empty embedded image on {page.name}"
            else:
                target = local_target(page, src)
                assert target and target.is_file() and target.stat().st_size > 0, f"{src} on {page.name}"
        for href in parsed.links:
            assert not href.startswith(("/", "file:")), f"absolute link {href} on {page.name}"
            if target := local_target(page, href):
                assert target.is_file(), f"broken link {href} on {page.name}"
    index = PageLinks()
    index.feed((site["out"] / "index.html").read_text())
    assert "figures/fig7_demo_quick.png" in index.images
    assert "notebooks/99_fig7_demo.html" in index.links


@pytest.mark.parametrize("page", ["index.html", "notebooks/02_fig2_gradients.html"], ids=["front-page", "figure-page"])
def test_screenshot_of_the_front_page_and_a_figure_page(site, tmp_path, page):
    """Screenshots in headless Chromium, kept in .pytest_cache/ to look at: not blank."""
    shot = tmp_path / f"report-{Path(page).stem}.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars",
             (site["out"] / page).as_uri())
    low, high = Image.open(shot).convert("L").getextrema()
    assert high - low > 100, f"the screenshot of {page} is blank"
    (ROOT / ".pytest_cache").mkdir(exist_ok=True)
    shutil.copy2(shot, ROOT / ".pytest_cache" / shot.name)


def test_make_report_reexecutes_each_notebook_with_its_committed_parameters(tmp_path, monkeypatch):
    committed = tmp_path / "01_fig1_demo.ipynb"
    demo_notebook(committed, tmp_path)
    nb = nbformat.read(committed, as_version=4)
    nb.metadata["papermill"] = {"parameters": {"preset": "cpu", "seed": 2}}
    nbformat.write(nb, committed)
    never_run = tmp_path / "02_fig2_demo.ipynb"
    nbformat.write(nbformat.v4.new_notebook(metadata=KERNEL), never_run)
    calls = []
    monkeypatch.setattr("papermill.execute_notebook",
                        lambda src, out, parameters, **kw: (calls.append(parameters), shutil.copy(src, out)))
    execution.execute_notebooks([committed, never_run], None)
    execution.execute_notebooks([committed], "smoke")
    assert calls == [{"preset": "cpu", "seed": 2}, {}, {"preset": "smoke"}]

    # a notebook with a `seeds` parameter shows the seeds stored now, and its own seed
    with_seeds = tmp_path / "05_fig5_demo.ipynb"
    parameters = nbformat.v4.new_code_cell("from typing import Optional\n\nseed: int = 0\n"
                                           "seeds: Optional[list[int]] = None  # shown")
    parameters.metadata["tags"] = ["parameters"]
    nbformat.write(nbformat.v4.new_notebook(cells=[parameters], metadata=KERNEL),
                   with_seeds)
    monkeypatch.setattr(execution, "stored_seeds", lambda: [0, 3])
    calls.clear()
    execution.execute_notebooks([with_seeds], "paper", {"seed": 7})
    assert calls == [{"preset": "paper", "seed": 7, "seeds": [0, 3, 7]}]


def test_the_report_imports_no_torch():
    """Building the report reads notebooks, claim records and provenance: no torch needed."""
    check = "import sys, shared.report; assert 'torch' not in sys.modules, 'shared.report imports torch'"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_quarto_config_embeds_and_includes_are_consistent(site):
    """_quarto.yml renders the pages that exist and generates the includes before rendering; every
    embed in the generated includes names a notebook cell that has a label, a caption and a figure."""
    import yaml
    from shared import frontpage
    config = yaml.safe_load(report.QUARTO_CONFIG.read_text())
    assert config["project"]["pre-render"].startswith("python -m shared.report --includes")
    assert {"index.qmd", "claims.qmd"} <= set(config["project"]["render"])
    embeds = [m for f in (site["tmp"] / "_generated").glob("*.md") for m in frontpage.EMBED.finditer(f.read_text())]
    assert len(embeds) > 10
    for match in embeds:
        labels = dict(frontpage.figure_cells(ROOT / match[1]))
        assert match[2] in labels and labels[match[2]], f"{match[0]} names no captioned figure cell"
    assert {h.label for h in frontpage.HEADLINES} <= {m[2] for m in embeds}


def test_every_quoted_claim_is_found_in_the_saved_claims():
    """The front page quotes claims by key (the headline captions, the scorecard's rows): each key
    must name a claim its notebook saved, so that a renamed claim fails here instead of silently
    dropping a caption."""
    from shared import frontpage
    notebooks = {nb.item: nb for nb in map(report.read_notebook, sorted((ROOT / "notebooks").glob("*.ipynb")))}
    quoted = [(h.item, h.key) for h in frontpage.HEADLINES] + list(frontpage.SCORECARD_CLAIMS.items())
    for item, key in quoted:
        assert key in [c.key for c in notebooks[item].claims or []], f"{item}: {key!r}"


def test_the_front_page_names_figure_1_without_bn_whichever_way_it_ends():
    from shared import frontpage
    from shared.claims import Claim
    claims = [Claim("final_test_acc_no_bn_lr_0_0001", "Final test accuracy, no BN lr 0.0001", "82.0%", "10.2%",
                    "not judged", "cpu preset: this claim needs the paper preset"),
              Claim("no_bn_leaves_plateau", "leaves the plateau", "82.0 %", "seed 0: epoch 41", "yes")]
    text = frontpage.fig1_without_bn(claims)
    assert text.startswith("**Figure 1 without BN at 1e-4.**") and "82.0%" in text and "10.2%" in text
    assert "seed 0: epoch 41 (yes)" in text
    assert "not saved yet" in frontpage.fig1_without_bn(claims[:1])
