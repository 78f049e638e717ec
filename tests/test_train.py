import pytest
import torch
from helpers import QUIET, TINY, context, random_cifar

from shared.config import train_config
from shared.grids import divergence_grid, fig1_grid, sweep_grid, warmup_grid
from shared.plotting import runs_summary
from shared.results import Store
from shared.data import load_cifar10
from shared.results import StoredRun
from shared.train import (divergence_thresholds, divergent,
                          first_step, learning_failure, lr_at, next_total_epochs, plateaued,
                          run_grid, run_training, train)
from shared.train.__main__ import main


def test_schedule_divides_the_rate_at_50_and_75_percent():
    cfg = train_config("paper")
    assert [lr_at(cfg, e, 165) for e in (0, 81, 82, 122, 123, 164)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_a_warmup_trains_its_first_epochs_at_a_tenth_of_the_rate_then_follows_the_schedule():
    """He et al.'s warm-up (the `warmup` grid, an ablation of Fig 1): 0.01 for the first epoch at
    lr 0.1, then the schedule's drops where they were without it."""
    (cfg,) = warmup_grid("cpu")
    assert (cfg.bn, cfg.lr, cfg.warmup_epochs) == (True, 0.1, 1) and cfg.epochs == 15
    assert [lr_at(cfg, e, 15) for e in (0, 1, 6, 7, 10, 11, 14)] == pytest.approx(
        [0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    plain = train_config("cpu")
    assert [lr_at(plain, e, 15) for e in range(1, 15)] == [lr_at(cfg, e, 15) for e in range(1, 15)]


def test_plateau_detector_on_synthetic_curves():
    flat = [0.3 + 0.01 * (-1) ** e for e in range(40)]
    falling = [2.0 * 0.97 ** e for e in range(40)]  # 3 % per epoch: still learning
    slow = [1.0 - 0.0001 * e for e in range(40)]    # 0.1 % per window: a plateau
    assert plateaued(flat, 10, 0.02) and plateaued(slow, 10, 0.02)
    assert not plateaued(falling, 10, 0.02)
    assert not plateaued(flat[:19], 10, 0.02)       # too short to judge


def test_doubling_rule_doubles_at_the_first_drop_until_plateau_or_cap():
    cfg = train_config("paper")                      # 165 epochs, cap 2640
    falling = [2.0 * 0.97 ** e for e in range(82)]
    flat = [0.3] * 82
    assert next_total_epochs(cfg, 82, 165, falling) == 330
    assert next_total_epochs(cfg, 82, 165, flat) == 165
    assert next_total_epochs(cfg, 81, 165, falling) == 165    # only at the first drop
    assert next_total_epochs(cfg, 1320, 2640, falling) == 2640  # 5280 would pass the cap


def final_weights(cfg, data, seed, checkpoint=None, on_epoch_end=None):
    result = train(cfg, data, seed, checkpoint, QUIET, on_epoch_end=on_epoch_end)
    saved = torch.load(checkpoint, weights_only=True)["model"] if checkpoint else None
    return result, saved


def test_resumed_training_is_bit_identical(tmp_path):
    data = random_cifar()
    cfg = train_config("smoke", epochs=2, max_epochs=2, **TINY)
    straight, weights = final_weights(cfg, data, 5, tmp_path / "straight.pt")

    class Killed(Exception):
        pass

    def kill_after_first_epoch(epochs_done):
        if epochs_done == 1:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, data, 5, tmp_path / "resumed.pt", QUIET, on_epoch_end=kill_after_first_epoch)
    assert torch.load(tmp_path / "resumed.pt", weights_only=True)["runs"][0]["epoch"] == 1
    resumed, resumed_weights = final_weights(cfg, data, 5, tmp_path / "resumed.pt")
    assert set(weights) == set(resumed_weights)
    assert all(torch.equal(weights[k], resumed_weights[k]) for k in weights)
    drop_time = lambda r: [{k: v for k, v in m.items() if k != "wall_s"} for m in r["metrics"]]
    assert drop_time(straight) == drop_time(resumed)
    assert straight["status"] == "completed" and len(straight["metrics"]) == 2
    assert resumed["code"] == straight["code"] and len(straight["code"]) == 1  # one commit: one entry


def test_a_run_resumed_under_another_commit_records_both(tmp_path, monkeypatch):
    """The store's provenance names the commit that finished a run; its result lists every commit
    that trained it, in order, so a resume across commits is not hidden."""
    import shared.train.loop as T
    data = random_cifar()
    cfg = train_config("smoke", epochs=2, max_epochs=2, **TINY)

    class Killed(Exception):
        pass

    def kill_after_first_epoch(epochs_done):
        if epochs_done == 1:
            raise Killed

    monkeypatch.setattr(T, "git_commit", lambda: "a" * 40)
    with pytest.raises(Killed):
        train(cfg, data, 5, tmp_path / "run.pt", QUIET, on_epoch_end=kill_after_first_epoch)
    monkeypatch.setattr(T, "git_commit", lambda: "b" * 40 + "+dirty")
    result = train(cfg, data, 5, tmp_path / "run.pt", ctx=QUIET)
    assert result["code"] == ["a" * 40, "b" * 40 + "+dirty"]
    found = [StoredRun(result, {"seed": 5, "device": "cpu", "data": None, "git_commit": "b" * 40 + "+dirty",
                             "date": "2026-12-06T00:00:00"})]
    assert "code aaaaaaa, bbbbbbb+dirty;" in runs_summary(found, "smoke")


def test_doubling_continues_the_run_as_if_started_with_the_final_length(tmp_path):
    data = random_cifar(n_train=64, n_test=20)
    # plateau_window=10 can never be judged within 8 epochs, so every first drop doubles
    doubled = train_config("smoke", epochs=2, max_epochs=8, plateau_window=10, **TINY)
    fixed = train_config("smoke", epochs=8, max_epochs=8, **TINY)
    a, wa = final_weights(doubled, data, 1, tmp_path / "a.pt")
    b, wb = final_weights(fixed, data, 1, tmp_path / "b.pt")
    assert a["epochs"] == b["epochs"] == 8
    assert [m["lr"] for m in a["metrics"]] == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_warmup_epoch_is_an_epoch_at_a_tenth_of_the_rate(tmp_path):
    """The loop trains the warm-up at lr / 10: its first epoch equals a run at that rate."""
    data = random_cifar(n_train=64, n_test=20)
    warm = train_config("smoke", epochs=2, max_epochs=2, lr_drops=(), warmup_epochs=1, **TINY)
    slow = train_config("smoke", epochs=2, max_epochs=2, lr_drops=(), lr=0.01, **TINY)
    a, b = (train(cfg, data, 3, ctx=QUIET) for cfg in (warm, slow))
    assert [m["lr"] for m in a["metrics"]] == pytest.approx([0.01, 0.1])
    first = lambda r: {k: v for k, v in r["metrics"][0].items() if k not in ("wall_s", "lr")}
    assert first(a) == first(b)
    assert a["metrics"][1]["train_loss"] != b["metrics"][1]["train_loss"]


def test_absurd_rate_diverges_as_a_result_not_a_crash():
    data = random_cifar()
    cfg = train_config("smoke", bn=False, lr=1e4, epochs=3, max_epochs=3, **TINY)
    result = train(cfg, data, 0, ctx=QUIET)
    assert result["status"] == "diverged" and result["failure"] == "diverged"
    assert result["diverged_epoch"] == 1 and 1 <= result["diverged_step"] < 4
    trace = torch.tensor(result["diverged_trace"])
    assert len(trace) == result["diverged_step"] + 1
    assert not (trace[-1] <= 1e3) and (trace[:-1] <= 1e3).all()  # the last one is the first bad one
    assert result["first_above_step"] == result["diverged_step"]
    assert len(result["metrics"]) == 1


def test_divergence_needs_an_update_and_a_loss_far_above_the_start():
    losses = torch.tensor([[2e3, 2.3], [1.5e4, 2.2], [2.5e4, float("nan")], [1e2, 5e3]])
    thresholds = divergence_thresholds([train_config("paper")] * 2, losses[0])
    assert thresholds.tolist() == [2e4, 1e3]  # max(1e3, 10 x the initial loss)
    bad = divergent(losses, thresholds, first_update_step=1)
    assert bad[:, 0].tolist() == [False, False, True, False]  # 2e3 at step 0 is the start, not a blow-up
    assert bad[:, 1].tolist() == [False, False, True, True]   # NaN, then 5e3 > 1e3
    assert first_step(bad[:, 0]) == 2 and first_step(torch.zeros(3, dtype=torch.bool)) is None
    assert divergent(losses, thresholds, first_update_step=0)[0].tolist() == [False, False]


def test_a_run_that_has_diverged_stops_computing_within_the_epoch():
    data = random_cifar(n_train=32 * 25)
    cfg = train_config("smoke", bn=False, lr=1e4, epochs=2, max_epochs=2, **TINY)
    result = train(cfg, data, 0, ctx=QUIET)
    assert result["status"] == "diverged" and result["diverged_step"] < cfg.divergence_check_every
    assert result["metrics"][0]["steps"] == cfg.divergence_check_every  # of 25: stopped at the first check


def test_step_losses_are_recorded_for_the_first_epochs_when_asked():
    data = random_cifar(n_train=96)
    cfg = train_config("smoke", lr=0.01, epochs=2, max_epochs=2, record_step_losses=1, **TINY)
    result = train(cfg, data, 0, ctx=QUIET)
    first, second = result["metrics"]
    assert len(first["step_losses"]) == 3 and "step_losses" not in second
    assert first["step_losses"][0] == pytest.approx(result["initial_loss"])
    assert result["first_above_step"] is None and result["status"] == "completed"


def test_learning_failure_names_why_a_run_did_not_learn():
    epochs = lambda *rows: [{"train_loss": loss, "test_acc": acc} for loss, acc in rows]
    assert learning_failure(2.3, epochs((1.9, 0.4))) is None
    assert learning_failure(2.3, epochs((3.1, 0.1), (1.9, 0.4))) is None  # a rise in epoch 1 is no failure
    assert learning_failure(2.3, epochs((2.31, 0.4))) == "train loss not below the initial loss"
    assert learning_failure(2.3, epochs((1.9, 0.1))) == "final test accuracy at chance"


@pytest.mark.slow
def test_resnet110_without_bn_is_not_diverged_on_its_initial_loss(real_cifar10):
    """The audit's case: ResNet-110 without BN (option A, Xavier on every layer) starts above the
    paper's 1e3 on seeds 1 and 2 (losses 1086 and 1418); at lr 1e-4 training makes it smaller, so
    it has not diverged."""
    data = load_cifar10(real_cifar10).subset(None, 100)
    cfg = train_config("paper", bn=False, lr=1e-4, epochs=1, max_epochs=1, steps_per_epoch=3,
                       eval_batch_size=100, shortcut="A", fc_init="same")
    for seed in (1, 2):
        result = train(cfg, data, seed, ctx=QUIET)
        assert result["initial_loss"] > 1e3 and result["first_above_step"] == 0
        assert result["status"] == "completed" and result["diverged_step"] is None


def test_small_rate_does_not_diverge_and_learns():
    data = random_cifar(n_train=256)
    cfg = train_config("smoke", epochs=4, max_epochs=4, lr=0.05, **TINY)
    result = train(cfg, data, 0, ctx=QUIET)
    losses = [m["train_loss"] for m in result["metrics"]]
    assert result["status"] == "completed" and result["diverged_step"] is None
    assert losses[-1] < losses[0]
    assert all(0 <= m["test_acc"] <= 1 for m in result["metrics"])


def test_run_training_stores_and_then_loads(tmp_path, monkeypatch, tiny_image_folder):
    cfg = train_config("smoke", epochs=1, max_epochs=1, **TINY)
    ctx = context(Store(tmp_path / "results", tmp_path / "ck"), tiny_image_folder)
    first = run_training(cfg, 2, "unit", ctx)
    assert first.result["status"] == "completed"
    assert first.provenance["seed"] == 2 and "cpu" in first.provenance["device"]
    assert first.provenance["data"].startswith(f"image-folder tree {tiny_image_folder.name}")
    monkeypatch.setattr("shared.train.runner.train", lambda *a, **k: pytest.fail("retrained"))
    assert run_training(cfg, 2, "unit", ctx) == first
    assert Store(tmp_path / "results").get("unit", cfg, 2) == first


def test_fig1_grid_and_sweep_cover_the_papers_settings():
    grid = fig1_grid("paper")
    assert [(c.bn, c.lr) for c in grid][:4] == [(True, 0.1), (True, 0.003), (True, 1e-4), (False, 1e-4)]
    assert all(c.arch == "resnet110" and c.epochs == 165 for c in grid)
    rates = sorted({c.lr for c in sweep_grid("paper")})
    assert len(rates) == 11 and rates[0] == 1e-5 and rates[-1] == 1.0
    assert all(b / a in (pytest.approx(3), pytest.approx(10 / 3)) for a, b in zip(rates, rates[1:]))
    assert set(fig1_grid("paper")) <= set(sweep_grid("paper"))  # on its own schedule the sweep reuses Fig 1's runs
    assert sorted({c.lr for c in sweep_grid("cpu", rates_per_decade=1)}) == [1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0]
    with pytest.raises(ValueError, match="unknown rates per decade 3; valid: 1, 2"):
        sweep_grid("cpu", rates_per_decade=3)
    short = sweep_grid("cpu")  # the full-data sweep: by default the cpu schedule cut to 5 epochs
    assert {(c.epochs, c.max_epochs, c.lr_drops, c.train_subset) for c in short} == {(5, 5, (0.5, 0.75), None)}
    assert short == sweep_grid("cpu", epochs=5) and [c.lr for c in short] == [c.lr for c in sweep_grid("paper")]
    assert set(fig1_grid("cpu")) <= set(sweep_grid("cpu", epochs=15))  # its own schedule: Fig 1's runs


def test_interrupted_grid_resumes_where_it_stopped(tmp_path, monkeypatch, tiny_image_folder):
    import shared.train.loop as T
    grid = fig1_grid("smoke", epochs=2, max_epochs=2, **TINY)[:2]
    ctx = context(Store(tmp_path / "results", tmp_path / "ck"), tiny_image_folder)
    real_run_epoch, calls = T.run_epoch, []

    def killed_in_second_run(cfgs, runs, loaders, data, states, steps):
        if cfgs == [grid[1]] and states[0].epoch == 1:
            raise KeyboardInterrupt  # the batch is killed during the second run's second epoch
        return real_run_epoch(cfgs, runs, loaders, data, states, steps)

    monkeypatch.setattr(T, "run_epoch", killed_in_second_run)
    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, 0, "grid", ctx)
    assert Store(tmp_path / "results").get("grid", grid[0], 0) is not None
    assert Store(tmp_path / "results").get("grid", grid[1], 0) is None

    def counting(cfgs, *args):
        calls.append(cfgs[0])
        return real_run_epoch(cfgs, *args)

    monkeypatch.setattr(T, "run_epoch", counting)
    runs = run_grid(grid, 0, "grid", ctx)
    assert calls == [grid[1]]  # only the interrupted run's last epoch is trained again
    assert [len(r.result["metrics"]) for r in runs] == [2, 2]


def test_the_training_command_runs_grids_into_the_store_and_resumes(tmp_path, monkeypatch, capsys,
                                                                    tiny_image_folder):
    monkeypatch.setattr("shared.paths.RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setattr("shared.paths.CHECKPOINT_ROOT", tmp_path / "ck")
    argv = ["fig1", "divergence", "--preset", "smoke", "--seeds", "0", "--data-dir", str(tiny_image_folder),
            "--device", "cpu"]
    main(argv)
    out = capsys.readouterr().out
    assert "fig1 preset smoke seed 0: 6 runs" in out and "divergence preset smoke seed 0: 4 runs" in out
    stored = list((tmp_path / "results" / "training").glob("*/seed0/result.json"))
    assert len(stored) == 10 and not list((tmp_path / "ck").rglob("*.pt"))  # no checkpoint left
    divergence = [Store(tmp_path / "results").get("training", c, 0) for c in divergence_grid("smoke")]
    assert all(len(r.result["metrics"][0]["step_losses"]) == r.result["metrics"][0]["steps"]
               for r in divergence)
    monkeypatch.setattr("shared.train.runner.train", lambda *a, **k: pytest.fail("retrained"))
    main(argv)  # everything is stored: nothing is trained again


def test_a_runs_end_is_stored_as_before_and_read_back_from_a_checkpoint():
    from dataclasses import asdict

    from shared.train import RunEnd, RunState

    assert RunEnd("completed", None).stored() == {"status": "completed", "failure": None,
                                                  "diverged_step": None, "diverged_trace": []}
    diverged = RunEnd("diverged", "diverged", 12, 1, [2.3, 1e9])
    assert diverged.stored()["diverged_epoch"] == 1
    state = RunState(total_epochs=3, epoch=1, result=diverged)
    assert RunState(**asdict(state)) == state and not state.active


def test_the_training_command_takes_a_precision_auto_resolved_by_the_cpu(tmp_path, monkeypatch, capsys,
                                                                          tiny_image_folder):
    monkeypatch.setattr("shared.paths.RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setattr("shared.paths.CHECKPOINT_ROOT", tmp_path / "ck")
    monkeypatch.setattr("shared.precision.cpu_bf16_units", lambda: ("amx_bf16", "avx512_bf16"))
    monkeypatch.setattr("shared.precision.cpu_bf16_speedup", lambda: 3.8)  # bf16 pays (as with AMX)
    main(["divergence", "--preset", "smoke", "--seeds", "0", "--data-dir", str(tiny_image_folder),
          "--device", "cpu", "--precision", "auto"])
    store = Store(tmp_path / "results")
    runs = [store.get("training", c, 0) for c in divergence_grid("smoke", precision="bf16")]
    assert all(r is not None and r.provenance["precision"] == "bf16" for r in runs)
    assert all(r.result["engine"]["precision"] == "bf16" for r in runs)
    assert runs[0].provenance["cpu"]["bf16_units"] is not None
    with pytest.raises(SystemExit):
        main(["divergence", "--preset", "smoke", "--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


def test_the_training_command_trains_only_the_settings_named(tmp_path, monkeypatch, capsys, tiny_image_folder):
    monkeypatch.setattr("shared.paths.RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setattr("shared.paths.CHECKPOINT_ROOT", tmp_path / "ck")
    main(["fig1", "--preset", "smoke", "--seeds", "0", "--data-dir", str(tiny_image_folder), "--device", "cpu",
          "--settings", "no BN, lr 0.1", "BN, lr 0.003"])
    assert "fig1 preset smoke seed 0: 2 runs" in capsys.readouterr().out
    store = Store(tmp_path / "results")
    assert [store.get("training", c, 0) is not None for c in fig1_grid("smoke")] == [False, True, False, False,
                                                                                     False, True]
    with pytest.raises(SystemExit):
        main(["fig1", "--preset", "smoke", "--settings", "BN, lr 1"])
    assert "unknown setting 'BN, lr 1'; valid: BN, lr 0.0001, BN, lr 0.003" in capsys.readouterr().err
    main(["sweep", "--preset", "smoke", "--epochs", "1", "--settings", "no BN, lr 1", "--seeds", "0",
          "--data-dir", str(tiny_image_folder), "--device", "cpu"])
    assert store.get("training", sweep_grid("smoke", 1, epochs=1)[-1], 0).result["epochs"] == 1


def test_a_truncated_run_extended_continues_the_shorter_one_to_the_bit(tmp_path, tiny_image_folder):
    """The first E epochs of the paper's protocol (`start_config`): a longer run starts from the
    final state kept in the stored shorter run's folder, on another machine too (a store with
    other checkpoints), trains only the epochs it lacks, and ends exactly where training it from
    scratch ends; only the longest run keeps its state."""
    import shared.train.loop as T
    from shared.grids import start_config
    tiny = {k: v for k, v in TINY.items() if k != "arch"}
    cfgs = {e: start_config("resnet20", False, e, "smoke", lr=0.05, record_health=20, **tiny) for e in (1, 3)}
    short_store = Store(tmp_path / "a" / "results", tmp_path / "a" / "ck")
    run_training(cfgs[1], 0, "start", context(short_store, tiny_image_folder))
    epochs_trained = []
    real = T.run_epoch

    def counting(cfgs_, runs, loaders, data, states, steps):
        epochs_trained.append(states[0].epoch)
        return real(cfgs_, runs, loaders, data, states, steps)

    T.run_epoch, original = counting, T.run_epoch
    assert short_store.state("start", cfgs[1], 0).exists()
    elsewhere = Store(short_store.root, tmp_path / "other-machine" / "ck")  # a copy of the store, on another machine
    try:
        extended = run_training(cfgs[3], 0, "start", context(elsewhere, tiny_image_folder))
    finally:
        T.run_epoch = original
    assert epochs_trained == [1, 2]  # the first epoch was the stored run's
    assert elsewhere.state("start", cfgs[3], 0).exists() and not elsewhere.state("start", cfgs[1], 0).exists()
    scratch = run_training(cfgs[3], 0, "start",
                           context(Store(tmp_path / "b" / "results", tmp_path / "b" / "ck"), tiny_image_folder))
    strip = lambda r: [{k: v for k, v in m.items() if k != "wall_s"} for m in r.result["metrics"]]
    assert strip(extended) == strip(scratch)
    assert extended.result["metrics"][0] == short_store.get("start", cfgs[1], 0).result["metrics"][0]
    health = extended.result["metrics"][-1]["health"]
    assert health["grad_norm"] > 0 and 0 <= health["features"]["input_share"] <= 1
    assert health["features"]["norm"] > 0


def test_the_start_grid_is_the_papers_protocol_at_a_constant_rate():
    from shared.grids import START_LR, is_truncated, start_grid
    grid = start_grid("cpu")
    assert all(c.lr == START_LR and c.lr_drops == () and c.precision == "bf16" and c.train_subset is None
               and c.record_health > 0 and is_truncated(c) for c in grid)
    assert not is_truncated(start_grid("smoke")[0])  # its epochs are capped: not the protocol's
    assert [(c.arch, c.bn, c.epochs) for c in grid][:2] == [("resnet110", False, 60), ("resnet56", False, 30)]
    assert {c.epochs for c in start_grid("cpu", epochs=5)} == {5}
    assert not any(is_truncated(c) for c in fig1_grid("cpu") + warmup_grid("cpu"))
