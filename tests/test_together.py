"""Several runs trained as one model (grouped convolutions) equal each run trained alone."""
from dataclasses import replace

import pytest
import torch
from helpers import QUIET, TINY, context, random_cifar

from shared.config import network_fields, train_config
from shared.models import build_model, count_parameters, stack_models, unstack_state
from shared.results import Store
from shared.train import StackedSGD, check_stackable, run_grid, together_groups, train, train_together


def seeded_models(seeds, bn=True, arch="resnet20"):
    """The networks that training builds for these seeds (the default network's shortcut and inits)."""
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build_model(bn=bn, **network_fields(train_config("smoke", arch=arch))))
    return models


@pytest.mark.parametrize("bn", [True, False])
def test_stacked_network_computes_each_networks_function(bn):
    models = seeded_models([0, 1, 2], bn)
    stacked = stack_models(models)
    assert count_parameters(stacked) == 3 * count_parameters(models[0])
    xs = [torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    for mode in ("train", "eval"):
        for m in (stacked, *models):
            m.train(mode == "train")
        out = stacked(torch.cat(xs, dim=1))  # [6, 3, 10]
        for k, (model, x) in enumerate(zip(models, xs)):
            torch.testing.assert_close(out[:, k], model(x), rtol=1e-5, atol=1e-5)
    for k, model in enumerate(models):  # BN statistics were updated per run, as alone
        state = unstack_state(stacked, k, model)
        assert state.keys() == model.state_dict().keys()
        for name, value in model.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=1e-5, atol=1e-6)


def test_only_cifar_resnets_of_one_kind_stack():
    with pytest.raises(ValueError, match="only single CIFAR ResNets"):
        stack_models([build_model("resnet101"), build_model("resnet101")])
    with pytest.raises(ValueError, match="same layers"):
        stack_models(seeded_models([0], True) + seeded_models([1], False))
    with pytest.raises(ValueError, match="must share bn: got True and False"):
        check_stackable([train_config("smoke"), train_config("smoke", bn=False)])
    with pytest.raises(ValueError, match="only CIFAR ResNets"):
        check_stackable([train_config("paper", arch="resnet101"), train_config("paper", arch="resnet101", lr=1)])
    check_stackable([train_config("smoke"), train_config("smoke", lr=1e-3, epochs=1, max_epochs=1)])


def test_stacked_sgd_equals_torch_sgd_per_run():
    torch.manual_seed(0)
    singles = [torch.randn(4, 3, requires_grad=True) for _ in range(2)]
    stacked = torch.cat([p.detach() for p in singles]).requires_grad_()
    lrs = [0.1, 0.003]
    reference = [torch.optim.SGD([p], lr=lr, momentum=0.9, weight_decay=5e-4) for p, lr in zip(singles, lrs)]
    ours = StackedSGD([stacked], lrs, momentum=0.9, weight_decay=5e-4)
    for step in range(4):
        grads = [torch.randn(4, 3) for _ in singles]
        if step == 2:  # a schedule drop for one run only
            reference[0].param_groups[0]["lr"] = 0.01
            ours.param_groups[0]["lr"] = [0.01, 0.003]
        for p, g, opt in zip(singles, grads, reference):
            p.grad = g.clone()
            opt.step()
        stacked.grad = torch.cat(grads)
        ours.step()
        torch.testing.assert_close(stacked.detach(), torch.cat([p.detach() for p in singles]),
                                   rtol=1e-6, atol=1e-7)


def without_time(result):
    return {**{k: v for k, v in result.items() if k not in ("metrics", "engine")},
            "metrics": [{k: v for k, v in m.items() if k != "wall_s"} for m in result["metrics"]]}


def assert_same_run(together, alone, examples: int):
    """Equal to float rounding; an accuracy may differ by one example of `examples` (a near-tie
    between two logits that rounding tips the other way, seen on some CPUs)."""
    a, b = without_time(together), without_time(alone)
    assert a.keys() == b.keys() and a["status"] == b["status"] and a["epochs"] == b["epochs"]
    assert a["diverged_step"] == b["diverged_step"]
    for ma, mb in zip(a["metrics"], b["metrics"], strict=True):
        assert ma.keys() == mb.keys()
        for key in ma:
            tolerance = 1.01 / examples if key.endswith("_acc") else 1e-4
            expected = mb[key] if mb[key] is None else pytest.approx(mb[key], rel=1e-3, abs=tolerance)
            assert ma[key] == expected, key


def test_runs_trained_together_equal_runs_trained_alone(tmp_path):
    """Different rates, seeds and schedule lengths in one stack; weights and metrics as alone."""
    data = random_cifar(n_train=96, n_test=40)
    cfgs = [train_config("smoke", lr=lr, epochs=e, max_epochs=e, **TINY)
            for lr, e in ((0.05, 2), (0.01, 3), (0.02, 2))]
    seeds = [0, 1, 0]
    together = train_together(cfgs, data, seeds, tmp_path / "together.pt", ctx=QUIET)
    stacked_state = torch.load(tmp_path / "together.pt", weights_only=True)["model"]
    stacked = stack_models(seeded_models(seeds))
    stacked.load_state_dict(stacked_state)
    assert [r["engine"]["runs_together"] for r in together] == [3, 3, 3]
    for k, (cfg, seed) in enumerate(zip(cfgs, seeds)):
        alone = train(cfg, data, seed, tmp_path / f"alone{k}.pt", ctx=QUIET)
        assert_same_run(together[k], alone, examples=40)
        if cfg.epochs == 3:  # the longest run's final weights (shorter runs went on at rate 0)
            weights = torch.load(tmp_path / f"alone{k}.pt", weights_only=True)["model"]
            ours = unstack_state(stacked, k, seeded_models([seed])[0])
            names = [name for name, value in weights.items() if value.is_floating_point()]
            ours = torch.cat([ours[name].flatten() for name in names])
            theirs = torch.cat([weights[name].flatten() for name in names])
            # Rounding differences grow over SGD steps; here 1e-5 relative. Scaling the initial
            # weights by (1 + 2^-23), one float32 ulp, moves the same run's weights by 1.6e-4.
            assert (ours - theirs).norm() <= 1e-4 * theirs.norm()


def test_a_diverging_run_leaves_the_others_untouched(tmp_path):
    data = random_cifar(n_train=64, n_test=20)
    cfgs = [train_config("smoke", bn=False, lr=lr, epochs=2, max_epochs=2, **TINY) for lr in (1e4, 0.01)]
    together = train_together(cfgs, data, [3, 3], ctx=QUIET)
    assert together[0]["status"] == "diverged" and len(together[0]["metrics"]) == 1
    for cfg, result in zip(cfgs, together):
        assert_same_run(result, train(cfg, data, 3, ctx=QUIET), examples=20)


def test_grid_trained_together_stores_each_run(tmp_path, monkeypatch, tiny_image_folder):
    grid = [train_config("smoke", lr=lr, epochs=1, max_epochs=1, **TINY) for lr in (0.1, 0.01, 0.001)]
    ctx = context(Store(tmp_path / "results", tmp_path / "ck"), tiny_image_folder)
    runs = run_grid(grid, 4, "grid", ctx, together=2)
    assert [r.result["engine"]["runs_together"] for r in runs] == [2, 2, 1]
    assert all(r.provenance["seed"] == 4 and r.provenance["config"]["lr"] == c.lr
               for r, c in zip(runs, grid))
    assert not list((tmp_path / "ck").rglob("*.pt"))  # finished batches leave no checkpoint
    monkeypatch.setattr("shared.train.runner.train_together", lambda *a, **k: pytest.fail("retrained"))
    assert run_grid(grid, 4, "grid", ctx, together=2) == runs
    assert Store(tmp_path / "results").get("grid", grid[1], 4) == runs[1]


def test_compiled_training_equals_eager(tmp_path):
    data = random_cifar(n_train=64, n_test=20)
    cfg = train_config("smoke", lr=0.02, epochs=2, max_epochs=2, **TINY)
    eager = train(cfg, data, 0, ctx=QUIET)
    compiled = train(cfg, data, 0, ctx=replace(QUIET, compile=True))
    assert compiled["engine"]["compiled"] and not eager["engine"]["compiled"]
    assert_same_run(compiled, eager, examples=20)


def test_together_groups_share_everything_but_rate_and_length():
    grid = [train_config("smoke", bn=bn, lr=lr) for bn in (True, False) for lr in (0.1, 0.01, 0.001)]
    groups = together_groups(grid, 2)
    assert [[(c.bn, c.lr) for c in g] for g in groups] == [
        [(True, 0.1), (True, 0.01)], [(True, 0.001)], [(False, 0.1), (False, 0.01)], [(False, 0.001)]]
    wide = [train_config("paper", arch="resnet101", lr=lr) for lr in (0.1, 0.01)]
    assert together_groups(wide, 4) == [[wide[0]], [wide[1]]]  # ResNet-101 does not stack


def test_interrupted_batch_trained_together_resumes(tmp_path, monkeypatch, tiny_image_folder):
    import shared.train.loop as T
    grid = [train_config("smoke", lr=lr, epochs=2, max_epochs=2, **TINY) for lr in (0.1, 0.01)]
    ctx = context(Store(tmp_path / "results", tmp_path / "ck"), tiny_image_folder)
    real_run_epoch, epochs_trained = T.run_epoch, []

    def killed_in_second_epoch(cfgs, runs, loaders, data, states, steps):
        if states[0].epoch == 1:
            raise KeyboardInterrupt
        return real_run_epoch(cfgs, runs, loaders, data, states, steps)

    monkeypatch.setattr(T, "run_epoch", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, 0, "grid", ctx, together=2)
    assert len(list((tmp_path / "ck").rglob("together-*/seed0.pt"))) == 1

    def counting(cfgs, runs, loaders, data, states, steps):
        epochs_trained.append((len(cfgs), states[0].epoch))
        return real_run_epoch(cfgs, runs, loaders, data, states, steps)

    monkeypatch.setattr(T, "run_epoch", counting)
    runs = run_grid(grid, 0, "grid", ctx, together=2)
    assert epochs_trained == [(2, 1)]  # only the batch's second epoch is trained again
    assert [len(r.result["metrics"]) for r in runs] == [2, 2]
