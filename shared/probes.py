"""Measurements behind the paper's figures, as functions of a network and a mini-batch.

Each function takes a model (in whatever state the caller prepared) and tensors, and returns
tensors; the figure modules' measurements (`shared.figures`) decide which model, which batch and what to
store. Section and figure numbers refer to Bjorck et al. (2018).
"""

import copy
import math
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .models import BasicBlock, layer, weight_layers


def layer_weight_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Gradient of the mini-batch cross-entropy w.r.t. the weights of layer `k` (Fig 2)."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return layer(model, k).weight.grad.detach().clone()


def summary_stats(values: torch.Tensor) -> dict:
    """Std, max |value| and excess kurtosis (0 for a Gaussian; large for heavy tails)."""
    v = values.detach().double().flatten()
    centred = v - v.mean()
    var = centred.square().mean()
    return {"mean": v.mean().item(), "std": var.sqrt().item(), "max_abs": v.abs().max().item(),
            "excess_kurtosis": (centred.pow(4).mean() / var.square() - 3).item()}


def histogram(values: torch.Tensor, bins: int = 201) -> dict:
    """Counts of `values` in `bins` equal bins over the symmetric range +-max|value|."""
    v = values.detach().double().flatten().cpu()
    edge = v.abs().max().item() or 1.0
    counts = torch.histc(v, bins=bins, min=-edge, max=edge)
    return {"edges": torch.linspace(-edge, edge, bins + 1).tolist(), "counts": counts.long().tolist()}


@contextmanager
def recorded_outputs(model: nn.Module, ks: list[int]):
    """Record the output of each layer in `ks` during forward passes: yields {k: tensor}. The
    outputs are copies: in-place operations after the layer (torchvision's ReLU(inplace=True),
    `out += identity`) would otherwise overwrite what was recorded."""
    outputs = {}
    hooks = [layer(model, k).register_forward_hook(
        lambda m, i, o, k=k: outputs.__setitem__(k, o.detach().clone())) for k in ks]
    try:
        yield outputs
    finally:
        for h in hooks:
            h.remove()


def channel_moments(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of a layer output over batch and positions (Fig 4, 5).

    output: [B, C, H, W] (or [B, C] for the classifier); returns two float64 tensors [C].
    """
    o = output.double().transpose(0, 1).flatten(1)  # [C, B*H*W]
    return o.mean(1), o.std(1, correction=0)


def depth_profile(model: nn.Module, x: torch.Tensor, ks: list[int], channels: str = "all") -> dict[int, dict]:
    """Fig 5: for each layer k, the channel means and stds of its output, averaged over channels
    (`channels` "all") or of channel 0 alone ("first", as the blog this project grew from logged).

    Returns {k: {"abs_mean": mean over channels of |channel mean|, "std": mean channel std}}.
    """
    with torch.no_grad(), recorded_outputs(model, ks) as outputs:
        model(x)
    profile = {}
    for k in ks:
        means, stds = channel_moments(outputs[k])
        if channels == "first":
            means, stds = means[:1], stds[:1]
        profile[k] = {"abs_mean": means.abs().mean().item(), "std": stds.mean().item()}
    return profile


def logit_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fig 6: d loss / d logits for the mean cross-entropy of the batch, [B, classes]."""
    with torch.no_grad():
        probs = model(x).double().softmax(1)
    return (probs - F.one_hot(y, probs.shape[1])) / len(y)


def dominant_column(grads: torch.Tensor) -> tuple[int, float]:
    """The column most often holding a row's largest (positive) gradient, and that fraction."""
    columns = grads.argmax(1)
    counts = torch.bincount(columns, minlength=grads.shape[1])
    return int(counts.argmax()), counts.max().item() / len(columns)


def per_example_contributions(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                              k: int) -> torch.Tensor:
    """Table 1: each example's term in the mini-batch gradient of conv layer `k`'s kernel.

    dL/dW = sum_b delta_b (x) input_b, with delta_b the gradient at the layer's output for
    example b (coupled to the other examples through BN, if there is BN). Returns [B, *W.shape];
    summing over B gives the ordinary gradient.
    """
    conv = layer(model, k)
    saved = {}

    def keep_input(m, inputs, output):
        saved["input"] = inputs[0].detach().clone()  # later in-place ops must not change it
        output.register_hook(lambda g: saved.__setitem__("delta", g.detach()))

    hook = conv.register_forward_hook(keep_input)
    try:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    finally:
        hook.remove()
    cols = F.unfold(saved["input"], conv.kernel_size, conv.dilation, conv.padding, conv.stride)
    delta = saved["delta"].flatten(2)                # [B, out, L]
    per_example = torch.bmm(delta, cols.transpose(1, 2))  # [B, out, in*kh*kw]
    return per_example.view(len(x), *conv.weight.shape)


def contribution_agreement(per_example: torch.Tensor) -> dict:
    """Table 1's two numbers, averaged over the kernel's entries: sum_b |g_b| and |sum_b g_b|.

    "ratio" is the ratio of those averages; "entry_ratio_median" and "entry_ratio_mean" the median
    and the mean over the entries of each entry's own ratio (entries whose sum is exactly 0 left
    out); "norm_ratio" treats the kernel as one vector: sum_b ||g_b|| / ||sum_b g_b|| (Euclidean);
    "entries" is the kernel's size, to pool layers. The paper does not say which it reports, and
    with BN they differ several-fold.
    """
    sum_abs = per_example.abs().sum(0).double().flatten()
    abs_sum = per_example.sum(0).abs().double().flatten()
    defined = abs_sum > 0
    entry_ratios = sum_abs[defined] / abs_sum[defined]
    flat = per_example.double().flatten(1)
    return {"sum_abs": sum_abs.mean().item(), "abs_sum": abs_sum.mean().item(),
            "ratio": (sum_abs.mean() / abs_sum.mean()).item(),
            "entry_ratio_median": entry_ratios.median().item(),
            "entry_ratio_mean": entry_ratios.mean().item(),
            "norm_ratio": (flat.norm(dim=1).sum() / flat.sum(0).norm()).item(),
            "entries": sum_abs.numel()}


def step_sizes(n: int, low: float, high: float) -> torch.Tensor:
    """Fig 3's step sizes: n values log-spaced from 10^low to 10^high (RelativeLossConfig's sizes,
    size_low, size_high: no default here, so that every stored run's sizes are in its config)."""
    return torch.logspace(low, high, n, dtype=torch.float64)


# A step direction from the weights and their mini-batch gradients: d = direction(params, grads)
Direction = Callable[[list[torch.Tensor], list[torch.Tensor]], list[torch.Tensor]]


def sgd_direction(params: list[torch.Tensor], grads: list[torch.Tensor],
                  buffers: list[torch.Tensor | None], momentum: float, weight_decay: float) -> list[torch.Tensor]:
    """The direction d in which `torch.optim.SGD` (no dampening, no Nesterov) moves the weights
    per unit rate, theta <- theta - lr * d: d = momentum * b + (g + weight_decay * theta) with b the
    parameter's momentum buffer, or g + weight_decay * theta before the first step (b is None)."""
    directions = []
    for p, g, b in zip(params, grads, buffers):
        d = g + weight_decay * p.detach()
        directions.append(d if b is None or momentum == 0 else momentum * b + d)
    return directions


@contextmanager
def gradient_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, direction: Direction | None = None):
    """Compute the mini-batch loss and gradient g at the current weights theta; yield
    (loss, move), where move(t) sets the weights to theta - t * d, with d = g or, if given,
    `direction(params, grads)`. On exit the model is restored exactly, BN running statistics
    included (forward passes in train mode update them)."""
    state = copy.deepcopy(model.state_dict())
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    start = [p.detach().clone() for p in params]
    grads = [p.grad.detach().clone() for p in params]
    steps = grads if direction is None else direction(params, grads)

    def move(t: float) -> None:
        for p, p0, d in zip(params, start, steps):
            p.copy_(p0 - t * d)

    try:
        with torch.no_grad():
            yield loss.detach(), move
    finally:
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)


def relative_loss_along_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                                 sizes: torch.Tensor, direction: Direction | None = None) -> torch.Tensor:
    """Fig 3: L(theta - s g) / L(theta) on one mini-batch, for each step size s.

    The step is a plain gradient step along g = grad L(theta) of the same mini-batch (no
    momentum, no weight decay) or, with `direction`, along that direction (e.g. `sgd_direction`:
    the optimiser's step per unit rate); the loss is measured as training sees it (train mode: BN
    uses the batch's statistics). The model is left exactly as it was.
    """
    ratios = []
    with gradient_direction(model, x, y, direction) as (loss0, move):
        for s in sizes.tolist():
            move(s)
            ratios.append(F.cross_entropy(model(x), y) / loss0)
    return torch.stack(ratios).double().cpu()


def first_exceeding(sizes: torch.Tensor, values: torch.Tensor, threshold: float) -> float | None:
    """The smallest size whose value exceeds `threshold` (or is not finite), or None."""
    bad = ~torch.isfinite(values) | (values > threshold)
    return sizes[bad][0].item() if bad.any() else None


def moments_along_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float,
                         ks: list[int], fractions: torch.Tensor) -> dict[int, dict]:
    """Fig 4: channel means and variances of layers `ks` as the SGD update -lr * g is applied.

    For each fraction t the weights are theta - t * lr * g (g: the mini-batch gradient at theta)
    and a forward pass on the same batch records the layers' outputs. Returns
    {k: {"means": [T, C], "variances": [T, C]}}; the model is left exactly as it was.
    """
    rows = {k: ([], []) for k in ks}
    with gradient_direction(model, x, y) as (_, move), recorded_outputs(model, ks) as outputs:
        for t in fractions.tolist():
            move(t * lr)
            model(x)
            for k in ks:
                means, stds = channel_moments(outputs[k])
                rows[k][0].append(means)
                rows[k][1].append(stds.square())
    return {k: {"means": torch.stack(m), "variances": torch.stack(v)} for k, (m, v) in rows.items()}


def gaussian_product_singular_values(n: int, m: int, generator: torch.Generator) -> torch.Tensor:
    """Fig 7: singular values of a product of `m` independent n x n matrices with N(0, 1/n) entries."""
    product = torch.eye(n, dtype=torch.float64)
    for _ in range(m):
        product = torch.randn(n, n, generator=generator, dtype=torch.float64) / math.sqrt(n) @ product
    return torch.linalg.svdvals(product)


def largest_singular_value_limit(m: int) -> float:
    """The limit of the largest singular value of such a product: sqrt((m+1)^(m+1) / m^m)."""
    return math.sqrt((m + 1) ** (m + 1) / m ** m)


def product_singular_value_law(m: int, points: int = 200_001):
    """The large-N law of the singular values of a product of `m` Gaussian matrices (Fig 7).

    The squared singular values x follow the Fuss-Catalan density, parametrised by phi in
    (0, pi/(m+1)): x = sin^(m+1)((m+1)phi) / (sin(phi) sin^m(m phi)) and
    rho(x) = sin^2(phi) sin^(m-1)(m phi) / (pi sin^m((m+1)phi)); a singular value s = sqrt(x) has
    density 2 s rho(s^2). Returns numpy arrays (s increasing, its density, its cumulative distribution).
    """
    phi = np.linspace(0, np.pi / (m + 1), points)[1:-1]
    x = np.sin((m + 1) * phi) ** (m + 1) / (np.sin(phi) * np.sin(m * phi) ** m)
    rho = np.sin(phi) ** 2 * np.sin(m * phi) ** (m - 1) / (np.pi * np.sin((m + 1) * phi) ** m)
    mass = rho * np.abs(np.gradient(x, phi))  # density per unit of phi: smooth where rho diverges
    s, reverse = np.sqrt(x[::-1]), slice(None, None, -1)
    cdf = np.concatenate([[0], np.cumsum(0.5 * (mass[reverse][1:] + mass[reverse][:-1]) * np.diff(phi))])
    return s, 2 * s * rho[reverse], cdf / cdf[-1]


def layers_to_profile(model: nn.Module, step: int, first: int) -> list[int]:
    """Fig 5's layers: `first`, `first` + `step`, ... and the last layer (6, 18, 30, ..., 110 for
    ResNet-110 with the paper's first 6 and step 12, `shared.figures.fig5.DepthConfig`)."""
    depth = len(weight_layers(model))
    return sorted(set(range(first, depth + 1, step)) | {depth})


def signal_propagation(model: nn.Module, x: torch.Tensor) -> dict[int, dict]:
    """Signal propagation at initialisation (Brock, De & Smith 2021, "Characterizing signal
    propagation to close the performance gap in unnormalized ResNets", Sec. 3 and Fig. 1): for
    each residual block b = 1, 2, ... of a CIFAR ResNet, of its output (the residual stream the
    next block receives; ours are post-activation blocks, so after the block's ReLU) the mean over
    channels of the squared channel mean ("mean_sq") and of the channel variance ("variance"), and
    the mean channel variance of its residual branch's output before the addition
    ("branch_variance"). Means and variances are over the batch and the spatial positions, as in
    Fig 5. The model is left exactly as it was (BN running statistics included).
    """
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    if not blocks:
        raise ValueError(f"signal propagation needs a CIFAR ResNet's residual blocks, got {type(model).__name__}")
    seen = {}
    hooks = [b.register_forward_hook(lambda m, inputs, output, j=j: seen.__setitem__(j, (inputs[0], output)))
             for j, b in enumerate(blocks)]
    state = copy.deepcopy(model.state_dict())
    try:
        with torch.no_grad():
            model(x)
            rows = {}
            for j, block in enumerate(blocks):
                block_in, block_out = seen[j]
                means, stds = channel_moments(block_out)
                _, branch_stds = channel_moments(block.branch(block_in))
                rows[j + 1] = {"mean_sq": means.square().mean().item(), "variance": stds.square().mean().item(),
                               "branch_variance": branch_stds.square().mean().item()}
    finally:
        for hook in hooks:
            hook.remove()
        model.load_state_dict(state)
    return rows
