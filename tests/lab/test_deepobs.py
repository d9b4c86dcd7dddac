"""DeepOBS in the lab: its result files read as lab runs (names, fields, seeds, refusals),
summarized and merged beside a study; its fmnist_2c2d's initialization and split."""

import json
import math

import numpy
import pytest
from lab_helpers import make_record

from ermlab.cli import main
from ermlab.lab import deepobs, metrics, results


def deepobs_file(root, optimizer="GradientDescentOptimizer", lr=0.1, seed=42, hyperparams=None,
                 test_accuracies=(0.1, 0.8, 0.9), setting=None, drop=(), **changes):
    """A DeepOBS 1.1 result file (2 epochs) in its layout, with its time-stamped name."""
    hyperparams = hyperparams or {}
    record = {"train_losses": [2.3, 0.6, 0.4], "test_losses": [2.31, 0.62, 0.45],
              "train_accuracies": [0.1, 0.78, 0.86], "test_accuracies": list(test_accuracies),
              "minibatch_train_losses": [2.3, 1.0, 0.7, 0.5], "optimizer": optimizer,
              "testproblem": "fmnist_2c2d", "weight_decay": None, "batch_size": 128,
              "num_epochs": 2, "learning_rate": lr, "lr_sched_epochs": None,
              "lr_sched_factors": None, "random_seed": seed, "train_log_interval": 1,
              "hyperparams": hyperparams, **changes}
    for key in drop:
        del record[key]
    folder = root / "fmnist_2c2d" / optimizer / (setting or f"num_epochs__2__lr__{lr:.10e}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"random_seed__{seed}__2019-02-13-15-12-{seed % 60:02d}.json"
    path.write_text(json.dumps(record))
    return path


def test_a_deepobs_file_reads_as_a_lab_run(tmp_path):
    path = deepobs_file(tmp_path, "MomentumOptimizer", lr=0.0025118864315,
                        hyperparams={"momentum": 0.99, "use_nesterov": False})
    run = results.load(path)
    assert run["optimizer_name"] == "deepobs-momentum"
    assert run["optimizer_hyperparams"] == {"lr": 0.0025118864315, "momentum": 0.99}
    assert (run["testproblem"], run["random_seed"], run["batch_size"], run["num_epochs"]) == \
        ("fmnist_2c2d", 42, 128, 2)
    assert run["weight_decay"] == 0.0 and run["diverged"] is False
    assert run["test_accuracies"] == run["valid_accuracies"] == [0.1, 0.8, 0.9]
    assert run["valid_losses"] == run["test_losses"] == [2.31, 0.62, 0.45]
    assert run["train_accuracies"] == [0.1, 0.78, 0.86]
    assert all(math.isnan(t) for t in run["train_times"]) and len(run["train_times"]) == 3
    assert run["minibatch_train_losses"] == [2.3, 1.0, 0.7, 0.5]


@pytest.mark.parametrize("optimizer, hyperparams, name, lab", [
    ("GradientDescentOptimizer", {}, "deepobs-sgd", {}),
    ("MomentumOptimizer", {"momentum": 0.9, "use_nesterov": True}, "deepobs-nesterov",
     {"momentum": 0.9}),
    ("AdamOptimizer", {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}, "deepobs-adam",
     {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}),
])
def test_optimizer_names_and_hyperparameters_map_to_the_labs(tmp_path, optimizer, hyperparams,
                                                              name, lab):
    run = results.load(deepobs_file(tmp_path, optimizer, lr=1e-3, hyperparams=hyperparams))
    assert run["optimizer_name"] == name
    assert run["optimizer_hyperparams"] == {"lr": 1e-3, **lab}


def test_a_non_finite_loss_marks_the_run_diverged(tmp_path):
    path = deepobs_file(tmp_path, test_losses=[2.3, float("nan"), float("nan")])
    assert results.load(path)["diverged"] is True


@pytest.mark.parametrize("changes, message", [
    ({"optimizer": "RMSPropOptimizer"},
     "DeepOBS optimizer 'RMSPropOptimizer' has no lab name; the lab reads "
     "GradientDescentOptimizer, MomentumOptimizer, AdamOptimizer"),
    ({"test_losses": [2.3, 0.6]}, "test_losses must hold num_epochs \\+ 1 = 3 values"),
    ({"drop": ("random_seed",)}, "missing DeepOBS keys \\['random_seed'\\]"),
])
def test_a_malformed_deepobs_file_is_refused_naming_the_flaw(tmp_path, changes, message):
    path = deepobs_file(tmp_path, **changes)
    with pytest.raises(ValueError, match=message) as error:
        results.load(path)
    assert str(path) in str(error.value)


def baselines(root):
    """DeepOBS's shape of a baseline: a tuning grid at seed 42, the best lr rerun over seeds.

    DeepOBS wrote the tuning run's lr in full (0.15848931924611143) and the reruns' as the
    folder name rounds it (0.15848931925): they are one setting.
    """
    best = 10 ** -0.8
    deepobs_file(root, lr=0.01, test_accuracies=(0.1, 0.6, 0.7))
    deepobs_file(root, lr=best, test_accuracies=(0.1, 0.8, 0.90))
    for seed, final in ((43, 0.92), (44, 0.94)):
        deepobs_file(root, lr=float(f"{best:.10e}"), seed=seed,
                     test_accuracies=(0.1, 0.8, final))
    deepobs_file(root, "AdamOptimizer", lr=1e-3, test_accuracies=(0.1, 0.85, 0.91),
                 hyperparams={"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8})


def test_the_tuned_setting_gathers_its_seeds_and_summarizes_by_hand(tmp_path):
    baselines(tmp_path)
    runs = metrics.final_runs(results.load_all(tmp_path))
    tuned = runs["fmnist_2c2d", "deepobs-sgd"]
    assert sorted(r["random_seed"] for r in tuned) == [42, 43, 44]
    row = metrics.final_and_best(tuned)
    assert row["final_test_accuracy"] == pytest.approx((0.92, 0.02))  # mean, std of .90 .92 .94
    assert [r["optimizer_name"] for r in results.load_all(tmp_path, optimizer="deepobs-adam")] \
        == ["deepobs-adam"]
    assert results.load_all(tmp_path, optimizer="sgd") == []


def test_summary_beside_a_study_and_merge_into_the_labs_format(tmp_path, capsys):
    baselines(tmp_path / "deepobs")
    study = tmp_path / "study"
    for seed, final in ((0, 0.85), (1, 0.87)):
        results.save(make_record("fmnist_2c2d", "sgd", lr=0.1, seed=seed,
                                 test_accuracies=[0.1, 0.8, final]), study)
    assert main(["lab", "summary", str(study), "--baselines", str(tmp_path / "deepobs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[1]: line for line in lines if line.startswith("fmnist_2c2d")}
    assert set(rows) == {"sgd", "deepobs-sgd", "deepobs-adam"}
    assert "seeds 2" in rows["sgd"] and "final test acc 0.8600 ± 0.0141" in rows["sgd"]
    assert "seeds 3" in rows["deepobs-sgd"] and "final test acc 0.9200 ± 0.0200" in \
        rows["deepobs-sgd"]

    counts = results.merge([study, tmp_path / "deepobs"], tmp_path / "merged")
    assert counts == {"copied": 2 + 5, "kept": 0}
    files = results.run_files(tmp_path / "merged")
    assert all(json.loads(f.read_text())["format"] == results.FORMAT for f in files)
    assert {f.parts[-3] for f in files} == {"sgd", "deepobs-sgd", "deepobs-adam"}
    merged = results.load_all(tmp_path / "merged")
    assert sorted(r["random_seed"] for r in merged if r["optimizer_name"] == "deepobs-sgd") \
        == [42, 42, 43, 44]
    assert results.merge([tmp_path / "deepobs"], tmp_path / "merged") == {"copied": 0, "kept": 5}


# -- DeepOBS's fmnist_2c2d -----------------------------------------------------------------------


def test_net_2c2d_is_initialized_as_deepobs():
    model = deepobs.net_2c2d(None, (1, 28, 28), 10, numpy.random.default_rng(0))
    shapes = [p.data.shape for p in model.parameters()]
    assert shapes == [(32, 1, 5, 5), (32,), (64, 32, 5, 5), (64,), (1024, 3136), (1024,),
                      (10, 1024), (10,)]
    # N(0, σ²) truncated at ±2σ: std σ·√(1 − 2·2φ(2)/(2Φ(2) − 1)) = 0.87962 σ
    phi2 = math.exp(-2) / math.sqrt(2 * math.pi)
    shrink = math.sqrt(1 - 4 * phi2 / math.erf(2 / math.sqrt(2)))
    dense = model.parameters()[4].data
    assert dense.dtype == numpy.float32
    assert float(dense.std()) == pytest.approx(0.05 * shrink, rel=2e-3)
    assert abs(float(dense.mean())) < 2e-4
    for param in model.parameters():
        if param.regularize:
            assert numpy.abs(param.data).max() <= 0.1
        else:
            assert (param.data == numpy.float32(0.05)).all()


def tiny_images(data_path, settings):
    rng = numpy.random.default_rng(3)
    x = rng.random((300, 1, 4, 4), dtype=numpy.float32)
    y = rng.integers(0, 10, 300)
    return x[:260], y[:260], x[260:], y[260:]


def test_the_deepobs_problem_trains_on_every_training_image(tmp_path):
    from ermlab.lab.protocol import OptimizerFactory

    problem = deepobs.fmnist_2c2d(epochs=1, n_train=256)
    problem.data = tiny_images
    split = problem.split()
    assert len(split.x_train) == 256 and len(split.x_test) == 40
    numpy.testing.assert_array_equal(split.x_valid, split.x_train[:256])  # train-eval, kept
    curves = problem.train(OptimizerFactory("sgd", (("lr", 0.01),)), seed=0)
    assert len(curves["minibatch_train_losses"]) == 2  # 256 images / batch 128
    assert curves["valid_losses"] == curves["train_losses"]
