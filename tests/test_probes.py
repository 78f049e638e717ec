import math

import numpy as np

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared import probes
from shared.models import build_model, layer


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)


def model_pair(arch="resnet20", seed=0):
    torch.manual_seed(seed)
    with_bn = build_model(arch, bn=True).train()
    torch.manual_seed(seed)
    return with_bn, build_model(arch, bn=False).train()


def test_summary_stats_of_known_distributions():
    g = torch.Generator().manual_seed(0)
    gauss = probes.summary_stats(torch.randn(200_000, generator=g, dtype=torch.float64))
    laplace = probes.summary_stats(torch.distributions.Laplace(0.0, 1.0).sample((200_000,)))
    assert gauss["std"] == pytest.approx(1, abs=0.01) and abs(gauss["excess_kurtosis"]) < 0.1
    assert laplace["excess_kurtosis"] == pytest.approx(3, abs=0.3)


def test_histogram_counts_everything_on_a_symmetric_range():
    values = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.5])
    h = probes.histogram(values, bins=4)
    assert sum(h["counts"]) == 5 and h["edges"][0] == -2.0 and h["edges"][-1] == 2.0


def test_channel_moments_match_a_direct_computation():
    out = torch.randn(4, 3, 5, 5) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 7
    means, stds = probes.channel_moments(out)
    for c in range(3):
        assert means[c].item() == pytest.approx(out[:, c].double().mean().item())
        assert stds[c].item() == pytest.approx(out[:, c].double().std(correction=0).item())


def test_logit_gradients_equal_autograd(batch):
    x, y = batch
    model = build_model("resnet20").train()
    logits = model(x).detach().requires_grad_()
    F.cross_entropy(logits, y).backward()
    assert torch.allclose(probes.logit_gradients(model, x, y).float(), logits.grad, atol=1e-6)


def test_dominant_column():
    grads = torch.tensor([[0.1, 0.5, 0.0], [0.0, 0.9, 0.2], [0.3, 0.1, 0.0], [0.0, 0.2, 0.1]])
    assert probes.dominant_column(grads) == (1, 0.75)


@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("k", [2, 8, 15])  # 8: a strided convolution (first of stage 2)
def test_per_example_contributions_sum_to_the_gradient(batch, bn, k):
    x, y = batch
    model = model_pair()[0 if bn else 1]
    per_example = probes.per_example_contributions(model, x, y, k)
    assert per_example.shape == (len(x), *layer(model, k).weight.shape)
    expected = probes.layer_weight_gradient(model, x, y, k)
    assert torch.allclose(per_example.sum(0), expected, rtol=1e-4, atol=1e-6)


def test_contribution_agreement_of_agreeing_and_cancelling_examples():
    agree = probes.contribution_agreement(torch.ones(4, 2, 2))
    cancel = probes.contribution_agreement(torch.tensor([1.0, -1.0, 1.0, -0.9]).view(4, 1))
    assert agree["ratio"] == pytest.approx(1.0) and cancel["ratio"] == pytest.approx(3.9 / 0.1)
    assert agree["entry_ratio_median"] == pytest.approx(1.0)
    mixed = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0]])  # entry ratios 1, inf (left out), 1
    assert probes.contribution_agreement(mixed)["entry_ratio_median"] == pytest.approx(1.0)
    uneven = probes.contribution_agreement(torch.tensor([[1.0, 10.0], [-0.9, 10.0]]))
    assert uneven["entry_ratio_median"] == pytest.approx(1.0)  # median of (19, 1) -> lower middle
    assert uneven["ratio"] == pytest.approx(21.9 / 20.1)
    assert uneven["entry_ratio_mean"] == pytest.approx((19 + 1) / 2) and uneven["entries"] == 2
    # as vectors: ||(1, 10)|| + ||(-0.9, 10)|| over ||(0.1, 20)||
    assert uneven["norm_ratio"] == pytest.approx((101 ** 0.5 + 100.81 ** 0.5) / 400.01 ** 0.5)
    assert agree["norm_ratio"] == pytest.approx(1.0) and agree["entry_ratio_mean"] == pytest.approx(1.0)


def test_relative_loss_restores_the_model_and_starts_at_one(batch):
    x, y = batch
    model = model_pair()[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sizes = torch.tensor([0.0, 1e-3, 10.0], dtype=torch.float64)
    ratios = probes.relative_loss_along_gradient(model, x, y, sizes)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert ratios[0].item() == pytest.approx(1.0, abs=1e-6)
    # the same number by hand: one plain gradient step of size 1e-3
    loss0 = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss0, list(model.parameters()))
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p.sub_(1e-3 * g)
        assert ratios[1].item() == pytest.approx((F.cross_entropy(model(x), y) / loss0).item(), rel=1e-4)


def test_step_sizes_and_first_exceeding():
    sizes = probes.step_sizes(80, -5.5, 0.5)
    assert len(sizes) == 80 and sizes[0] == pytest.approx(10 ** -5.5) and sizes[-1] == pytest.approx(10 ** 0.5)
    values = torch.tensor([1.0, 2.0, 5e3, float("nan")])
    assert probes.first_exceeding(torch.tensor([1.0, 2.0, 3.0, 4.0]), values, 1e3) == 3.0
    assert probes.first_exceeding(torch.tensor([1.0]), torch.tensor([1.0]), 1e3) is None


def test_moments_along_update_start_at_the_unperturbed_network(batch):
    x, y = batch
    model = model_pair()[1]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = probes.moments_along_update(model, x, y, 0.1, [3, 12], torch.linspace(0, 1, 3))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad(), probes.recorded_outputs(model, [3]) as outputs:
        model(x)
    means, stds = probes.channel_moments(outputs[3])
    assert torch.allclose(moments[3]["means"][0], means) and torch.allclose(moments[3]["variances"][0], stds ** 2)
    assert moments[12]["variances"].shape == (3, 32)


def test_depth_profile_grows_without_bn_at_initialisation(batch):
    x, _ = batch
    with_bn, without = model_pair("resnet56")
    ks = probes.layers_to_profile(without, 12, 6)
    assert ks == [6, 18, 30, 42, 54, 56]
    profile = probes.depth_profile(without, x, ks)
    assert profile[54]["std"] > 3 * profile[6]["std"]


def test_fig5_layers_of_resnet110():
    assert probes.layers_to_profile(build_model("resnet110"), 12, 6) == [6, 18, 30, 42, 54, 66, 78, 90, 102, 110]


def test_gaussian_products_approach_the_limit_of_the_largest_singular_value():
    assert [round(probes.largest_singular_value_limit(m), 2) for m in (1, 3, 5)] == [2.0, 3.08, 3.86]
    g = torch.Generator().manual_seed(0)
    for m in (1, 3):
        top = probes.gaussian_product_singular_values(400, m, g).max().item()
        assert top == pytest.approx(probes.largest_singular_value_limit(m), rel=0.1)
    single = probes.gaussian_product_singular_values(300, 1, g)
    assert (single ** 2).mean().item() == pytest.approx(1.0, rel=0.05)  # E sigma^2 = 1 for N(0, 1/n)
    assert math.isfinite(single.min().item())


def test_product_law_of_one_matrix_is_the_quarter_circle():
    s, density, cdf = probes.product_singular_value_law(1)
    assert s[-1] == pytest.approx(2.0, rel=1e-6) and cdf[0] == 0 and cdf[-1] == 1
    assert (np.diff(s) > 0).all() and (np.diff(cdf) >= 0).all()
    quarter_circle = np.sqrt(np.clip(4 - s ** 2, 0, None)) / np.pi
    inside = (s > 0.1) & (s < 1.9)
    assert np.allclose(density[inside], quarter_circle[inside], rtol=1e-3)


@pytest.mark.parametrize("m", [1, 3])
def test_product_law_matches_sampled_singular_values(m):
    s, _, cdf = probes.product_singular_value_law(m)
    sampled = probes.gaussian_product_singular_values(400, m, torch.Generator().manual_seed(1)).numpy()
    assert np.median(sampled) == pytest.approx(np.interp(0.5, cdf, s), rel=0.05)


def test_recorded_outputs_survive_in_place_operations():
    """torchvision's ResNets apply ReLU(inplace=True) and `out += identity` to a convolution's
    output; what the hook recorded must still be the convolution's output, negatives included."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad(), probes.recorded_outputs(model, [1]) as outputs:
        model(x)
    with torch.no_grad():
        expected = conv(x)
    assert expected.min() < 0 and torch.equal(outputs[1], expected)
    means, _ = probes.channel_moments(outputs[1])
    assert torch.allclose(means, expected.double().mean((0, 2, 3)))


def test_sgd_direction_is_the_optimiser_step_per_unit_rate(batch):
    """theta - lr * sgd_direction(...) is exactly where torch.optim.SGD moves the weights, on the
    first step (no momentum buffer yet) and after two (momentum and weight decay both at work)."""
    x, y = batch
    model = model_pair()[0]
    lr, momentum, weight_decay = 0.05, 0.9, 5e-4
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for _ in range(3):
        params = list(model.parameters())
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        buffers = [optimizer.state.get(p, {}).get("momentum_buffer") for p in params]
        expected = [p.detach() - lr * d
                    for p, d in zip(params, probes.sgd_direction(params, grads, buffers, momentum, weight_decay))]
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
        for p, e in zip(params, expected):
            torch.testing.assert_close(p.detach(), e, rtol=1e-6, atol=1e-7)


def test_relative_loss_along_the_optimiser_step_is_the_loss_after_that_step(batch):
    """With the optimiser's direction, the relative loss at s = lr is the loss after the real
    step divided by the loss before it (train mode, same mini-batch)."""
    x, y = batch
    model = model_pair()[0]
    lr, momentum, weight_decay = 0.05, 0.9, 5e-4
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)

    def update(params, grads):
        buffers = [optimizer.state.get(p, {}).get("momentum_buffer") for p in params]
        return probes.sgd_direction(params, grads, buffers, momentum, weight_decay)

    for step in range(2):  # a momentum buffer to include
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    ratio = probes.relative_loss_along_gradient(model, x, y, torch.tensor([lr], dtype=torch.float64), update)
    optimizer.zero_grad()
    loss0 = F.cross_entropy(model(x), y)
    loss0.backward()
    optimizer.step()
    with torch.no_grad():
        assert ratio.item() == pytest.approx((F.cross_entropy(model(x), y) / loss0).item(), rel=1e-4)


def test_signal_propagation_of_the_plain_network_and_restored_state(batch):
    x, _ = batch
    model = model_pair()[0]  # with BN, train mode: the running statistics must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = probes.signal_propagation(model, x)
    assert list(rows) == list(range(1, 10))  # ResNet-20: 9 blocks
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # block 1 by hand: relu(bn2(conv2(relu(bn1(conv1(h))))) + h), h the stem's output
    with torch.no_grad():
        h = F.relu(model.bn1(model.conv1(x)))
        block = model.layer1[0]
        branch = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(h)))))
        out = F.relu(branch + h)
    means, stds = probes.channel_moments(out)
    assert rows[1]["mean_sq"] == pytest.approx(means.square().mean().item(), rel=1e-5)
    assert rows[1]["variance"] == pytest.approx(stds.square().mean().item(), rel=1e-5)
    assert rows[1]["branch_variance"] == pytest.approx(probes.channel_moments(branch)[1].square().mean().item(), rel=1e-5)


@pytest.mark.parametrize("residual", ["skipinit", "fixup"])
def test_signal_propagation_of_zero_initialised_branches(batch, residual):
    """SkipInit and Fixup start with every branch at 0: the stream passes stage 1's identity
    shortcuts unchanged (the stem's output is non-negative, so the block's ReLU keeps it)."""
    x, _ = batch
    torch.manual_seed(0)
    rows = probes.signal_propagation(build_model("resnet20", bn=False, residual=residual,
                                                 shortcut="A" if residual == "fixup" else None), x)
    assert all(r["branch_variance"] == 0 for r in rows.values())
    assert rows[1]["variance"] == rows[2]["variance"] == rows[3]["variance"] > 0


def test_signal_propagation_needs_residual_blocks(batch):
    with pytest.raises(ValueError, match="needs a CIFAR ResNet's residual blocks, got Linear"):
        probes.signal_propagation(nn.Linear(3, 3), batch[0])
