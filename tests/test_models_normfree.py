"""SkipInit (De & Smith 2020) and Fixup (Zhang, Dauphin & Ma 2019): the CIFAR ResNets without BN
that `build_model(..., residual=...)` makes."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.models import (BasicBlock, CifarResNet, SkipInitBlock, build_model, count_parameters, init_weights,
                           layer, stack_models, weight_layers)

# ResNet-110 without BN, option-A shortcuts: the stem 3*16*9 = 432; stage 1, 36 convolutions of
# 16*16*9 = 2,304 (82,944); stage 2, 16*32*9 = 4,608 then 35 of 32*32*9 = 9,216 (327,168); stage 3,
# 32*64*9 = 18,432 then 35 of 64*64*9 = 36,864 (1,308,672); the classifier 64*10 + 10 = 650.
PLAIN_110 = 432 + 82_944 + 327_168 + 1_308_672 + 650  # = 1,719,866 (test_models: the paper's count)
BLOCKS_110 = 3 * 18


def blocks(model: nn.Module) -> list[nn.Module]:
    return [*model.layer1, *model.layer2, *model.layer3]


def block_inputs(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """(block, its input, its output) for every residual block of one forward pass of `x`."""
    seen = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append((m, i[0], o))) for b in blocks(model)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def seeded(seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(**kwargs)


def test_resnet110_parameter_counts():
    assert count_parameters(build_model("resnet110", bn=False, shortcut="A")) == PLAIN_110
    # SkipInit: one alpha per block
    assert count_parameters(build_model("resnet110", bn=False, residual="skipinit", shortcut="A")) == PLAIN_110 + BLOCKS_110
    assert PLAIN_110 + BLOCKS_110 == 1_719_920
    # Fixup: 4 scalar biases and 1 scale per block, the stem's bias1 and the classifier's bias2
    assert count_parameters(build_model("resnet110", bn=False, residual="fixup")) == PLAIN_110 + 5 * BLOCKS_110 + 2
    assert PLAIN_110 + 5 * BLOCKS_110 + 2 == 1_720_138


@pytest.mark.parametrize("residual, shortcut", [("skipinit", "A"), ("skipinit", "B"), ("fixup", None)])
def test_layers_are_numbered_as_in_the_plain_network(residual, shortcut):
    model = build_model("resnet110", bn=False, residual=residual, shortcut=shortcut)
    plain = build_model("resnet110", bn=False, shortcut=shortcut)
    names = {id(m): n for n, m in model.named_modules()}
    plain_names = {id(m): n for n, m in plain.named_modules()}
    assert [names[id(m)] for m in weight_layers(model)] == [plain_names[id(m)] for m in weight_layers(plain)]
    assert len(weight_layers(model)) == 110 and layer(model, 110) is model.fc
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("residual", ["skipinit", "fixup"])
def test_layer_numbers_follow_forward_order(residual):
    model = build_model("resnet20", bn=False, residual=residual)
    order = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in weight_layers(model)]
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert order == weight_layers(model)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_skipinit_blocks_start_as_relu_of_their_shortcut(shortcut):
    model = seeded(arch="resnet20", bn=False, residual="skipinit", shortcut=shortcut)
    assert all(b.alpha.item() == 0 for b in blocks(model))
    seen = block_inputs(model, torch.randn(2, 3, 32, 32))
    assert len(seen) == 9
    with torch.no_grad():
        for block, x, out in seen:
            assert torch.equal(out, F.relu(block.shortcut(x)))


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_skipinit_network_starts_as_the_network_without_branches(shortcut):
    model = seeded(arch="resnet20", bn=False, residual="skipinit", shortcut=shortcut)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = F.relu(model.conv1(x))
        for block in blocks(model):
            out = F.relu(block.shortcut(out))  # no branch
        expected = model.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))
        assert torch.equal(model(x), expected)


@pytest.mark.parametrize("init, shortcut", [("xavier_uniform", "A"), ("kaiming_normal_fan_in", "B")])
def test_skipinit_with_alpha_one_is_the_plain_network_without_bn(init, shortcut):
    """The same seed gives the plain network's weights (and leaves the RNG where it leaves it)."""
    model = seeded(3, arch="resnet20", bn=False, init=init, shortcut=shortcut, residual="skipinit")
    after_skipinit = torch.rand(4)
    plain = seeded(3, arch="resnet20", bn=False, init=init, shortcut=shortcut)
    assert torch.equal(torch.rand(4), after_skipinit)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in plain.state_dict().items())
    with torch.no_grad():
        for block in blocks(model):
            block.alpha.fill_(1)
        x = torch.randn(2, 3, 32, 32)
        assert torch.equal(model(x), plain(x))


def test_skipinit_gradients_reach_every_alpha_and_not_yet_the_branches():
    model = seeded(arch="resnet20", bn=False, residual="skipinit")
    F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 7])).backward()
    for block in blocks(model):
        assert block.alpha.grad.abs().item() > 0
        # d out / d branch = alpha = 0: the branch's weights get no gradient in the first step
        assert torch.count_nonzero(block.conv1.weight.grad) == 0 and torch.count_nonzero(block.conv2.weight.grad) == 0
    assert model.conv1.weight.grad.abs().sum() > 0


def test_fixup_starts_with_zero_branches_and_zero_logits():
    model = seeded(arch="resnet110", bn=False, residual="fixup")
    x = torch.cat([torch.randn(1, 3, 32, 32), 100 * torch.rand(1, 3, 32, 32)])
    seen = block_inputs(model, x)
    assert len(seen) == BLOCKS_110
    with torch.no_grad():
        for block, x_in, out in seen:
            assert torch.count_nonzero(block.branch(x_in)) == 0
            assert torch.equal(out, F.relu(block.shortcut(x_in)))
        assert torch.count_nonzero(model.fc.bias) == 0
        assert torch.equal(model(x), torch.zeros(2, 10))


def test_fixup_init_follows_the_rules():
    """Rule 2 with the official code's std sqrt(2 / fan_out) * L^(-1/2) on each branch's first
    convolution; rule 1: last convolutions and the classifier 0; scalars: biases 0, scales 1."""
    torch.manual_seed(0)
    model = build_model("resnet110", bn=False, residual="fixup")
    scale = BLOCKS_110 ** -0.5

    def std(convs):
        return torch.cat([c.weight.flatten() for c in convs]).std().item()
    # stage 1: 18 x 2,304 draws from 16 -> 16 convolutions, fan_in = fan_out = 144
    assert std([b.conv1 for b in model.layer1]) == pytest.approx((2 / 144) ** 0.5 * scale, rel=0.02)
    # stage 2's transition: 16 -> 32, fan_out = 288 (fan_in = 144 would give a sqrt(2) larger std)
    assert std([model.layer2[0].conv1]) == pytest.approx((2 / 288) ** 0.5 * scale, rel=0.05)
    assert std([b.conv1 for b in model.layer3[1:]]) == pytest.approx((2 / 576) ** 0.5 * scale, rel=0.02)
    for block in blocks(model):
        assert torch.count_nonzero(block.conv2.weight) == 0
        assert [block.bias1a.item(), block.bias1b.item(), block.bias2a.item(), block.bias2b.item()] == [0] * 4
        assert block.scale.item() == 1
    assert model.bias1.item() == 0 and model.bias2.item() == 0
    assert torch.count_nonzero(model.fc.weight) == 0 and torch.count_nonzero(model.fc.bias) == 0
    assert model.conv1.weight.abs().max() <= 1 / 27 ** 0.5  # the stem keeps PyTorch's default draw


def test_fixup_has_its_own_init_and_ignores_init_and_fc_init():
    default = seeded(arch="resnet20", bn=False, residual="fixup")
    other = seeded(arch="resnet20", bn=False, residual="fixup", init="kaiming_normal_fan_in",
                   fc_init="pytorch_default")
    state = default.state_dict()
    assert all(torch.equal(state[k], v) for k, v in other.state_dict().items())


def test_fixup_transition_shortcut_is_option_a_with_zero_channels_appended():
    block = seeded(arch="resnet20", bn=False, residual="fixup").layer2[0]
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        block.bias1a.fill_(0.5)
        out = block.shortcut(x)
    assert out.shape == (2, 32, 16, 16)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2] + 0.5) and torch.count_nonzero(out[:, 16:]) == 0


def test_fixup_gradients_reach_the_classifier_first_then_every_scalar():
    model = seeded(arch="resnet20", bn=False, residual="fixup")
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    F.cross_entropy(model(x), y).backward()
    moved = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert moved == {"fc.weight", "fc.bias"}  # the zero classifier blocks every other gradient
    # once the zero-initialised layers have moved, every parameter, every scalar included, learns
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in [model.fc.weight, *(b.conv2.weight for b in blocks(model))]:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("kwargs, message", [
    (dict(residual="rezero"), r"unknown residual 'rezero'; valid: plain, skipinit, fixup"),
    (dict(bn=True, residual="fixup"), r"unknown residual with BN \(bn=True\) 'fixup'; valid: plain"),
    (dict(bn=True, residual="skipinit"), r"unknown residual with BN \(bn=True\) 'skipinit'; valid: plain"),
    (dict(arch="resnet101", bn=False, residual="skipinit"), r"unknown residual of resnet101 'skipinit'; valid: plain"),
    (dict(bn=False, residual="fixup", shortcut="B"), r"unknown shortcut of fixup.*'B'; valid: default, None, A"),
])
def test_bad_residual_choices_name_the_valid_ones(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**{"arch": "resnet20", **kwargs})


def test_stacking_supports_the_plain_network_only():
    with pytest.raises(ValueError, match=r"runs=2.*'plain' only, got 'skipinit'"):
        CifarResNet(20, runs=2, block=SkipInitBlock)
    models = [seeded(s, arch="resnet20", bn=False, residual="skipinit") for s in (0, 1)]
    with pytest.raises(ValueError, match="only plain CIFAR ResNets can be stacked, got residual 'skipinit'"):
        stack_models(models)


@pytest.mark.parametrize("kwargs", [dict(arch="resnet20", shortcut="A", fc_init="same"),
                                    dict(arch="resnet20", bn=False, shortcut="B", fc_init="same"),
                                    dict(arch="resnet32", init="kaiming_normal_fan_out", fc_init="pytorch_default",
                                         shortcut="A")])
def test_plain_is_unchanged(kwargs):
    """residual="plain" is the default and the network of before: same modules, same draws."""
    implicit = seeded(4, **kwargs)
    after_implicit = torch.rand(4)
    explicit = seeded(4, residual="plain", **kwargs)
    assert torch.equal(torch.rand(4), after_implicit)
    state = explicit.state_dict()
    assert list(state) == list(implicit.state_dict())
    assert all(torch.equal(state[k], v) for k, v in implicit.state_dict().items())
    assert all(type(b) is BasicBlock for b in blocks(explicit))
    torch.manual_seed(4)  # what build_model did before `residual` existed
    before = CifarResNet(int(kwargs["arch"][6:]), shortcut=kwargs.get("shortcut", "A"))
    init_weights(before, kwargs.get("init", "xavier_uniform"), kwargs.get("fc_init", "same"))
    assert all(torch.equal(before.state_dict()[k], v) for k, v in state.items())


def test_configs_select_a_residual_scheme_and_keep_the_stored_identities():
    from shared.config import identity, train_config
    from shared.atinit import network_pair
    from shared.experiments import experiment_config
    assert "residual" not in identity(train_config("cpu")) and "residual" not in identity(experiment_config("fig5_depth_profile"))
    cfg = train_config("smoke", bn=False, residual="skipinit")
    assert identity(cfg)["residual"] == "skipinit"
    with pytest.raises(ValueError, match="residual 'fixup' is a network without BN: set bn=False"):
        train_config("smoke", residual="fixup", shortcut="A")
    with pytest.raises(ValueError, match="unknown residual 'rezero'; valid: plain, skipinit, fixup"):
        train_config("smoke", bn=False, residual="rezero")
    with pytest.raises(ValueError, match="unknown shortcut for fixup"):
        train_config("smoke", bn=False, residual="fixup", shortcut="B")
    with pytest.raises(ValueError, match="unknown arch for residual 'skipinit' 'resnet101'"):
        experiment_config("fig5_depth_profile", arch="resnet101", residual="skipinit", shortcut=None)
    probe = experiment_config("fig5_depth_profile", "smoke", residual="fixup", shortcut="A")
    pair = network_pair(probe, 0, "cpu")
    assert list(pair) == ["no_bn"] and pair["no_bn"].residual == "fixup"
