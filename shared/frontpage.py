"""The report's front page as a blog post: the story in three sentences, the headline figures each
beside what the paper's panel shows, and a scorecard of one row per figure. Every number on it
comes from the claim records the notebooks save (`shared.claims`), through the include files that
`shared.report` generates; `index.qmd` itself holds prose only (tests/test_report.py checks that).

The headline figures are Quarto embeds of the executed notebooks' cells, by cell label
(`{{< embed notebooks/NB.ipynb#LABEL >}}`); the offline site resolves them to the cells' stored PNG
outputs (`resolve_embeds`).
"""

import base64
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .claims import NO, NOT_JUDGED, PARTLY, YES, Claim, verdict_counts


@dataclass(frozen=True)
class Headline:
    """A headline figure: a notebook cell's figure, what the paper's panel shows, and the claim
    whose numbers its caption gives."""
    notebook: str   # the notebook's file stem under notebooks/
    label: str      # the cell's Quarto label (`#| label: ...`)
    item: str       # the paper item (an id of shared.figures.FIGURES) whose claim the caption quotes
    key: str        # that claim's key (`shared.claims.Claim.key`)
    paper: str      # the paper's panel, described


HEADLINES = (
    Headline("01_fig1_accuracy", "fig-fig1-accuracy", "fig1", "bn_larger_rate_better",
             "The paper's Fig 1: train and test accuracy of ResNet-110 over its training. With BN, rate 0.1 "
             "ends highest; without BN only rate 1e-4 trains, and it ends beside BN's run at 1e-4."),
    Headline("01_fig1_accuracy", "fig-fig1-divergence", "fig1", "no_bn_diverges_at_0_1",
             "Not drawn in the paper, which says that without BN the larger rates diverge (\"not shown\")."),
    Headline("05_fig5_depth_profile", "fig-fig5-readings", "fig5", "ln_no_bn_means_grow",
             "The paper's Fig 5 (circles below): channel means and standard deviations against depth at "
             "initialisation, on an axis labelled \"Log\" without a base. Without BN they rise steadily with "
             "depth; with BN they stay flat."),
    Headline("02_fig2_gradients", "fig-fig2-gradients", "fig2", "no_bn_gradients_100x_larger",
             "The paper's Fig 2: the gradients of layer 55's weights at initialisation. With BN small and "
             "Gaussian; without BN heavy-tailed and about a hundred times larger."),
)

HEADLINE_LABELS = {h.label for h in HEADLINES}

# Per paper item, the key of the claim that the scorecard shows as its headline (else its first)
SCORECARD_CLAIMS = {
    "fig1": "bn_larger_rate_better", "fig2": "no_bn_gradients_100x_larger", "fig3": "bn_allows_larger_steps",
    "fig4": "deeper_layers_blow_up_more", "fig5": "ln_no_bn_means_grow", "fig6": "no_bn_one_class_first_batch",
    "fig7": "largest_singular_value_limit", "table1": "bn_two_orders_apart",
    "lr_sweep": "no_bn_rates_above_1e_4_diverge", "depth_ladder": "no_bn_stable_step_falls_with_depth",
    "normfree": "skipinit_trains_at_lr_0_1",
}


# Fig 1 without BN at 1e-4: its final accuracy, and whether the truncated schedule leaves the plateau
FIG1_NO_BN = ("final_test_acc_no_bn_lr_0_0001", "no_bn_leaves_plateau")


def find_claim(claims: list[Claim] | None, key: str) -> Claim | None:
    """The claim of `claims` whose key is `key`."""
    return next((c for c in claims or [] if c.key == key), None)


def verdict_text(claim: Claim) -> str:
    return f"{claim.verdict}: {claim.note}" if claim.note else claim.verdict


def counts_cell(claims: list[Claim]) -> str:
    """"yes / partly / no / not judged" counts, in that order."""
    counts = verdict_counts(claims)
    return " / ".join(str(counts.get(v, 0)) for v in (YES, PARTLY, NO, NOT_JUDGED))


def story_markdown(notebooks) -> str:
    """The question, the paper's answer and ours: the verdict counts over every claim, and the
    numbers of the headline figures' claims."""
    claims = [c for nb in notebooks for c in nb.claims or []]
    by_item = {nb.item: nb.claims for nb in notebooks if nb.claims}
    question = ("**The question.** What does batch normalisation (BN) do for a deep network, such as "
                "ResNet-110 trained on CIFAR-10?")
    answer = ("**The paper's answer.** BN's main benefit is that it lets the network train at large learning "
              "rates: without it, activations and gradients are heavy-tailed and explode with depth, so only "
              "tiny rates train.")
    if not claims:
        return "\n\n".join([question, answer, "**Our answer.** *No notebook has saved its claims yet.*"]) + "\n"
    counts = verdict_counts(claims)
    judged = len(claims) - counts.get(NOT_JUDGED, 0)
    ours = [f"**Our answer.** Of the {len(claims)} claims we test, {judged} can be judged here: "
            f"{counts.get(YES, 0)} hold, {counts.get(PARTLY, 0)} hold in direction but not in size, and "
            f"{counts.get(NO, 0)} do not; the other {counts.get(NOT_JUDGED, 0)} wait for the paper's training "
            "schedule or for runs not yet made."]
    for h in HEADLINES:
        claim = find_claim(by_item.get(h.item), h.key)
        if claim is not None and claim.verdict != NOT_JUDGED:
            ours.append(f"{claim.claim}: ours {claim.ours}, the paper {claim.paper} ({claim.verdict}).")
    return "\n\n".join([question, answer, " ".join(ours), fig1_without_bn(by_item.get("fig1"))]) + "\n"


def fig1_without_bn(claims: list[Claim] | None) -> str:
    """Figure 1 without BN at 1e-4, the one comparison of its central figure that the short
    schedule does not reproduce: the paper's number, ours, and what the truncated schedule shows."""
    final, left = (find_claim(claims, key) for key in FIG1_NO_BN)
    if final is None or left is None:
        return "**Figure 1 without BN at 1e-4.** *Its claims are not saved yet.*"
    return (f"**Figure 1 without BN at 1e-4.** The paper's ResNet-110 without BN ends at {final.paper} test "
            f"accuracy, beside BN's run at the same rate; ours ends at {final.ours} after Fig 1's compressed "
            f"schedule, near the loss of a constant guess. On the paper's own schedule truncated instead of "
            f"compressed (a constant 1e-4): {left.ours} ({verdict_text(left)}).")


def headline_markdown(notebooks) -> str:
    """Each headline figure: what the paper's panel shows, our figure (an embed of the notebook's
    cell) and a caption with our numbers, from the figure's claim."""
    by_item = {nb.item: nb for nb in notebooks}
    parts = []
    for h in HEADLINES:
        nb = by_item.get(h.item)
        if nb is None or nb.path.stem != h.notebook:
            parts.append(f"*{h.notebook}: not yet executed.*")
            continue
        claim = find_claim(nb.claims, h.key)
        caption = (f"{claim.claim}: ours {claim.ours}; the paper {claim.paper} ({verdict_text(claim)})."
                   if claim else "*The notebook has not saved this claim yet.*")
        parts += [f"**{h.paper}**", f"{{{{< embed notebooks/{h.notebook}.ipynb#{h.label} >}}}}",
                  f"*Ours, from [{nb.title}]({nb.page}):* {caption}"]
    return "\n\n".join(parts) + "\n"


def scorecard_markdown(notebooks, item_label) -> str:
    """One row per paper item with claims: its page, its headline claim with the paper's number
    and ours, and the counts of its verdicts."""
    rows = []
    for nb in notebooks:
        if not nb.claims:
            continue
        claim = find_claim(nb.claims, SCORECARD_CLAIMS.get(nb.item, "")) or nb.claims[0]
        rows.append([f"[{item_label(nb.item)}]({nb.page})", claim.claim, claim.paper, claim.ours,
                     claim.verdict, counts_cell(nb.claims)])
    if not rows:
        return "*No notebook has saved its claims yet.*\n"
    header = ["figure", "headline claim", "paper", "ours", "verdict", "all its claims: yes / partly / no / not judged"]
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in line) + " |" for line in lines) + "\n"


EMBED = re.compile(r"\{\{< embed (\S+?\.ipynb)#(\S+?) >\}\}")


def figure_cells(notebook: Path) -> list[tuple[str, str]]:
    """(label, caption) of each cell of an executed notebook that has a Quarto label, a figure
    caption (`#| fig-cap:`) and a stored PNG output: what can be embedded by label."""
    found = []
    for cell in nbformat.read(notebook, as_version=4).cells:
        label = re.search(r"^#\| label: (\S+)\s*$", cell.source, re.M) if cell.cell_type == "code" else None
        caption = re.search(r'^#\| fig-cap: "(.*)"\s*$', cell.source, re.M) if label else None
        if caption and any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            found.append((label[1], caption[1].replace('\\"', '"')))
    return found


def cell_png(notebook: Path, label: str) -> tuple[bytes, str] | None:
    """The first PNG output of the cell labelled `label` in an executed notebook, and the cell's
    caption (`#| fig-cap:`, else the label), or None."""
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and re.search(rf"^#\| label: {re.escape(label)}\s*$", cell.source, re.M):
            caption = re.search(r'^#\| fig-cap: "(.*)"\s*$', cell.source, re.M)
            for output in cell.get("outputs", []):
                if "image/png" in output.get("data", {}):
                    return (base64.b64decode(output["data"]["image/png"]),
                            caption[1].replace('\\"', '"') if caption else label)
    return None


def resolve_embeds(text: str, root: Path, out_dir: Path) -> str:
    """`text` with each Quarto embed replaced by an image of the cell's stored PNG output, written
    to out_dir/figures/embed-<label>.png, and the cell's caption below it (the offline site has no
    Quarto to embed with)."""
    def image(match: re.Match) -> str:
        found = cell_png(root / match[1], match[2])
        if found is None:
            return f"*No stored figure for {match[1]}#{match[2]}.*"
        png, caption = found
        target = out_dir / "figures" / f"embed-{match[2]}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png)
        return f"![{caption}](figures/{target.name})\n\n*{caption}*"
    return EMBED.sub(image, text)
