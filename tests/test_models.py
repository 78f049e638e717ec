import pytest
import torch
import torch.nn as nn

from shared.models import (ARCHS, INITS, CifarResNet, build_model, count_parameters, layer, remove_bn,
                           stack_models, weight_layers)


def test_resnet110_parameter_counts_match_the_paper():
    """He et al.'s ResNet-110 (option-A shortcuts), as the paper names it."""
    assert count_parameters(build_model("resnet110", bn=True, shortcut="A")) == 1_727_962
    assert count_parameters(build_model("resnet110", bn=False, shortcut="A")) == 1_719_866


def test_the_default_network_is_the_projects():
    """build_model's defaults are shared.config's, the network every figure uses: option-B
    shortcuts, Xavier convolutions, PyTorch's default classifier."""
    from shared.config import network_fields, train_config
    torch.manual_seed(0)
    default = build_model("resnet110")
    torch.manual_seed(0)
    figures = build_model(bn=True, **network_fields(train_config("paper")))
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), figures.state_dict().values()))
    assert count_parameters(default) == 1_730_714 and torch.count_nonzero(default.fc.bias) == 10


def test_resnet101_is_torchvisions_with_ten_classes():
    model = build_model("resnet101")
    assert count_parameters(model) == 42_520_650
    assert model.fc.out_features == 10


@pytest.mark.parametrize("arch, depth", [("resnet20", 20), ("resnet56", 56), ("resnet110", 110),
                                         ("resnet101", 101)])
def test_layer_numbering_counts_the_depth(arch, depth):
    model = build_model(arch)
    assert len(weight_layers(model)) == depth
    assert layer(model, 1) is weight_layers(model)[0]
    assert isinstance(layer(model, depth), nn.Linear)


def test_layer_numbers_follow_forward_order():
    """weight_layers lists the main-path layers in the order the forward pass runs them."""
    for arch in ("resnet20", "resnet101"):
        model = build_model(arch).eval()
        order = []
        hooks = [m.register_forward_hook(lambda m, i, o: order.append(m))
                 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        with torch.no_grad():
            model(torch.zeros(1, 3, 32, 32))
        for h in hooks:
            h.remove()
        main_path = [m for m in order if any(m is w for w in weight_layers(model))]
        assert main_path == weight_layers(model)


def test_layer_out_of_range_names_the_valid_range():
    with pytest.raises(ValueError, match=r"1\.\.110.*111"):
        layer(build_model("resnet110"), 111)


def test_remove_bn_removes_only_batchnorm():
    torch.manual_seed(0)
    model = build_model("resnet56", shortcut="A")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    removed = remove_bn(model)
    assert removed == 1 + 2 * 27
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    after = model.state_dict()
    bn_keys = {k for k in before if ".bn" in k or k.startswith("bn")}
    assert set(after) == set(before) - bn_keys
    assert all(torch.equal(after[k], before[k]) for k in after)


def test_same_seed_same_weights_with_and_without_bn():
    torch.manual_seed(3)
    with_bn = build_model("resnet20", bn=True)
    torch.manual_seed(3)
    without = build_model("resnet20", bn=False)
    for a, b in zip(weight_layers(with_bn), weight_layers(without)):
        assert torch.equal(a.weight, b.weight)


@pytest.mark.parametrize("init, std_of_conv", [
    # layer 2 of ResNet-110: a 16 -> 16 3x3 conv, fan_in = fan_out = 144
    ("xavier_uniform", (2 / 288) ** 0.5), ("xavier_normal", (2 / 288) ** 0.5),
    ("kaiming_normal_fan_out", (2 / 144) ** 0.5), ("kaiming_normal_fan_in", (2 / 144) ** 0.5)])
def test_init_schemes_set_the_expected_scale(init, std_of_conv):
    torch.manual_seed(0)
    model = build_model("resnet110", init=init)
    w = torch.cat([layer(model, k).weight.flatten() for k in range(2, 38)])  # stage 1: 16->16
    assert w.std().item() == pytest.approx(std_of_conv, rel=0.02)


def test_init_schemes_differ_in_distribution_shape():
    torch.manual_seed(0)
    uniform = layer(build_model("resnet20", init="xavier_uniform"), 2).weight
    bound = (6 / 288) ** 0.5
    assert uniform.abs().max() <= bound
    torch.manual_seed(0)
    normal = layer(build_model("resnet20", init="xavier_normal"), 2).weight
    assert normal.abs().max() > bound  # a Gaussian with 2304 draws exceeds 1.73 sigma


@pytest.mark.parametrize("kwargs, message", [
    ({"arch": "resnet18"}, "unknown arch 'resnet18'; valid: resnet20, resnet32"),
    ({"init": "orthogonal"}, "unknown init 'orthogonal'; valid: xavier_uniform"),
])
def test_bad_choices_list_the_valid_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**kwargs)


def test_every_arch_and_init_builds_and_runs():
    x = torch.randn(2, 3, 32, 32)
    for arch in ARCHS:
        if arch == "resnet101":
            continue  # covered above; too slow to run for every init
        for init in INITS:
            assert build_model(arch, bn=False, init=init)(x).shape == (2, 10)


def test_option_b_shortcuts_add_a_projection_at_each_stage_transition():
    """Option B (He et al. Sec. 3.3): a 1x1 strided convolution + BN at the two transitions of
    ResNet-110; 2 x (16*32 + 32*64) / 2 ... = 2,560 weights and 192 BN parameters more."""
    assert count_parameters(build_model("resnet110", bn=True, shortcut="B")) == 1_730_714
    assert count_parameters(build_model("resnet110", bn=False, shortcut="B")) == 1_722_426
    model = build_model("resnet110", shortcut="B")
    projections = [name for name, m in model.named_modules() if name.endswith("downsample")]
    assert projections == ["layer2.0.downsample", "layer3.0.downsample"]
    assert len(weight_layers(model)) == 110  # the projections are not counted as layers


def test_classifier_init_is_separate_from_the_convolutions():
    torch.manual_seed(0)
    same = build_model("resnet20", fc_init="same")
    torch.manual_seed(0)
    default_fc = build_model("resnet20", fc_init="pytorch_default")
    convs = [n for n, p in same.named_parameters() if "conv" in n]
    assert all(torch.equal(same.get_parameter(n), default_fc.get_parameter(n)) for n in convs)
    assert torch.count_nonzero(same.fc.bias) == 0 and torch.count_nonzero(default_fc.fc.bias) == 10
    bound = 1 / 64 ** 0.5  # PyTorch's Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weights too
    assert default_fc.fc.weight.abs().max() <= bound and default_fc.fc.weight.std() < 0.6 * bound
    assert same.fc.weight.std() > 1.5 * default_fc.fc.weight.std()  # Xavier: std sqrt(2/74) = 0.16


def test_pytorch_default_init_keeps_what_the_constructors_drew():
    torch.manual_seed(3)
    model = build_model("resnet20", init="pytorch_default", fc_init="same", shortcut="A")
    torch.manual_seed(3)
    constructed = CifarResNet(20)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), constructed.state_dict().values()))
    fan_in = 16 * 9
    assert model.layer1[0].conv1.weight.abs().max() <= 1 / fan_in ** 0.5  # kaiming_uniform_(a=sqrt(5))


def test_option_b_networks_stack_like_single_ones():
    """K option-B networks as one stacked network give each network's own output."""
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(build_model("resnet20", shortcut="B").eval())
    stacked = stack_models(models).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out = stacked(torch.cat([x, x], dim=1))
        for k, m in enumerate(models):
            torch.testing.assert_close(out[:, k], m(x), rtol=1e-4, atol=1e-5)


def test_bad_shortcut_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown shortcut 'C'; valid: default, None, A, B"):
        build_model("resnet20", shortcut="C")
    with pytest.raises(ValueError, match=r"unknown shortcut of resnet101.*'A'; valid: default, None, B"):
        build_model("resnet101", shortcut="A")
