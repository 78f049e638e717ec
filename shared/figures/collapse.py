"""Why ResNet-110 without BN stops learning at lr 1e-4: its first updates, step by step.

The question (issue: Figure 1 on the full training set, part 1). The paper's Fig 1 trains
ResNet-110 without BN at lr 1e-4 to 82.0 % test accuracy, beside BN's 81.3 % at the same rate. Our
network does not learn there: within its first epoch its loss falls from 164 (the untrained
network's, its logits in the hundreds) to 2.30, the loss of one constant prediction, and it stays
at chance for every candidate network of notebook 10. This module follows those first steps.

What is recorded, for each of the first `steps` updates of the paper's protocol (SGD, momentum 0.9,
weight decay 5e-4, batch 128, the seed's data order), on the mini-batch being trained on:

- the loss and the logits' spread across images and across classes (`shared.health.logit_spread`);
- the features that reach the classifier (the global average pool's output, 64 numbers per image):
  their mean norm, and their *input share*, the fraction of their energy that differs between images
  (sum over images of |h_i - mean h|^2 over sum of |h_i|^2): 0 when every image gets the same
  features. The paper's Table 1 and Fig 6 describe the untrained network without BN as nearly
  input-independent; this number follows that through training;
- the gradient's global norm and the size of each update relative to the weights, for the
  classifier and for the whole network;
- every `health_every` steps, `shared.health.health` on a fixed batch of test images: dead ReLUs
  per stage and the logits' spread, in inference mode.

Ablations, each a config field, each departing from the paper's protocol on purpose: no momentum,
a smaller rate, the gradient's norm clipped, a linear warm-up of the rate. None is a default; they
test which part of the first updates does the damage.
"""

import argparse
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..cli import seed_arg
from ..config import ProbeConfig, network_fields
from ..data import Cifar10, TrainLoader, eval_batches
from ..health import health, input_share, logit_spread
from ..models import build_model
from ..compute import RunContext, config_runs, measured
from .protocol import SMOKE_NETWORK, Measurement

EXPERIMENT = "collapse"


@dataclass(frozen=True)
class CollapseConfig(ProbeConfig):
    """The first `steps` updates of one network (the project's default ResNet-110 unless a network
    field says otherwise), traced step by step."""
    bn: bool = False
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    steps: int = 200
    clip_norm: float | None = None   # ablation: the gradient's global norm clipped to this
    warmup_steps: int = 0            # ablation: the rate rises linearly from lr/warmup_steps to lr
    health_every: int = 20           # steps between health measurements (step 0 and the last included)
    health_images: int = 500         # fixed test images that health is measured on

    def __post_init__(self):
        super().__post_init__()  # the POSITIVE fields (lr, steps, health_every, health_images) included
        for name in ("momentum", "weight_decay", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"CollapseConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"CollapseConfig.clip_norm must be positive or None, got {self.clip_norm!r}")


# The variants compared, by name: the paper's protocol without BN and with BN, and the ablations.
VARIANTS: dict[str, dict] = {
    "no BN, paper protocol": {},
    "no BN, no momentum": dict(momentum=0.0),
    "no BN, lr 1e-5": dict(lr=1e-5),
    "no BN, gradient norm clipped to 1": dict(clip_norm=1.0),
    "no BN, warm-up over 1 epoch": dict(warmup_steps=391),
    "BN, paper protocol": dict(bn=True),
}


def variant_configs(preset: str = "paper", **overrides) -> dict[str, CollapseConfig]:
    """Each of VARIANTS as a config of the probe preset `preset` (with `overrides` on every one)."""
    return {name: MEASUREMENT.config(preset, **{**fields, **overrides}) for name, fields in VARIANTS.items()}


def _features(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, the classifier's input) of `model` on `x`, one forward pass."""
    seen = {}
    handle = model.fc.register_forward_pre_hook(lambda _m, inputs: seen.setdefault("h", inputs[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, seen["h"].detach()


def _rate(cfg: CollapseConfig, step: int) -> float:
    """The rate of 0-based update `step`: lr, or during warm-up lr * (step + 1) / warmup_steps."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr


def measure(cfg: CollapseConfig, data: Cifar10, seed: int) -> dict:
    """Trace the first `cfg.steps` updates (see the module docstring); one row per step."""
    device = data.train_x.device
    torch.manual_seed(seed)
    model = build_model(bn=cfg.bn, **network_fields(cfg)).to(device).train()
    params = list(model.parameters())
    fc = next(i for i, p in enumerate(params) if p is model.fc.weight)
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loader = TrainLoader(data.train_x, data.train_y, data.mean, data.std, cfg.batch_size, seed)
    probe_x, _ = next(eval_batches(data.test_x[:cfg.health_images], data.test_y[:cfg.health_images],
                                   data.mean, data.std, cfg.health_images))
    rows, healths = [], {}
    batches = (b for epoch in range(cfg.steps) for b in loader.epoch(epoch))  # more than one epoch if asked
    for step, (x, y) in zip(range(cfg.steps + 1), batches):
        if step % cfg.health_every == 0 or step == cfg.steps:
            healths[step] = health(model, probe_x)[0]
        logits, h = _features(model, x)
        loss = F.cross_entropy(logits, y)
        row = {"step": step, "loss": loss.item(), **{f"logit_spread_{k}": v for k, v in logit_spread(logits.detach()).items()},
               "feature_norm": h.double().norm(dim=1).mean().item(), "feature_input_share": input_share(h)}
        rows.append(row)
        if step == cfg.steps or not np.isfinite(row["loss"]):
            break  # the last row is measured, not trained on; a non-finite loss ends the trace
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in params]
        row["grad_norm"] = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
        if cfg.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        before = [p.detach().clone() for p in params]
        for group in optimizer.param_groups:
            group["lr"] = _rate(cfg, step)
        optimizer.step()
        row["update_rel"] = _relative_change(before, params)
        row["fc_update_rel"] = _relative_change([before[fc]], [params[fc]])
    return {"rows": rows, "health": {str(k): v for k, v in healths.items()}}


# the config under each preset (PROBE_PRESETS): the paper's setup, and seconds on a CPU
PRESETS = {"paper": CollapseConfig(), "smoke": CollapseConfig(**SMOKE_NETWORK, steps=6, health_every=3, health_images=32)}
MEASUREMENT = Measurement(EXPERIMENT, PRESETS, measure)


def _relative_change(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    """||after - before|| / ||before|| over all the tensors together."""
    num = sum((a.detach().double() - b.double()).pow(2).sum() for a, b in zip(after, before))
    den = sum(b.double().pow(2).sum() for b in before)
    return (num / den).sqrt().item()


# ---- tables -------------------------------------------------------------------------------------

def traces(preset: str = "paper", seeds=None, compute: bool = False, data_dir=None) -> dict[str, list[dict]]:
    """Variant name -> its stored runs (computed first where `compute`)."""
    out = {}
    for name, cfg in variant_configs(preset).items():
        if compute:
            for seed in seeds or [0]:
                measured(EXPERIMENT, cfg, seed, measure, RunContext(data_dir=data_dir))
        out[name] = config_runs(EXPERIMENT, cfg, seeds)
    return out


def frame(run_: dict) -> pd.DataFrame:
    """One stored trace as a table, one row per step."""
    return pd.DataFrame(run_.result["rows"]).set_index("step")


# The steps at which the summary reads a trace (and its last)
SUMMARY_STEPS = (0, 1, 10)


def summary_table(found: dict[str, list[dict]]) -> pd.DataFrame:
    """Per variant and seed: the loss and the features' norm at SUMMARY_STEPS and at the trace's
    last step; at the last step the logits' spread across images, the features' input share, the
    gradient's norm and the dead ReLUs of the last stage."""
    rows = []
    for name, runs in found.items():
        for r in runs:
            t = frame(r)
            last = t.index[-1]
            row = {"variant": name, "seed": r.provenance["seed"]}
            for s in (*SUMMARY_STEPS, last):
                if s in t.index:
                    suffix = "end" if s == last else f"step {s}"
                    row[f"loss, {suffix}"] = t.loc[s, "loss"]
                    row[f"features' norm, {suffix}"] = t.loc[s, "feature_norm"]
            row["logits' spread, end"] = t.loc[last, "logit_spread_across_images"]
            row["features' input share, end"] = t.loc[last, "feature_input_share"]
            row["gradient's norm, end"] = t["grad_norm"].dropna().iloc[-1]
            end = r.result["health"].get(str(last))
            row["dead ReLUs in stage 3, end"] = end["dead_relu"]["stage3"] if end else np.nan
            row["updates"] = int(last)
            rows.append(row)
    return pd.DataFrame(rows).set_index(["variant", "seed"])


def findings(found: dict[str, list[dict]]) -> list[str]:
    """The trace in sentences, with its numbers (seed 0, or the first seed stored): what the first
    update and the ones after it do to the network without BN, against BN, and what each ablation
    changes by the last update traced."""
    first = {name: frame(runs[0]) for name, runs in found.items() if runs}
    paper, bn = first.get("no BN, paper protocol"), first.get("BN, paper protocol")
    if paper is None:
        return ["No trace of the paper's protocol without BN is stored yet."]
    end = paper.index[-1]
    f, g = paper["feature_norm"], paper["grad_norm"]
    lines = [
        f"At initialisation without BN the features reaching the classifier have norm {f[0]:.0f}, and "
        f"{paper.loc[0, 'feature_input_share']:.1%} of their energy differs between images; the loss is "
        f"{paper.loc[0, 'loss']:.0f} and the gradient's norm {g[0]:.0f}.",
        f"The first update changes the weights by {paper.loc[0, 'update_rel']:.2%} of their norm and shrinks the "
        f"features {f[0] / f[1]:.0f}-fold (loss {paper.loc[1, 'loss']:.1f}).",
        f"After {end} updates the features' norm is {f[end]:.2g} ({f[0] / f[end]:.0f}-fold below the start), the "
        f"logits' spread across images {paper.loc[end, 'logit_spread_across_images']:.3f}, the gradient's norm "
        f"{g[end - 1]:.2g} ({g[0] / g[end - 1]:.0f}-fold below the start) and an update changes the weights by "
        f"{paper.loc[end - 1, 'update_rel']:.1e} of their norm.",
    ]
    if bn is not None:
        lines.append(f"With BN, over the same {bn.index[-1]} updates, the features' norm stays between "
                     f"{bn['feature_norm'].min():.0f} and {bn['feature_norm'].max():.0f}, the logits' spread ends "
                     f"at {bn.loc[bn.index[-1], 'logit_spread_across_images']:.2f}, the gradient's norm at "
                     f"{bn['grad_norm'].iloc[-2]:.0f}, and an update changes the weights by "
                     f"{bn['update_rel'].iloc[-2]:.1e} of their norm.")
    for name, t in first.items():
        if name.startswith("no BN") and name != "no BN, paper protocol":
            last = t.index[-1]
            lines.append(f"{name}: after {last} updates features' norm {t.loc[last, 'feature_norm']:.2g}, logits' "
                         f"spread {t.loc[last, 'logit_spread_across_images']:.3f}, gradient's norm "
                         f"{t['grad_norm'].iloc[-2]:.2g}, loss {t.loc[last, 'loss']:.2f}.")
    return lines


# ---- plots --------------------------------------------------------------------------------------

PANELS = (("loss", "mini-batch loss"), ("feature_norm", "features' norm (classifier input)"),
          ("logit_spread_across_images", "logits' spread across images"), ("grad_norm", "gradient's norm"))


def plot(found: dict[str, list[dict]], axes) -> None:
    """One panel per PANELS entry against the update (log axis, update k drawn at k + 1, so the
    first updates show), one curve per variant (seed 0, or the first seed stored); BN dashed."""
    for (key, label), ax in zip(PANELS, axes):
        for i, (name, runs) in enumerate(found.items()):
            if not runs:
                continue
            t = frame(runs[0])[key].dropna()
            ax.plot(t.index + 1, t, label=name, color=f"C{i}", lw=1.2, ls="--" if name.startswith("BN") else "-")
        ax.set(xlabel="update + 1", ylabel=label, xscale="log", yscale="log")
        ax.grid(alpha=0.3)


def main(argv: list[str] | None = None) -> None:
    """Trace every variant (VARIANTS) for the seeds given, storing what is missing, e.g.
    `python -m shared.figures.collapse --seeds 0 1`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--preset", default="paper", choices=["paper", "smoke"])
    parser.add_argument("--seeds", type=seed_arg, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    cfgs = variant_configs(args.preset)
    for seed in args.seeds:
        for name in args.variants:
            start = time.perf_counter()
            rows = run(cfgs[name], seed, args.data_dir).result["rows"]
            print(f"{name} seed {seed}: loss {rows[0]['loss']:.3g} -> {rows[-1]['loss']:.3g} after "
                  f"{rows[-1]['step']} updates ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
