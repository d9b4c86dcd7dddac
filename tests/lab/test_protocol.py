"""The protocol on tiny problems: tuning picks the hand-computed best learning rate, seeds
rerun the best setting, resume skips finished runs, Ctrl-C keeps them, workers agree."""

import numpy as np
import pytest

from ermlab.lab import problems, protocol, results
from ermlab.lab.problems import functions

RUN_JOB = protocol.run_job


def quadratic_loss_after(eta, steps):
    """½ Σ λ_i ((1 − ηλ_i)^T θ0_i)², gradient descent on ½(x² + κy²) by hand."""
    lam = np.array([1.0, functions.CONDITION])
    start = np.array(functions.FUNCTIONS["quadratic"].start)
    return 0.5 * np.sum(lam * ((1 - eta * lam) ** steps * start) ** 2)


def test_tuning_picks_the_learning_rate_a_hand_computation_says_is_best(tmp_path):
    problem = problems.get("quadratic", epochs=4, steps_per_epoch=10)
    plan = protocol.Protocol(optimizers=["sgd"], trials=5, lr_range=(0.01, 0.05), seeds=1)
    study = protocol.Study([problem], plan, root=tmp_path, n_jobs=1)
    study.run()
    lrs = [s["lr"] for s in plan.settings("quadratic", "sgd")]
    hand = lrs[int(np.argmin([quadratic_loss_after(eta, 40) for eta in lrs]))]
    assert hand not in (min(lrs), max(lrs))  # the best is inside the grid, not at an end
    tuning = results.load_study(tmp_path)["tuning"]["quadratic"]["sgd"]
    assert tuning["best"] == {"lr": hand}
    assert tuning["metric"] == "valid_losses"
    np.testing.assert_allclose(tuning["scores"],
                               [-quadratic_loss_after(eta, 40) for eta in lrs], rtol=1e-9)


def test_every_optimizer_gets_the_same_budget_and_the_best_is_rerun_over_seeds(tmp_path):
    plan = protocol.Protocol(optimizers=["sgd", "momentum", "adam"], trials=3, seeds=3,
                             tune_momentum=True)
    problem = problems.get("relu4", budget="tiny", epochs=1)
    study = protocol.Study([problem], plan, root=tmp_path, n_jobs=1)
    lines = study.run()
    assert len(lines) == 3
    for optimizer in ("sgd", "momentum", "adam"):
        settings = plan.settings("relu4", optimizer)
        assert len(settings) == 3
        records = results.load_all(tmp_path, optimizer=optimizer)
        seeds = sorted(r["random_seed"] for r in records)
        assert seeds == [0, 0, 0, 1, 2]  # three tuning runs; seed 0 of the best is reused
        for record in records:
            assert record["num_epochs"] == 1 and record["problem"]["n_train"] == 300
    momentum = plan.settings("relu4", "momentum")
    assert {s["momentum"] for s in momentum} == {0.9, 0.99}
    assert {"beta1"} <= set(plan.settings("relu4", "adam")[-1])
    assert all(set(s) == {"lr"} for s in plan.settings("relu4", "sgd"))


def test_random_search_draws_log_uniformly_within_the_range_reproducibly():
    plan = protocol.Protocol(search="random", trials=200, lr_range=(1e-4, 1e-1),
                             tune_momentum=True)
    lrs = np.array([s["lr"] for s in plan.settings("p", "momentum")])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-1
    decades = np.log10(lrs)
    assert abs(decades.mean() - (-2.5)) < 0.15 and abs(np.median(decades) + 2.5) < 0.25
    momenta = [s["momentum"] for s in plan.settings("p", "momentum")]
    assert 0.5 <= min(momenta) and max(momenta) <= 0.99
    assert plan.settings("p", "momentum") == plan.settings("p", "momentum")
    assert plan.settings("p", "sgd") != plan.settings("q", "sgd")


def test_optimizer_factory_sets_beta1_and_fixed_options():
    from ermlab.nn.parameter import Parameter

    param = [Parameter(np.zeros(2))]
    adam = protocol.OptimizerFactory("adam", (("lr", 0.01), ("beta1", 0.8)))(param)
    assert adam.param_groups[0]["betas"] == (0.8, 0.999)
    nesterov = protocol.OptimizerFactory("nesterov", (("lr", 0.1),))(param)
    assert nesterov.param_groups[0]["nesterov"] and nesterov.param_groups[0]["momentum"] == 0.9


def counting_runner(monkeypatch, fail_at=None):
    calls = []

    def runner(job):
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        calls.append(job)
        return RUN_JOB(job)

    monkeypatch.setattr(protocol, "run_job", runner)
    return calls


def test_resume_skips_finished_runs_and_ctrl_c_keeps_them(tmp_path, monkeypatch):
    problem = problems.get("relu4", budget="tiny", epochs=1)
    plan = protocol.Protocol(optimizers=["sgd", "adam"], trials=3, seeds=2)
    study = protocol.Study([problem], plan, root=tmp_path, n_jobs=1)
    calls = counting_runner(monkeypatch, fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        study.run()
    assert len(calls) == 4
    files = results.run_files(tmp_path)
    assert len(files) == 4 and all(results.is_complete(f, 1) for f in files)
    assert not list(tmp_path.rglob("*.tmp"))
    calls = counting_runner(monkeypatch)
    study.run()
    assert len(calls) == 2 + 2  # the two tuning runs left, then one new seed per optimizer
    calls = counting_runner(monkeypatch)
    study.run()
    assert calls == []


def test_a_longer_budget_extends_runs_reproducing_their_first_epochs(tmp_path, monkeypatch):
    problem = problems.get("relu4", budget="tiny")
    plan = protocol.Protocol(optimizers=["adam"], trials=1, seeds=1)
    protocol.Study([problem], plan, root=tmp_path, n_jobs=1, epochs=1).run()
    (short,) = results.load_all(tmp_path)
    calls = counting_runner(monkeypatch)
    protocol.Study([problem], plan, root=tmp_path, n_jobs=1, epochs=2).run()
    (longer,) = results.load_all(tmp_path)
    assert len(calls) == 1 and longer["num_epochs"] == 2
    assert longer["test_losses"][:2] == short["test_losses"]
    assert longer["minibatch_train_losses"][:10] == short["minibatch_train_losses"]


def test_parallel_workers_write_the_same_runs_as_one_process(tmp_path):
    problem = problems.get("relu4", budget="tiny", epochs=1)
    plan = protocol.Protocol(optimizers=["sgd"], trials=2, seeds=2)
    protocol.Study([problem], plan, root=tmp_path / "one", n_jobs=1).run()
    protocol.Study([problem], plan, root=tmp_path / "two", n_jobs=2).run()
    one = results.load_all(tmp_path / "one")
    two = results.load_all(tmp_path / "two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        for key in ("train_losses", "test_accuracies", "minibatch_train_losses"):
            assert a[key] == b[key], key


def test_bad_protocols_are_one_clear_error_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'; the lab knows sgd"):
        protocol.Protocol(optimizers=["adamm"])
    with pytest.raises(ValueError, match="lr_range must be 0 < low ≤ high"):
        protocol.Protocol(lr_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="trials must be an integer ≥ 1"):
        protocol.Protocol(trials=0)
    with pytest.raises(ValueError, match="search must be 'grid' or 'random'"):
        protocol.Protocol(search="bayes")
    problem = problems.get("booth", budget="tiny")
    with pytest.raises(ValueError, match="problem names must differ"):
        protocol.Study([problem, problem], root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_shorter_study_into_a_longer_ones_folder_scores_its_own_epochs(tmp_path, capsys):
    """The 3-epoch files stay, but tuning, seeds, summary and report read 1 epoch of them:
    exactly what a fresh 1-epoch study finds."""
    from ermlab.cli import main

    problem = problems.get("rosenbrock", steps_per_epoch=20)
    plan = protocol.Protocol(optimizers=["sgd", "adam"], trials=3, lr_range=(1e-4, 3e-3),
                             seeds=2)
    protocol.Study([problem], plan, root=tmp_path / "both", n_jobs=1, epochs=3).run()
    reused = protocol.Study([problem], plan, root=tmp_path / "both", n_jobs=1, epochs=1)
    fresh = protocol.Study([problem], plan, root=tmp_path / "fresh", n_jobs=1, epochs=1)
    lines, fresh_lines = reused.run(), fresh.run()
    kept = results.load_all(tmp_path / "both")
    assert {r["num_epochs"] for r in kept if not r["diverged"]} == {3}  # not rerun, not cut
    assert reused.tuning() == fresh.tuning()
    study = results.load_study(tmp_path / "both")
    assert study["tuning"] == results.load_study(tmp_path / "fresh")["tuning"]
    assert study["epochs"] == {"rosenbrock": 1}
    for a, b in zip(reused.final_records(reused.tuning()), fresh.final_records(fresh.tuning())):
        for key in ("train_losses", "test_losses", "minibatch_train_losses", "trajectory",
                    "num_epochs", "diverged"):
            assert a[key] == b[key], key
    assert lines == fresh_lines
    read = results.load_all(tmp_path / "both", epochs=results.study_epochs(tmp_path / "both"))
    assert {r["num_epochs"] for r in read} == {1} and len(read) == 8
    capsys.readouterr()
    assert main(["lab", "summary", str(tmp_path / "both")]) == 0
    reused_summary = capsys.readouterr().out
    assert main(["lab", "summary", str(tmp_path / "fresh")]) == 0
    assert reused_summary == capsys.readouterr().out
