"""Networks of the paper: the CIFAR ResNet family of He et al. (2016) and torchvision's ResNet-101.

The paper (Bjorck et al. 2018, Sec. 2 and appendix B) trains a 110-layer CIFAR ResNet with and
without batch normalisation. `build_model` makes either network, initialises it with a named
scheme, and removes its BatchNorm layers when asked, so that the same seed gives the same
convolution weights with and without BN.

"Layer k" is the k-th weight layer (convolution or linear) on the main path in forward order,
counted from 1, as the paper numbers ResNet-110's layers 1..110 (Fig 2 uses layer 55, Fig 5
layers 6, 18, ..., 110). Shortcut projections (ResNet-101's `downsample` convolutions) are not
counted, so ResNet-101 has layers 1..101, matching the depth in its name.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from .config import ARCHS, CIFAR_DEPTHS, FC_INITS, INITS, SHORTCUTS, check_choice  # noqa: F401 (re-exported)

class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut: identity, or at a stage transition option A (zero-pad,
    He et al. Sec. 4.2) or option B (1x1 convolution + BN, called `downsample` as in torchvision).

    With `runs` = K > 1 the block holds K independent blocks side by side: channels are grouped
    run by run ([B, K*C, H, W]) and each convolution has K groups, so no run sees another's
    channels, and BatchNorm's per-channel statistics are each run's own.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, runs: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(runs * in_planes, runs * planes, 3, stride, 1, bias=False, groups=runs)
        self.bn1 = nn.BatchNorm2d(runs * planes)
        self.conv2 = nn.Conv2d(runs * planes, runs * planes, 3, 1, 1, bias=False, groups=runs)
        self.bn2 = nn.BatchNorm2d(runs * planes)
        self.subsample = stride != 1 or in_planes != planes
        self.pad = (planes - in_planes) // 2
        self.runs = runs
        if self.subsample and shortcut == "B":
            self.downsample = nn.Sequential(
                nn.Conv2d(runs * in_planes, runs * planes, 1, stride, bias=False, groups=runs),
                nn.BatchNorm2d(runs * planes))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.subsample:
            return x
        if hasattr(self, "downsample"):
            return self.downsample(x)
        # [B, K*C, H, W] -> [B, K, C, H/2, W/2] -> zero-pad each run's channels -> [B, K*(C+2*pad), H/2, W/2]
        x = x[:, :, ::2, ::2].unflatten(1, (self.runs, -1))
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad)).flatten(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet of depth 6n+2 for 32x32 inputs: 3 stages of n blocks with 16/32/64 channels.

    `runs` = K > 1 makes K independent networks in one (see `BasicBlock` and `stack_models`): the
    input is K images side by side, [B, K*3, 32, 32], and the output K logit rows, [B, K, classes].
    """

    def __init__(self, depth: int, num_classes: int = 10, runs: int = 1, shortcut: str = "A"):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        check_choice("shortcut", shortcut, SHORTCUTS)
        n = (depth - 2) // 6
        self.runs = runs
        self.shortcut = shortcut
        self.conv1 = nn.Conv2d(3 * runs, 16 * runs, 3, 1, 1, bias=False, groups=runs)
        self.bn1 = nn.BatchNorm2d(16 * runs)
        self.layer1 = self._stage(16, 16, n, 1, runs, shortcut)
        self.layer2 = self._stage(16, 32, n, 2, runs, shortcut)
        self.layer3 = self._stage(32, 64, n, 2, runs, shortcut)
        # K classifiers as one grouped 1x1 convolution; a single network keeps torchvision's Linear
        self.fc = nn.Linear(64, num_classes) if runs == 1 else nn.Conv2d(64 * runs, num_classes * runs, 1, groups=runs)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int, runs: int, shortcut: str) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride, runs, shortcut)]
        blocks += [BasicBlock(planes, planes, 1, runs, shortcut) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1)  # [B, K*64, 8, 8] -> [B, K*64, 1, 1]
        if self.runs == 1:
            return self.fc(out.flatten(1))  # [B, classes]
        return self.fc(out).unflatten(1, (self.runs, -1)).flatten(2)  # [B, K, classes]


def stack_models(models: list[nn.Module]) -> CifarResNet:
    """K CIFAR ResNets of one architecture (with or without BN) as one `CifarResNet(runs=K)`
    holding copies of their weights, buffers and layout; `unstack_state` gives them back."""
    first = models[0]
    if not isinstance(first, CifarResNet) or first.runs != 1:
        raise ValueError(f"only single CIFAR ResNets can be stacked, got {type(first).__name__}")
    depth = 2 + 2 * sum(len(s) for s in (first.layer1, first.layer2, first.layer3))
    stacked = CifarResNet(depth, first.fc.out_features, runs=len(models), shortcut=first.shortcut)
    if not any(isinstance(m, nn.BatchNorm2d) for m in first.modules()):
        remove_bn(stacked)
    states = [m.state_dict() for m in models]
    if any(s.keys() != states[0].keys() for s in states):
        raise ValueError("models to stack must have the same layers (all with BN or all without)")
    target = stacked.state_dict()
    stacked.load_state_dict({name: _stack_tensor([s[name] for s in states], target[name])
                             for name in target})
    p = next(first.parameters())
    channels_last = p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
    return stacked.to(p.device, memory_format=torch.channels_last if channels_last else torch.preserve_format)


def _stack_tensor(parts: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    if target.dim() == 0:  # BN's num_batches_tracked: the same count for every run
        return parts[0]
    return torch.cat([p.reshape(-1) for p in parts]).reshape(target.shape)  # run k = k-th block of dim 0


def unstack_state(stacked: CifarResNet, run: int, like: nn.Module) -> dict[str, torch.Tensor]:
    """Run `run`'s state dict out of a stacked network, shaped as the single network `like`'s."""
    single = like.state_dict()
    return {name: (t if t.dim() == 0 else t.reshape(stacked.runs, -1)[run].reshape(single[name].shape))
            for name, t in stacked.state_dict().items()}


def init_weights(model: nn.Module, scheme: str, fc_scheme: str = "same") -> None:
    """Initialise every convolution weight with `scheme` and the classifier with `fc_scheme`
    ("same": `scheme`); biases 0, BN gamma 1 beta 0. "pytorch_default" keeps what the layer's
    constructor drew (its bias too).

    The paper's appendix states Xavier initialisation; torchvision's ResNets use Kaiming-normal
    with fan_out on their convolutions and PyTorch's default on the classifier.
    """
    check_choice("init", scheme, INITS)
    check_choice("fc_init", fc_scheme, FC_INITS)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            is_classifier = isinstance(m, nn.Linear) or m is getattr(model, "fc", None)
            _init_layer(m, fc_scheme if is_classifier and fc_scheme != "same" else scheme)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _init_layer(m: nn.Module, scheme: str) -> None:
    if scheme == "pytorch_default":
        return  # as constructed
    if scheme == "xavier_uniform":
        nn.init.xavier_uniform_(m.weight)
    elif scheme == "xavier_normal":
        nn.init.xavier_normal_(m.weight)
    else:
        mode = scheme.removeprefix("kaiming_normal_")
        nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
    if m.bias is not None:
        nn.init.zeros_(m.bias)


def remove_bn(model: nn.Module) -> int:
    """Replace every BatchNorm layer of `model` by an identity, in place; return how many."""
    targets = [(parent, name) for parent in model.modules()
               for name, child in parent.named_children()
               if isinstance(child, nn.modules.batchnorm._BatchNorm)]
    for parent, name in targets:
        setattr(parent, name, nn.Identity())
    return len(targets)


def build_model(arch: str = "resnet110", bn: bool = True, init: str = "xavier_uniform",
                num_classes: int = 10, fc_init: str = "same", shortcut: str | None = None) -> nn.Module:
    """The network `arch`, initialised with `init` (classifier: `fc_init`) from torch's global RNG,
    with or without BN. `shortcut` ("A" or "B", see SHORTCUTS; None: "A") applies to the CIFAR
    ResNets; torchvision's ResNet-101 has its own projection shortcuts (None or "B")."""
    check_choice("arch", arch, ARCHS)
    check_choice("init", init, INITS)
    check_choice("fc_init", fc_init, FC_INITS)
    if arch == "resnet101":
        check_choice("shortcut of resnet101 (torchvision's projections)", shortcut, (None, "B"))
        model = torchvision.models.resnet101(num_classes=num_classes)
    else:
        model = CifarResNet(CIFAR_DEPTHS[arch], num_classes, shortcut=shortcut or "A")
    init_weights(model, init, fc_init)
    if not bn:
        remove_bn(model)
    return model


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The main-path weight layers in forward order: element k-1 is "layer k" of the paper."""
    return [m for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in name]


def layer(model: nn.Module, k: int) -> nn.Module:
    """The module of layer `k` (1-based, see `weight_layers`)."""
    layers = weight_layers(model)
    if not 1 <= k <= len(layers):
        raise ValueError(f"layer must be in 1..{len(layers)} for this network, got {k}")
    return layers[k - 1]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


