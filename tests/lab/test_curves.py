"""Curves read run records: seed bands are mean ± std over the tuned setting's seeds, the
LR curve is the tuning score per learning rate, the profile is Dolan & Moré's ρ(τ)."""

import math

import numpy
import pytest

from ermlab.lab import curves, results


def record(problem, optimizer, lr, seed, test_losses, accuracy=None, steps_per_epoch=4):
    epochs = len(test_losses) - 1
    run = {"format": results.FORMAT, "testproblem": problem, "optimizer_name": optimizer,
           "optimizer_hyperparams": {"lr": lr}, "random_seed": seed, "batch_size": 8,
           "weight_decay": 0.0, "num_epochs": epochs, "train_losses": list(test_losses),
           "valid_losses": list(test_losses), "test_losses": list(test_losses),
           "train_times": [0.5 * e for e in range(epochs + 1)], "wall_time": 1.0,
           "minibatch_train_losses": [2.0 + (k % 3) for k in range(epochs * steps_per_epoch)],
           "diverged": False, "problem": {"name": problem}}
    if accuracy is not None:
        for key in ("train_accuracies", "valid_accuracies", "test_accuracies"):
            run[key] = list(accuracy)
    return results.validate(run)


def study():
    runs = [record("p", "sgd", 0.1, s, [3.0, 2.0 - 0.1 * s, 1.0 + 0.2 * s]) for s in range(3)]
    runs.append(record("p", "sgd", 1.0, 0, [3.0, 9.0, 9.0]))  # a tuning run (one seed)
    runs += [record("p", "adam", 0.01, s, [3.0, 1.0, 0.5 + 0.1 * s]) for s in range(3)]
    runs.append(record("p", "adam", 0.1, 0, [3.0, 2.0, 1.5]))
    runs += [record("q", "sgd", 0.1, 0, [1.0, 0.4, 0.2]), record("q", "adam", 0.1, 0,
                                                                  [1.0, 0.5, 0.4])]
    return runs


def test_seed_band_is_mean_and_sample_std_over_seeds():
    runs = study()[:3]
    epochs, mean, std = curves.seed_band(runs, "test_losses")
    table = numpy.array([r["test_losses"] for r in runs])
    numpy.testing.assert_allclose(mean, table.mean(axis=0))
    numpy.testing.assert_allclose(std, table.std(axis=0, ddof=1))
    assert list(epochs) == [0, 1, 2]
    diverged = [dict(runs[0], test_losses=[3.0, math.nan, math.nan]), runs[1]]
    _, mean, std = curves.seed_band(diverged, "test_losses")
    assert mean[1] == runs[1]["test_losses"][1] and std[1] == 0.0


def test_learning_curves_draw_the_tuned_settings_mean_and_band():
    fig = curves.learning_curves(study(), "p", keys=["test_losses"])
    axes = fig.axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert sorted(lines) == ["adam (3 seeds)", "sgd (3 seeds)"]
    numpy.testing.assert_allclose(lines["sgd (3 seeds)"].get_ydata(), [3.0, 1.9, 1.2])
    for line, band in zip(axes.get_lines(), axes.collections):  # drawn in pairs
        name = line.get_label().split()[0]
        tuned = {"sgd": 0.1, "adam": 0.01}[name]
        runs = [r for r in study() if r["testproblem"] == "p" and r["optimizer_name"] == name
                and r["optimizer_hyperparams"]["lr"] == tuned]
        table = numpy.array([r["test_losses"] for r in runs])
        mean, std = table.mean(axis=0), table.std(axis=0, ddof=1)
        vertices = band.get_paths()[0].vertices
        at_two = sorted({round(y, 9) for x, y in vertices if x == 2})
        assert at_two == pytest.approx([mean[2] - std[2], mean[2] + std[2]])
    seconds = curves.learning_curves(study(), "p", keys=["test_losses"], against="seconds")
    numpy.testing.assert_allclose(seconds.axes[0].get_lines()[0].get_xdata(), [0, 0.5, 1.0])
    with pytest.raises(ValueError, match="no runs of problem 'r'"):
        curves.learning_curves(study(), "r")


def test_lr_sensitivity_plots_the_tuning_score_of_each_lr():
    axes = curves.lr_sensitivity(study(), "p").axes[0]
    sgd = next(line for line in axes.get_lines() if line.get_label().startswith("sgd"))
    numpy.testing.assert_allclose(sgd.get_xdata(), [0.1, 1.0])
    numpy.testing.assert_allclose(sgd.get_ydata(), [-1.0, -9.0])  # − final validation loss


def test_performance_profile_matches_a_hand_computation():
    table = curves.costs(study(), "final_test_loss")
    assert table["p"] == pytest.approx({"sgd": 1.2, "adam": 0.6})
    assert table["q"] == pytest.approx({"sgd": 0.2, "adam": 0.4})
    axes = curves.performance_profile(study(), tau_max=4).axes[0]
    for line in axes.get_lines():
        taus, rho = line.get_xdata(), line.get_ydata()
        ratio = {"sgd": [2.0, 1.0], "adam": [1.0, 2.0]}[line.get_label()]
        expected = [(numpy.array(ratio) <= t).mean() for t in taus]
        numpy.testing.assert_allclose(rho, expected)
        assert rho[0] == 0.5 and rho[-1] == 1.0
    with pytest.raises(ValueError, match="needs a target"):
        curves.costs(study(), "time_to_target")


def test_sgd_noise_puts_steps_and_epochs_on_one_axis():
    run = record("p", "sgd", 0.1, 0, [3.0, 2.0, 1.0], steps_per_epoch=4)
    lines = curves.sgd_noise(run).axes[0].get_lines()
    steps, smooth, epochs = lines
    numpy.testing.assert_allclose(steps.get_xdata(), numpy.arange(1, 9) / 4)
    numpy.testing.assert_allclose(steps.get_ydata(), run["minibatch_train_losses"])
    first_epoch = numpy.mean(run["minibatch_train_losses"][:4])
    numpy.testing.assert_allclose(smooth.get_ydata()[0], first_epoch)
    numpy.testing.assert_allclose(epochs.get_xdata(), [0, 1, 2])
    numpy.testing.assert_allclose(epochs.get_ydata(), [3.0, 2.0, 1.0])
