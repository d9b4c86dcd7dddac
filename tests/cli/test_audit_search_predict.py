"""Audit fixes: `ermlab search` applies or refuses every [base] key of `ermlab train`,
fits the preprocessing per split, refuses --n-jobs 0; `ermlab predict`'s rough edges."""

import csv

import numpy as np
import pytest

from ermlab import selection
from ermlab.cli import main


def run_cli(*argv):
    return main([str(a) for a in argv])


def one_line_error(argv, capsys):
    try:
        code = run_cli(*argv)
    except SystemExit as usage_error:
        code = usage_error.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


XOR_BASE = ('[base]\ndataset = "xor"\nepochs = 20\nbatch_size = 16\nhidden = [8]\n'
            'activation = "tanh"\noptimizer = "sgd"\n')


def write_spec(tmp_path, base_extra="", space="lr = [0.5]\n", search='method = "grid"\n'):
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[search]\n{search}output = "{tmp_path / "table.csv"}"\n'
                    f'{XOR_BASE}{base_extra}[space]\n{space}')
    return spec


def scores(tmp_path):
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    return [float(row["mean_score"]) for row in rows]


def test_search_applies_the_base_schedule(tmp_path, capsys):
    assert run_cli("search", write_spec(tmp_path)) == 0
    (plain,) = scores(tmp_path)
    # α_t = 0.5 / (1 + 1000 t): after the first update the net stops learning
    assert run_cli("search", write_spec(tmp_path, 'schedule = "inverse_time:1000"\n')) == 0
    (frozen,) = scores(tmp_path)
    assert plain == 1.0 and frozen < plain


def test_search_varies_the_schedule(tmp_path, capsys):
    spec = write_spec(tmp_path, space='lr = [0.5]\nschedule = ["none", "inverse_time:1000"]\n')
    assert run_cli("search", spec) == 0
    plain, frozen = scores(tmp_path)
    assert frozen < plain
    assert "schedule" in capsys.readouterr().out


@pytest.mark.parametrize("base, keys", [
    ("dp = true\ntarget_epsilon = 2.0\n", "['dp', 'target_epsilon']"),
    ('adversarial = "fgsm:eps=0.1"\n', "['adversarial']"),
    ('distributed = "sync"\nworkers = 2\n', "['distributed', 'workers']"),
])
def test_search_refuses_train_keys_it_cannot_apply(base, keys, tmp_path, capsys):
    err = one_line_error(["search", write_spec(tmp_path, base)], capsys)
    assert f"search does not support {keys} in [base]" in err
    assert not (tmp_path / "table.csv").exists()


def test_search_refuses_augment_in_base(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the table's default place, were the search to run
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", x_train=rng.uniform(size=(60, 1, 4, 4)).astype("float32"),
             y_train=np.arange(60) % 2, x_test=rng.uniform(size=(10, 1, 4, 4)).astype("float32"),
             y_test=np.arange(10) % 2)
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[base]\ndataset = "{tmp_path / "img.npz"}"\nepochs = 1\n'
                    'augment = "flip"\n[space]\nlr = [0.1]\n')
    assert "search does not support ['augment'] in [base]" in one_line_error(
        ["search", spec], capsys)


@pytest.mark.parametrize("space, message", [
    ('augment = ["flip"]\n', "search does not support ['augment']"),
    ("dp = [true, false]\n", "search does not support ['dp']"),
    ('distributed = ["sync"]\n', "search does not support ['distributed']"),
    ('preprocess = ["none", "standardize"]\n', "['preprocess'] cannot vary in [space]"),
])
def test_search_refuses_unsupported_axes(space, message, tmp_path, capsys):
    assert message in one_line_error(["search", write_spec(tmp_path, space=space)], capsys)


def test_search_refuses_zero_jobs(tmp_path, capsys):
    err = one_line_error(["search", write_spec(tmp_path), "--n-jobs", "0"], capsys)
    assert "--n-jobs must be a positive integer or -1" in err


def test_search_fits_the_preprocessing_on_each_folds_training_rows(tmp_path, capsys,
                                                                   monkeypatch):
    seen = []
    train_and_score = selection._train_and_score

    def spy(config, x_train, *rest):
        seen.append(np.asarray(x_train, dtype=np.float64))
        return train_and_score(config, x_train, *rest)

    monkeypatch.setattr(selection, "_train_and_score", spy)
    spec = write_spec(tmp_path, search='method = "grid"\ncv = 3\n')
    assert run_cli("search", spec) == 0
    assert len(seen) == 3
    for x in seen:  # standardized with this fold's own training statistics
        np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(x.std(axis=0), 1, atol=1e-3)


def test_selection_fits_the_preprocessing_per_split():
    from ermlab.data.preprocessing import Standardize

    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(90, 3)).astype("float32")
    y = (x[:, 0] > 3).astype(int)
    result = selection.search([{}], (x, y), base={"epochs": 1, "hidden": [4]}, cv=3,
                              preprocessing=Standardize())
    assert np.isfinite(result.best_score)


# -- predict ------------------------------------------------------------------------------


def images(n, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.uniform(0, 0.5, (n, 1, 4, 4)) + 0.5 * y[:, None, None, None]
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs on (N, 1, 4, 4) images: softmax regression and a multiclass SVM."""
    home = tmp_path_factory.mktemp("predict")
    x, y = images(80, 0)
    x_test, y_test = images(20, 1)
    np.savez(home / "img.npz", x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    for loss in ("cross_entropy", "hinge"):
        assert run_cli("train", "--dataset", home / "img.npz", "--model", "linear", "--loss",
                       loss, "--epochs", 3, "--output", home / loss, "-q") == 0
    return home


def predict_error(runs, data, capsys, *extra):
    err = one_line_error(["predict", runs / "cross_entropy", data, *extra], capsys)
    assert str(data) in err or "--output" in err
    return err


def test_predict_names_a_file_of_python_objects(runs, tmp_path, capsys):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    err = predict_error(runs, path, capsys)
    assert f"{path} holds an array of Python objects" in err


def test_predict_names_a_corrupt_npy_file(runs, tmp_path, capsys):
    path = tmp_path / "corrupt.npy"
    np.save(path, images(4, 0)[0])
    data = bytearray(path.read_bytes())
    data[6] = 9  # the format version
    path.write_bytes(bytes(data))
    assert f"{path} is not a valid .npy array file" in predict_error(runs, path, capsys)


def test_predict_names_a_truncated_npz_file(runs, tmp_path, capsys):
    path = tmp_path / "cut.npz"
    np.savez(path, x=images(4, 0)[0])
    path.write_bytes(path.read_bytes()[:60])
    assert f"{path} is not" in predict_error(runs, path, capsys)


def test_predict_names_a_csv_that_is_not_utf8(runs, tmp_path, capsys):
    path = tmp_path / "latin1.csv"
    path.write_bytes("café\n".encode("latin-1") + b"0.1" + b",0.2" * 15 + b"\n")
    assert f"{path} is not UTF-8 text (byte 0xe9" in predict_error(runs, path, capsys)


def test_predict_refuses_a_directory_as_output_up_front(runs, tmp_path, capsys):
    np.save(tmp_path / "x.npy", images(4, 0)[0])
    (tmp_path / "out").mkdir()
    err = predict_error(runs, tmp_path / "x.npy", capsys, "-o", tmp_path / "out")
    assert f"--output {tmp_path / 'out'} is a directory" in err
    assert "ermlab-tmp" not in err and list((tmp_path / "out").iterdir()) == []


def test_predict_takes_single_channel_images_without_the_channel_axis(runs, tmp_path):
    x = images(6, 2)[0]
    np.save(tmp_path / "nchw.npy", x)
    np.save(tmp_path / "nhw.npy", x[:, 0])
    for name in ("nchw", "nhw"):
        assert run_cli("predict", runs / "cross_entropy", tmp_path / f"{name}.npy",
                       "-o", tmp_path / f"{name}.csv") == 0
    assert (tmp_path / "nhw.csv").read_text() == (tmp_path / "nchw.csv").read_text()


def test_predict_names_hinge_scores_as_scores_not_probabilities(runs, tmp_path):
    np.save(tmp_path / "x.npy", images(6, 2)[0])
    for loss in ("cross_entropy", "hinge"):
        assert run_cli("predict", runs / loss, tmp_path / "x.npy",
                       "-o", tmp_path / f"{loss}.csv") == 0
    (header, *_) = (tmp_path / "cross_entropy.csv").read_text().splitlines()
    assert header.split(",")[3:] == ["p_0", "p_1"]
    rows = list(csv.DictReader((tmp_path / "hinge.csv").open()))
    assert list(rows[0])[3:] == ["score_0", "score_1"]
    scores = np.array([[float(row["score_0"]), float(row["score_1"])] for row in rows])
    assert [int(row["label"]) for row in rows] == list(scores.argmax(axis=1))
