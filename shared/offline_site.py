"""The offline site, for a machine without Quarto: the same sources (index.qmd, claims.qmd, the
executed notebooks) as standalone HTML pages through nbconvert, which open from the file system.

The `_generated/` includes are expanded into the pages, Quarto's `{{< embed >}}` shortcodes become
the embedded cells' stored images with their captions (shared.frontpage.resolve_embeds), and links
to `.qmd` pages point at their `.html` files, as Quarto would write them.
"""

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml

from . import frontpage
from .claims import Claim


@dataclass
class Notebook:
    """What the report shows of one executed notebook."""
    path: Path
    title: str
    item: str | None       # the figure it reproduces (an id of shared.figures.FIGURES)
    preset: str            # the preset it was last executed with
    executed: str | None   # the date of that execution (papermill's record), if any
    figures: list[Path]    # its saved figures in figures/ (PNG), for its preset
    claims: list[Claim] | None  # its closing claims (the file it saved beside its figures), if any

    @property
    def page(self) -> str:
        """The notebook's page in the site, relative to the site root."""
        return f"notebooks/{self.path.stem}.html"


def html_page(cells: list, title: str, embed_images: bool) -> str:
    """A standalone HTML page of markdown and executed code cells, through nbconvert's lab
    template (its markdown renderer, tables and styles), code hidden."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=embed_images)
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"title": title})
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


def page_markdown(page: Path, includes: dict[str, str]) -> tuple[dict, str]:
    """The front matter and markdown of a `.qmd` page, its `_generated/` includes expanded and
    Pandoc's attributes on figures (`{#fig-...}`, for Quarto's cross-references) dropped."""
    _, front, text = page.read_text().split("---\n", 2)
    for name, include in includes.items():
        text = text.replace(f"{{{{< include _generated/{name} >}}}}", include)
        for line in include.splitlines():
            if line.startswith("![") and line.endswith("}") and "){#" in line:
                text = text.replace(line, line[:line.rindex("{")])
    return yaml.safe_load(front), text


@dataclass(frozen=True)
class SiteSources:
    """What the site is made of besides the notebooks: the front page, the claims page, the
    Quarto configuration (its title) and the figures."""
    index: Path
    claims_page: Path
    quarto_config: Path
    figures_dir: Path


def build_offline(out_dir: Path, notebooks: list[Notebook], includes: dict[str, str],
                  sources: SiteSources) -> list[Path]:
    """Write the offline site into `out_dir`; return its pages (index first). The index links
    every notebook's page (through `_generated/notebooks.md`) and the claims page, each page links
    back; the index's embedded notebook figures become images of the cells' stored outputs."""
    index, claims_page, figures_dir = sources.index, sources.claims_page, sources.figures_dir
    site_title = yaml.safe_load(sources.quarto_config.read_text())["website"]["title"]
    (out_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    (out_dir / "figures").mkdir(exist_ok=True)
    for figure in figures_dir.glob("*.png"):
        shutil.copy2(figure, out_dir / "figures" / figure.name)
    note = (f"*{site_title}: offline view (Quarto is not installed). "
            "[Install Quarto](https://quarto.org/docs/get-started/) for the full site.*\n\n")
    pages = []
    for page in (index, claims_page):
        if not page.exists():
            continue
        front, text = page_markdown(page, includes)
        text = frontpage.resolve_embeds(text, page.parent, out_dir)
        text = re.sub(r"\]\(([\w-]+)\.qmd\)", r"](\1.html)", text)  # Quarto turns links to pages into .html
        header = f"# {front['title']}\n\n" + (f"*{front['subtitle']}*\n\n" if front.get("subtitle") else "")
        target = out_dir / f"{page.stem}.html"
        target.write_text(html_page([nbformat.v4.new_markdown_cell(header + note + text)], front["title"],
                                    embed_images=False))
        pages.append(target)
    for nb in notebooks:
        shutil.copy2(nb.path, out_dir / "notebooks" / nb.path.name)
        back = nbformat.v4.new_markdown_cell(
            f"[← {site_title}](../index.html) · offline view: the notebook's text and outputs, code "
            f"hidden; the notebook itself: [{nb.path.name}]({nb.path.name})")
        cells = [back, nbformat.v4.new_markdown_cell(f"# {nb.title}"),
                 *(c for c in nbformat.read(nb.path, as_version=4).cells if c.cell_type != "raw")]
        (out_dir / nb.page).write_text(html_page(cells, nb.title, embed_images=True))
    return pages + [out_dir / nb.page for nb in notebooks]
