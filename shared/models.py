"""Networks of the paper: the CIFAR ResNet family of He et al. (2016) and torchvision's ResNet-101.

The paper (Bjorck et al. 2018, Sec. 2 and appendix B) trains a 110-layer CIFAR ResNet with and
without batch normalisation. `build_model` makes either network, initialises it with a named
scheme, and removes its BatchNorm layers when asked, so that the same seed gives the same
convolution weights with and without BN.

"Layer k" is the k-th weight layer (convolution or linear) on the main path in forward order,
counted from 1, as the paper numbers ResNet-110's layers 1..110 (Fig 2 uses layer 55, Fig 5
layers 6, 18, ..., 110). Shortcut projections (ResNet-101's `downsample` convolutions) are not
counted, so ResNet-101 has layers 1..101, matching the depth in its name.

Two published ways to train the CIFAR ResNets without normalisation are here too (`build_model`'s
`residual`, see RESIDUALS): SkipInit (De & Smith 2020, `SkipInitBlock`) and Fixup (Zhang, Dauphin &
Ma 2019, `FixupResNet`). Their weight layers are numbered as the plain network's.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from .config import (ARCHS, CIFAR_DEPTHS, DEFAULT_FC_INIT, DEFAULT_INIT, DEFAULT_SHORTCUT, FC_INITS,  # noqa: F401
                     INITS, RESIDUALS, SHORTCUTS, check_choice)

class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut: identity, or at a stage transition option A (zero-pad,
    He et al. Sec. 4.2) or option B (1x1 convolution + BN, called `downsample` as in torchvision).

    With `runs` = K > 1 the block holds K independent blocks side by side: channels are grouped
    run by run ([B, K*C, H, W]) and each convolution has K groups, so no run sees another's
    channels, and BatchNorm's per-channel statistics are each run's own.
    """
    residual = "plain"  # the scheme of RESIDUALS this block implements

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

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch: conv, BN, ReLU, conv, BN."""
        out = F.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branch(x) + self.shortcut(x))


class SkipInitBlock(BasicBlock):
    """SkipInit (De & Smith 2020, "Batch Normalization Biases Residual Blocks Towards the Identity
    Function in Deep Networks", NeurIPS 2020, the section that introduces SkipInit): no BN, and a
    learnable scalar `alpha`, initialised to 0, multiplies the residual branch at its end, before the
    addition with the shortcut. At initialisation the block computes relu(shortcut(x)).

    The convolutions keep the init the network is given (`build_model`'s `init`), so with alpha = 1
    the block is the plain block without BN. At a stage transition the shortcut stays the network's
    option: A (subsample and zero-pad) or B (the 1x1 strided convolution, its BN removed like every
    other); alpha scales the branch only, so a transition block too starts as relu(shortcut(x)).
    """
    residual = "skipinit"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        remove_bn(self)
        self.alpha = nn.Parameter(torch.zeros(1))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * super().branch(x)


class FixupBlock(BasicBlock):
    """A residual block of Fixup (Zhang, Dauphin & Ma 2019, "Fixup Initialization: Residual Learning
    Without Normalization", ICLR 2019, Sec. 3, rule 3) as the authors' CIFAR code writes it
    (github.com/hongyi-zhang/Fixup, cifar/models/fixup_resnet_cifar.py, FixupBasicBlock): no BN, a
    scalar bias (init 0) before each convolution and activation, and a scalar multiplier (init 1):

        branch(x) = conv2(relu(conv1(x + bias1a) + bias1b) + bias2a) * scale + bias2b,

    output relu(branch(x) + shortcut(x)). At a stage transition the shortcut is option A as that code
    has it: the biased input x + bias1a subsampled (its AvgPool2d(1, stride=2)) with as many zero
    channels appended after it (the plain option A pads both sides); elsewhere the identity of the
    unbiased x. The weights' init is the network's (`FixupResNet`).
    """
    residual = "fixup"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        remove_bn(self)
        self.bias1a, self.bias1b, self.bias2a, self.bias2b = (nn.Parameter(torch.zeros(1)) for _ in range(4))
        self.scale = nn.Parameter(torch.ones(1))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x + self.bias1a) + self.bias1b)
        return self.conv2(out + self.bias2a) * self.scale + self.bias2b

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.subsample:
            return x
        x = (x + self.bias1a)[:, :, ::2, ::2]
        return torch.cat((x, torch.zeros_like(x)), 1)


class CifarResNet(nn.Module):
    """ResNet of depth 6n+2 for 32x32 inputs: 3 stages of n blocks with 16/32/64 channels.

    `runs` = K > 1 makes K independent networks in one (see `BasicBlock` and `stack_models`): the
    input is K images side by side, [B, K*3, 32, 32], and the output K logit rows, [B, K, classes].

    `block`: BasicBlock, or SkipInitBlock for SkipInit (a network without any BN; runs = 1 only).
    Fixup's network is `FixupResNet`.
    """

    def __init__(self, depth: int, num_classes: int = 10, runs: int = 1, shortcut: str = "A",
                 block: type[BasicBlock] = BasicBlock):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        check_choice("shortcut", shortcut, SHORTCUTS)
        if runs != 1 and block.residual != "plain":
            raise ValueError(f"stacked runs (runs={runs}) support residual 'plain' only, got {block.residual!r}")
        n = (depth - 2) // 6
        self.runs = runs
        self.shortcut = shortcut
        self.residual = block.residual
        self.conv1 = nn.Conv2d(3 * runs, 16 * runs, 3, 1, 1, bias=False, groups=runs)
        self.bn1 = nn.BatchNorm2d(16 * runs)
        self.layer1 = self._stage(block, 16, 16, n, 1)
        self.layer2 = self._stage(block, 16, 32, n, 2)
        self.layer3 = self._stage(block, 32, 64, n, 2)
        # K classifiers as one grouped 1x1 convolution; a single network keeps torchvision's Linear
        self.fc = nn.Linear(64, num_classes) if runs == 1 else nn.Conv2d(64 * runs, num_classes * runs, 1, groups=runs)
        if self.residual != "plain":
            remove_bn(self)  # the stem's; the blocks have none

    def _stage(self, block: type[BasicBlock], in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [block(in_planes, planes, stride, self.runs, self.shortcut)]
        blocks += [block(planes, planes, 1, self.runs, self.shortcut) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1)  # [B, K*64, 8, 8] -> [B, K*64, 1, 1]
        if self.runs == 1:
            return self.fc(out.flatten(1))  # [B, classes]
        return self.fc(out).unflatten(1, (self.runs, -1)).flatten(2)  # [B, K, classes]


class FixupResNet(CifarResNet):
    """A CIFAR ResNet with Fixup (Zhang, Dauphin & Ma 2019, ICLR 2019, Sec. 3) as the authors' CIFAR
    code builds it (github.com/hongyi-zhang/Fixup, cifar/models/fixup_resnet_cifar.py, FixupResNet):
    `FixupBlock`s, no BN, a scalar bias before the stem's ReLU (`bias1`) and one before the
    classifier (`bias2`), and Fixup's own init:

    - rule 2: each branch's first convolution ~ N(0, 2 / fan_out), He et al.'s normal init with
      fan_out as that code writes it (std sqrt(2 / (out_channels * k * k))), rescaled by
      L^(-1/(2m-2)) = L^(-1/2), L the number of residual branches, m = 2 weight layers per branch;
    - rule 1: each branch's last convolution, and the classifier's weight and bias, are 0;
    - the stem's convolution keeps PyTorch's default draw (kaiming_uniform_(a=sqrt(5))), as there.

    With the same seed it holds the same weights as that code's model: the layers are constructed,
    and the init drawn, in the same order.
    """

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__(depth, num_classes, block=FixupBlock)
        self.bias1 = nn.Parameter(torch.zeros(1))
        self.bias2 = nn.Parameter(torch.zeros(1))
        blocks = [*self.layer1, *self.layer2, *self.layer3]
        m = 2  # weight layers per residual branch
        for block in blocks:
            w = block.conv1.weight
            fan_out = w.shape[0] * w[0, 0].numel()
            nn.init.normal_(w, 0, (2 / fan_out) ** 0.5 * len(blocks) ** (-1 / (2 * m - 2)))
            nn.init.zeros_(block.conv2.weight)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x) + self.bias1)
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1) + self.bias2)


def stack_models(models: list[nn.Module]) -> CifarResNet:
    """K CIFAR ResNets of one architecture (with or without BN) as one `CifarResNet(runs=K)`
    holding copies of their weights, buffers and layout; `unstack_state` gives them back."""
    first = models[0]
    if not isinstance(first, CifarResNet) or first.runs != 1:
        raise ValueError(f"only single CIFAR ResNets can be stacked, got {type(first).__name__}")
    if first.residual != "plain":
        raise ValueError(f"only plain CIFAR ResNets can be stacked, got residual {first.residual!r}")
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


NUM_CLASSES = 10  # CIFAR-10

# build_model's shortcut by default: the project's network where the network has a choice
PROJECT_SHORTCUT = "default"


def build_model(arch: str = "resnet110", bn: bool = True, init: str = DEFAULT_INIT,
                fc_init: str = DEFAULT_FC_INIT, shortcut: str | None = PROJECT_SHORTCUT, *,
                residual: str = "plain") -> nn.Module:
    """The network `arch`, initialised with `init` (classifier: `fc_init`) from torch's global RNG,
    with or without BN. The defaults are the project's network, the one every figure uses
    (`shared.config`'s DEFAULT_INIT, DEFAULT_FC_INIT and DEFAULT_SHORTCUT: option-B shortcuts,
    Xavier convolutions, PyTorch's default classifier).

    `shortcut`: "A" or "B" (SHORTCUTS) for the CIFAR ResNets, None for the architecture's standard
    (option A for the CIFAR ResNets, torchvision's projections for ResNet-101), or "default" (the
    default): the project's network, DEFAULT_SHORTCUT, where the network has a choice, else its
    standard.

    `residual` (RESIDUALS) is the residual scheme; "skipinit" and "fixup" are for the CIFAR ResNets
    without BN (bn=False). "skipinit" (`SkipInitBlock`): `init`, `fc_init` and `shortcut` apply as for
    "plain", from the same draws, so a seed gives the plain network's weights. "fixup"
    (`FixupResNet`): its authors' option-A shortcuts and Fixup's own init; `init` and `fc_init` are
    not used."""
    check_choice("arch", arch, ARCHS)
    check_choice("init", init, INITS)
    check_choice("fc_init", fc_init, FC_INITS)
    check_choice("residual", residual, RESIDUALS)
    if residual != "plain" and arch == "resnet101":
        check_choice("residual of resnet101", residual, ("plain",))
    if residual != "plain" and bn:
        check_choice("residual with BN (bn=True)", residual, ("plain",))
    if arch == "resnet101":
        check_choice("shortcut of resnet101 (torchvision's projections)", shortcut, (PROJECT_SHORTCUT, None, "B"))
        model = torchvision.models.resnet101(num_classes=NUM_CLASSES)
    elif residual == "fixup":
        check_choice("shortcut of fixup (the authors' option A)", shortcut, (PROJECT_SHORTCUT, None, "A"))
        return FixupResNet(CIFAR_DEPTHS[arch], NUM_CLASSES)
    else:
        check_choice("shortcut", shortcut, (PROJECT_SHORTCUT, None, *SHORTCUTS))
        chosen = DEFAULT_SHORTCUT if shortcut == PROJECT_SHORTCUT else shortcut or "A"
        block = SkipInitBlock if residual == "skipinit" else BasicBlock
        model = CifarResNet(CIFAR_DEPTHS[arch], NUM_CLASSES, shortcut=chosen, block=block)
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


