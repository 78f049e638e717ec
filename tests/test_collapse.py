"""shared.figures.collapse: the step-by-step trace of the first updates, against closed forms and torch's SGD."""
import pytest
import torch
import torch.nn.functional as F
from helpers import random_cifar

from shared.figures.collapse import (VARIANTS, CollapseConfig, _rate, findings, input_share, measure, summary_table,
                             variant_configs)
from shared.data import TrainLoader
from shared.models import build_model
from shared.results import config_hash
from shared.results import StoredRun



def test_input_share_closed_forms():
    assert input_share(torch.ones(5, 3)) == 0                   # every image the same: no input share
    assert input_share(torch.tensor([[1.0, 0], [-1.0, 0]])) == pytest.approx(1.0)  # zero mean: all of it
    h = torch.tensor([[3.0], [1.0]])                             # mean 2, deviations +-1: 2 / (9 + 1)
    assert input_share(h) == pytest.approx(0.2)


def test_warmup_rate_rises_linearly_to_lr():
    cfg = CollapseConfig(lr=1e-4, warmup_steps=4)
    assert [_rate(cfg, s) for s in range(6)] == pytest.approx([2.5e-5, 5e-5, 7.5e-5, 1e-4, 1e-4, 1e-4])
    assert _rate(CollapseConfig(lr=1e-4), 0) == 1e-4


def test_trace_follows_torch_sgd_step_by_step():
    """The trace's losses are those of plain torch SGD on the seed's mini-batches, and the last row
    is measured after `steps` updates without training on it."""
    data = random_cifar(n_train=64)
    cfg = CollapseConfig(arch="resnet20", steps=3, batch_size=16, health_every=2, health_images=8)
    result = measure(cfg, data, seed=1)
    torch.manual_seed(1)
    model = build_model("resnet20", bn=False, fc_init=cfg.fc_init, shortcut=cfg.shortcut)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=5e-4)
    loader = TrainLoader(data.train_x, data.train_y, data.mean, data.std, 16, 1)
    losses = []
    for _, (x, y) in zip(range(4), loader.epoch(0)):
        loss = F.cross_entropy(model(x), y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    rows = result["rows"]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert [r["loss"] for r in rows] == pytest.approx(losses, rel=1e-5)
    assert "update_rel" in rows[0] and "update_rel" not in rows[-1]
    assert sorted(result["health"], key=int) == ["0", "2", "3"]
    assert all(0 <= r["feature_input_share"] <= 1 for r in rows)


def test_clipping_bounds_the_first_update():
    data = random_cifar(n_train=64)
    base = CollapseConfig(arch="resnet20", steps=1, batch_size=16, health_images=8, lr=1e-2)
    free = measure(base, data, 0)["rows"][0]
    clipped = measure(CollapseConfig(**{**base.__dict__, "clip_norm": 1e-3}), data, 0)["rows"][0]
    assert free["grad_norm"] == pytest.approx(clipped["grad_norm"])  # recorded before clipping
    assert free["grad_norm"] > 1e-3
    assert clipped["update_rel"] < free["update_rel"]


def test_variants_differ_in_identity_and_tabulate():
    cfgs = variant_configs("smoke")
    assert list(cfgs) == list(VARIANTS)
    assert len({config_hash(c) for c in cfgs.values()}) == len(cfgs)
    data = random_cifar(n_train=64)
    found = {name: [StoredRun(measure(cfg, data, 0), {"seed": 0})] for name, cfg in list(cfgs.items())[:2]}
    table = summary_table(found)
    assert list(table.index.get_level_values("variant")) == list(found)
    assert (table["updates"] == cfgs["no BN, paper protocol"].steps).all() and cfgs["BN, paper protocol"].steps == 6


@pytest.mark.parametrize("bad", [dict(steps=0), dict(momentum=-0.1), dict(clip_norm=0.0), dict(warmup_steps=-1),
                                 dict(lr=0.0)])
def test_bad_config_names_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        CollapseConfig(**bad)


def test_findings_read_their_numbers_off_the_traces():
    data = random_cifar(n_train=64)
    cfgs = variant_configs("smoke")
    found = {name: [StoredRun(measure(cfgs[name], data, 0), {"seed": 0})]
             for name in ("no BN, paper protocol", "BN, paper protocol", "no BN, no momentum")}
    rows = found["no BN, paper protocol"][0].result["rows"]
    lines = findings(found)
    assert len(lines) == 5
    assert f"the loss is {rows[0]['loss']:.0f}" in lines[0]
    assert f"shrinks the features {rows[0]['feature_norm'] / rows[1]['feature_norm']:.0f}-fold" in lines[1]
    assert lines[4].startswith("no BN, no momentum: after 6 updates")
    assert findings({}) == ["No trace of the paper's protocol without BN is stored yet."]
