"""Loss landscapes: the interpolation slice ends at the losses of θ₀ and θ₁, filter-normalized
directions have θ's filter norms, and a run directory gives both ends."""

import numpy
import pytest

from ermlab import losses, nn
from ermlab.cli import main
from ermlab.lab import landscape


def small_model(seed):
    rng = numpy.random.default_rng(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, rng=rng), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 4, rng=rng))


def data():
    rng = numpy.random.default_rng(5)
    return rng.standard_normal((20, 1, 6, 6)).astype(numpy.float32), rng.integers(0, 4, 20)


def direct_loss(model, weights, x, y):
    """The loss with the weights put in by hand: an independent evaluation."""
    for p, w in zip(model.parameters(), weights):
        p.data = numpy.array(w, dtype=numpy.float32)
    return float(losses.get("cross_entropy").forward(model.eval().forward(x), y))


def test_interpolation_slice_ends_at_theta0_and_theta1_and_is_the_straight_line():
    x, y = data()
    model = small_model(1)
    theta0 = [p.data.copy() for p in small_model(2).parameters()]
    theta1 = [p.data.copy() for p in model.parameters()]
    scene = landscape.scene(model, losses.get("cross_entropy"), x, y, theta0, batch_size=7)
    alphas, values = scene.interpolation([0.0, 0.3, 1.0])
    oracle = small_model(0)
    assert values[0] == pytest.approx(direct_loss(oracle, theta0, x, y), rel=1e-5)
    assert values[2] == pytest.approx(direct_loss(oracle, theta1, x, y), rel=1e-5)
    middle = [0.7 * a + 0.3 * b for a, b in zip(theta0, theta1)]
    assert values[1] == pytest.approx(direct_loss(oracle, middle, x, y), rel=1e-5)
    for p, w in zip(model.parameters(), theta1):  # the model keeps its weights
        numpy.testing.assert_array_equal(p.data, w)


def test_filter_normalization_gives_each_filter_the_norm_of_thetas():
    weights = [p.data for p in small_model(3).parameters()]
    d = landscape.random_direction(weights, rng=0)
    for w, dw in zip(weights, d):
        if w.ndim == 1:
            assert not dw.any()  # biases: no perturbation
            continue
        for j in range(len(w)):  # filter j: output channel / output unit
            assert numpy.linalg.norm(dw[j]) == pytest.approx(numpy.linalg.norm(w[j]), rel=1e-5)
        assert not numpy.allclose(dw / numpy.linalg.norm(dw), w / numpy.linalg.norm(w))
    layer = landscape.random_direction(weights, rng=0, normalization="layer", ignore_1d=False)
    for w, dw in zip(weights, layer):
        assert numpy.linalg.norm(dw) == pytest.approx(numpy.linalg.norm(w), rel=1e-5)


def test_random_slices_are_centred_on_theta1():
    x, y = data()
    model = small_model(1)
    theta1 = [p.data.copy() for p in model.parameters()]
    scene = landscape.scene(model, losses.get("cross_entropy"), x, y, theta1)
    at_theta = direct_loss(small_model(0), theta1, x, y)
    alphas, values = scene.slice_1d(alphas=[-0.5, 0.0, 0.5], seed=1)
    assert values[1] == pytest.approx(at_theta, rel=1e-5)
    d = landscape.random_direction(theta1, 1)
    shifted = [w + 0.5 * dw for w, dw in zip(theta1, d)]
    assert values[2] == pytest.approx(direct_loss(small_model(0), shifted, x, y), rel=1e-5)
    a, b, grid = scene.slice_2d(alphas=[-0.4, 0.0, 0.4], betas=[0.0, 0.2], seed=2)
    assert grid.shape == (2, 3) and grid[0, 1] == pytest.approx(at_theta, rel=1e-5)
    assert len(landscape.contour_figure(a, b, grid).axes) == 2  # plot and colour bar
    assert len(landscape.line_figure(alphas, {"train": values}).axes[0].get_lines()) == 3


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("landscape")
    rng = numpy.random.default_rng(0)
    y = numpy.repeat(numpy.arange(3), 60)
    x = (rng.normal(0, 1, (180, 4)) + 2 * numpy.eye(3, 4)[y]).astype(numpy.float32)
    numpy.savez(home / "blobs.npz", x=x, y=y)
    run = home / "run"
    assert main(["train", "--dataset", str(home / "blobs.npz"), "--hidden", "8",
                 "--epochs", "3", "--lr", "0.05", "--output", str(run), "-q"]) == 0
    return run


def test_from_run_directory(trained_run, tmp_path):
    run = trained_run
    scene = landscape.from_run(run, examples=100)
    alphas, values = scene.interpolation([0.0, 1.0])
    assert values[1] < values[0]  # training lowered the training loss
    from ermlab import run as rundir

    restored = rundir.restore(run)
    for p, q in zip(scene.parameters, restored.trainer.model.parameters()):
        numpy.testing.assert_array_equal(p.data, q.data)  # θ₁: the tested weights
    config = restored.config
    data = rundir.prepare_data(config)
    untrained = rundir.build_trainer(config, data, []).model  # what training started from
    for w0, p in zip(scene.theta0, untrained.parameters()):
        numpy.testing.assert_array_equal(w0, p.data)
    assert not numpy.array_equal(scene.theta0[0], scene.theta1[0])
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        landscape.from_run(tmp_path)


def test_from_run_directory_of_a_features_run(tmp_path):
    """With --features the model takes feature vectors: θ₀ has the model's shapes, not the
    images'; it is the model training started from."""
    from ermlab import run as rundir

    rng = numpy.random.default_rng(0)
    y = numpy.arange(60) % 2
    x = rng.uniform(0, 1, (60, 1, 16, 16)).astype(numpy.float32)  # 256 pixels, 324 features
    x[y == 0, :, ::3] = 1.0  # horizontal stripes in class 0
    numpy.savez(tmp_path / "images.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:],
                y_test=y[40:])
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "images.npz"), "--features", "hog:4:2",
                 "--model", "mlp", "--hidden", "4", "--epochs", "2", "--output", str(run),
                 "-q"]) == 0
    scene = landscape.from_run(run, examples=20)
    config = rundir.load_config(run)
    untrained = rundir.build_trainer(config, rundir.prepare_data(config), []).model
    for w0, p in zip(scene.theta0, untrained.parameters(), strict=True):
        numpy.testing.assert_array_equal(w0, p.data)
    assert numpy.isfinite(scene.interpolation([0.0, 1.0])[1]).all()


def test_landscape_command_on_a_run_directory(trained_run, tmp_path, capsys):
    assert main(["lab", "landscape", str(trained_run), "--examples", "50", "--points", "3",
                 "--grid", "2", "--output", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for name in ("interpolation.png", "random_1d.png", "random_2d.png"):
        assert (tmp_path / name).is_file() and f"wrote {tmp_path / name}" in out
    assert main(["lab", "landscape", str(trained_run), "--grid", "1"]) == 2
    assert "--grid is 0" in capsys.readouterr().err
    assert main(["lab", "landscape", "relu4", "--budget", "tiny", "--epochs", "1",
                 "--examples", "50", "--points", "3", "--grid", "0", "--output",
                 str(tmp_path / "relu4"), "--no-progress"]) == 0
    assert "trained relu4 (tiny budget)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "relu4").iterdir()) == [
        "interpolation.png", "random_1d.png"]


def test_report_draws_a_run_directorys_landscapes(trained_run, tmp_path):
    from ermlab.lab import report, results

    losses = [1.0, 0.5]
    results.save({"format": results.FORMAT, "testproblem": "p", "optimizer_name": "sgd",
                  "optimizer_hyperparams": {"lr": 0.1}, "random_seed": 0, "batch_size": 4,
                  "weight_decay": 0.0, "num_epochs": 1, "train_losses": losses,
                  "valid_losses": losses, "test_losses": losses, "train_times": [0.0, 0.1],
                  "wall_time": 0.1, "minibatch_train_losses": [1.0, 0.7], "diverged": False,
                  "problem": {}}, tmp_path)
    _, built = report.build(tmp_path, trajectories=False, seeds_landscape=False,
                            landscapes=[trained_run], progress=False)
    titles = [f.title for f in built.figures if f.section == "Loss landscapes"]
    assert titles == ["run: interpolation slice (Goodfellow et al. 2015)",
                      "run: 1-D random slice (Li et al. 2018)",
                      "run: 2-D random slice (Li et al. 2018)"]
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        report.build(tmp_path, landscapes=[tmp_path])


def test_from_problem_trains_the_seeds_relu4_net_from_theta0():
    scene = landscape.from_problem("relu4", "adam:lr=0.01", epochs=2, budget="tiny")
    shapes = [w.shape for w in scene.theta0]
    assert shapes == [(32, 10), (32,), (32, 32), (32,), (32, 32), (32,), (10, 32), (10,)]
    alphas, values = scene.interpolation([0.0, 1.0])
    assert values[0] == pytest.approx(scene.loss_at(scene.theta0))
    assert values[1] == pytest.approx(scene.loss_at(scene.theta1)) and values[1] < values[0]
    with pytest.raises(ValueError, match="2-D test function"):
        landscape.from_problem("beale")


def test_evaluation_restores_each_modules_training_mode():
    x, y = data()
    model = small_model(1)
    model.train()
    model[0].eval()  # a mixed model: the convolution frozen, the rest training
    before = [m.training for m in model.modules()]
    theta = [p.data.copy() for p in model.parameters()]
    scene = landscape.scene(model, losses.get("cross_entropy"), x, y, theta)
    value = scene.loss_at(theta)
    assert [m.training for m in model.modules()] == before == [True, False, True, True, True]
    assert value == pytest.approx(direct_loss(small_model(0), theta, x, y), rel=1e-5)
