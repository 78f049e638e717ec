"""Is a network still alive? Dead ReLUs and collapsed logits, measured during training.

Without BN, a ResNet-110 trained at a small rate can stop learning in two ways that the loss alone
does not tell apart (the network question of notebook 10, and Fig 1's no-BN curve):

- **dead ReLUs**: a unit (a channel at one position) whose ReLU outputs zero on every image of a
  batch passes no gradient; a stage whose units are all dead cuts the network in two;
- **collapsed logits**: the network outputs (nearly) the same logits for every image, so the loss
  settles at the loss of a constant prediction (ln 10 = 2.303 for a uniform one) while the weights
  still move.

`health` measures both on one fixed batch of test images, in inference mode, for each of K runs
trained together: per stage (the stem and the three stages of a CIFAR ResNet) the fraction of the
units at the blocks' outputs (after their final ReLU) that are zero on every image, the spread
of the logits across images (the standard deviation over images, averaged over classes: 0 for a
collapsed network) beside the spread across classes of the mean logit, and the features that reach
the classifier (the global average pool's output): their mean norm and their input share, the
fraction of their energy that differs between images (0: every image gets the same features).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# The stages of a CIFAR ResNet whose ReLU outputs are measured, in forward order
STAGES = ("stem", "stage1", "stage2", "stage3")


def dead_fraction(activations: torch.Tensor, runs: int = 1) -> list[float]:
    """activations [B, K*C, ...] after a ReLU -> per run, the fraction of its C*... units that are
    zero on every one of the B images."""
    dead = (activations == 0).all(0)                     # [K*C, ...]
    return dead.unflatten(0, (runs, -1)).flatten(1).float().mean(1).tolist()


def logit_spread(logits: torch.Tensor) -> dict[str, float]:
    """logits [B, classes] -> "across_images": the standard deviation over images, averaged over
    classes (0: every image gets the same logits); "across_classes": the standard deviation over
    classes of the logits' mean over images (a constant prediction's own spread)."""
    logits = logits.double()
    return {"across_images": logits.std(0).mean().item(),
            "across_classes": logits.mean(0).std().item()}


def input_share(h: torch.Tensor) -> float:
    """h [B, D] -> the fraction of its energy that differs between images (0: input-independent):
    the sum over images of |h_i - mean h|^2 over the sum of |h_i|^2."""
    h = h.double()
    return ((h - h.mean(0)).pow(2).sum() / h.pow(2).sum().clamp_min(1e-300)).item()


def feature_stats(h: torch.Tensor) -> dict[str, float]:
    """h [B, D], the classifier's input -> "norm": its mean norm over images, "input_share"."""
    return {"norm": h.double().norm(dim=1).mean().item(), "input_share": input_share(h)}


def _stage_modules(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The modules whose outputs are the ReLU outputs of each stage: the stem's BN (or the
    identity that replaced it; a ReLU follows it) and every block of the three stages."""
    return {"stem": [model.bn1], "stage1": list(model.layer1), "stage2": list(model.layer2),
            "stage3": list(model.layer3)}


@torch.no_grad()
def health(model: nn.Module, x: torch.Tensor, runs: int = 1) -> list[dict]:
    """One dict per run of `model` (a CIFAR ResNet, K = `runs` stacked): "dead_relu" {stage:
    fraction of dead units, averaged over the stage's blocks}, "logit_spread" (`logit_spread`),
    "features" (`feature_stats` of the classifier's input).
    `x` [B, K*3, 32, 32]: run k's images in channels 3k..3k+2."""
    was_training = model.training
    model.eval()
    found: dict[str, list[list[float]]] = {stage: [] for stage in STAGES}
    handles = [model.fc.register_forward_pre_hook(lambda _m, inputs: found.setdefault("fc_input", inputs[0]))]
    for stage, modules in _stage_modules(model).items():
        post = F.relu if stage == "stem" else (lambda out: out)  # blocks end with their ReLU
        for module in modules:
            handles.append(module.register_forward_hook(
                lambda _m, _i, out, stage=stage, post=post: found[stage].append(dead_fraction(post(out), runs))))
    try:
        logits = model(x).float()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    logits = logits[:, None] if runs == 1 else logits  # [B, K, classes]
    features = found["fc_input"].float().flatten(1).unflatten(1, (runs, -1))  # [B, K, 64]
    return [{"dead_relu": {stage: sum(block[k] for block in found[stage]) / len(found[stage])
                           for stage in STAGES},
             "logit_spread": logit_spread(logits[:, k]),
             "features": feature_stats(features[:, k])} for k in range(runs)]
