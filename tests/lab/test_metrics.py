"""Metrics against hand computations: profiles, time to target, seed spread, LR sensitivity."""

import math

import numpy as np
import pytest
from lab_helpers import make_record

from ermlab.lab import metrics


def test_performance_profile_matches_the_hand_computed_ratios():
    costs = {"p1": {"a": 1.0, "b": 2.0}, "p2": {"a": 4.0, "b": 2.0},
             "p3": {"a": math.inf, "b": 3.0}}
    # ratios: a = (1, 2, ∞), b = (2, 1, 1)
    profile = metrics.performance_profile(costs, [1.0, 1.5, 2.0, 10.0])
    np.testing.assert_allclose(profile["a"], [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(profile["b"], [2 / 3, 2 / 3, 1, 1])


def test_performance_profile_ties_failures_and_errors():
    profile = metrics.performance_profile({"p": {"a": 0.0, "b": 0.0, "c": math.nan}}, [1.0])
    assert profile == {"a": [1.0], "b": [1.0], "c": [0.0]}
    with pytest.raises(ValueError, match="every problem needs"):
        metrics.performance_profile({"p": {"a": 1}, "q": {"b": 1}}, [1])
    with pytest.raises(ValueError, match="≥ 0"):
        metrics.performance_profile({"p": {"a": -1.0}}, [1])


def test_time_to_target_is_the_first_epoch_reaching_it_and_its_training_seconds():
    record = make_record(epochs=3)
    record["test_accuracies"] = [0.1, 0.5, 0.8, 0.7]
    record["test_losses"] = [2.0, 1.0, 0.4, 0.3]
    record["train_times"] = [0.0, 1.5, 2.5, 4.0]
    assert metrics.time_to_target(record, 0.75) == (2.0, 2.5)
    assert metrics.time_to_target(record, 0.35, "test_losses") == (3.0, 4.0)
    assert metrics.time_to_target(record, 0.9) == (math.inf, math.inf)
    record["test_accuracies"][0] = 0.99  # before training does not count
    assert metrics.time_to_target(record, 0.9) == (math.inf, math.inf)
    slow = make_record(epochs=3, seed=1, test_accuracies=[0, 0, 0, 0.8])
    never = make_record(epochs=3, seed=2, test_accuracies=[0, 0, 0, 0])
    median = metrics.median_time_to_target([record, slow, never], 0.75)
    # medians of (2, 3, ∞) epochs and (2.5, 0.3, ∞) seconds, each taken on its own
    assert median == {"epochs": 3.0, "seconds": 2.5, "reached": pytest.approx(2 / 3)}


def test_final_and_best_are_mean_and_sample_std_over_seeds():
    runs = [make_record(seed=s, epochs=2) for s in range(3)]
    for run, final, best in zip(runs, [0.8, 0.7, 0.9], [0.85, 0.75, 0.9]):
        run["test_accuracies"] = [0.1, best, final]
    row = metrics.final_and_best(runs)
    assert row["seeds"] == 3 and row["hyperparams"] == {"lr": 0.01}
    assert row["final_test_accuracy"] == pytest.approx((0.8, np.std([0.8, 0.7, 0.9], ddof=1)))
    assert row["best_test_accuracy"] == pytest.approx((np.mean([0.85, 0.75, 0.9]),
                                                       np.std([0.85, 0.75, 0.9], ddof=1)))
    assert row["final_test_loss"] == pytest.approx((1.2, 0.0))
    assert metrics.final_and_best(runs[:1])["final_test_accuracy"][1] == 0.0


def test_final_runs_take_the_setting_repeated_over_most_seeds():
    tuning = [make_record(lr=lr) for lr in (0.1, 0.01, 0.001)]
    seeds = [make_record(lr=0.01, seed=s) for s in (1, 2)]
    other = [make_record(optimizer="adam", lr=0.001)]
    chosen = metrics.final_runs(tuning + seeds + other)
    assert [r["random_seed"] for r in chosen["relu4", "sgd"]] == [0, 1, 2]
    assert chosen["relu4", "adam"][0]["optimizer_hyperparams"] == {"lr": 0.001}


def test_tuning_score_reads_validation_accuracy_or_loss_and_punishes_divergence():
    assert metrics.tuning_score(make_record()) == pytest.approx(0.5)
    assert metrics.tuning_score(make_record(accuracy=False)) == pytest.approx(-1.1)
    assert metrics.tuning_score(make_record(diverged=True)) == -math.inf


def test_lr_sensitivity_reports_the_near_best_plateau_in_decades():
    records = []
    for lr, score in [(1e-4, 0.5), (1e-3, 0.895), (1e-2, 0.9), (1e-1, 0.89), (1.0, 0.1)]:
        records.append(make_record(lr=lr, valid_accuracies=[0.1, 0.2, score]))
    records.append(make_record(lr=1e-2, seed=1, valid_accuracies=[0, 0, 0]))  # not tuning
    result = metrics.lr_sensitivity(records, tolerance=0.006)
    assert result["lrs"] == [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    assert result["best_lr"] == 1e-2
    assert result["good_range"] == (1e-3, 1e-2) and result["decades"] == pytest.approx(1.0)
    assert metrics.lr_sensitivity(records, tolerance=0.02)["decades"] == pytest.approx(2.0)


def test_summary_lines_name_every_problem_and_optimizer():
    records = [make_record(optimizer=o, seed=s) for o in ("sgd", "adam") for s in range(2)]
    lines = metrics.summary_lines(records, target=0.4)
    assert len(lines) == 2 and lines[0].startswith("relu4") and "adam" in lines[0]
    assert "seeds 2" in lines[0] and "to target: 2 epochs, 0.2 s (100% of seeds)" in lines[0]


def test_final_costs_feed_the_profile_and_the_summary_prints_it():
    records = []
    for problem, accuracies in (("p1", {"sgd": 0.8, "adam": 0.9}),
                                ("p2", {"sgd": 0.7, "adam": 0.65})):
        for optimizer, accuracy in accuracies.items():
            records.append(make_record(problem=problem, optimizer=optimizer,
                                       test_accuracies=[0.1, 0.5, accuracy]))
    records.append(make_record(problem="p3", optimizer="sgd", accuracy=False))  # adam missing
    costs = metrics.final_costs(records)
    assert costs == {"p1": {"sgd": pytest.approx(0.2), "adam": pytest.approx(0.1)},
                     "p2": {"sgd": pytest.approx(0.3), "adam": pytest.approx(0.35)}}
    lines = metrics.summary_lines(records)
    assert "performance profile over 2 problems" in lines[-3]
    # ratios: adam (1, 7/6), sgd (2, 1); τ = 1, 1.05, 1.25, 2
    assert lines[-2].split() == ["adam", "0.50", "0.50", "1.00", "1.00"]
    assert lines[-1].split() == ["sgd", "0.50", "0.50", "0.50", "1.00"]
