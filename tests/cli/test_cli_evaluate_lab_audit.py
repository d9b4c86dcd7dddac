"""`ermlab evaluate` and `ermlab lab` on the cases an audit found wrong: class names alike in
their first characters, runs whose data file changed, a --features run under --attack, a
missing best checkpoint, and the lab's folders (empty, duplicated, not writable)."""

import json
import os
import re

import numpy as np
import pytest

from ermlab.cli import main
from ermlab.lab import results


def run_cli(*argv):
    return main([str(a) for a in argv])


def one_line_error(capsys, *argv):
    assert run_cli(*argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err, captured.out


def table(path, n_features=6, names=("category_alpha", "category_beta", "category_gamma"),
          seed=0):
    """Three overlapping Gaussian blobs, so that the recalls differ from class to class."""
    rng = np.random.default_rng(seed)
    y = np.arange(240) % len(names)
    x = rng.normal(0, 1, (240, n_features)) + 0.8 * np.eye(len(names), n_features)[y]
    x = x.astype(np.float32)
    np.savez(path, x_train=x[:180], y_train=y[:180], x_test=x[180:], y_test=y[180:],
             class_names=np.array(names))
    return path


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("table")
    data = table(home / "data.npz")
    assert run_cli("train", "--dataset", data, "--hidden", "4", "--epochs", 2,
                   "--output", home / "run", "-q") == 0
    return home / "run", data


def copy_run(run, copy, leave_out=None):
    """A copy of the run folder's files (all but ``leave_out``), to damage or change."""
    copy.mkdir()
    for file in run.iterdir():
        if file.is_file() and file.name != leave_out:
            (copy / file.name).write_bytes(file.read_bytes())
    return copy


def confusion_rows(out):
    """(label, counts, printed recall) of every row of the printed confusion matrix."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("confusion matrix"))
    header, rows = lines[start + 1], []
    width = len(header) - len(header.lstrip()) - 1  # the label column
    for line in lines[start + 2:]:
        label, rest = line[:width].strip(), line[width:].split()
        rows.append((label, [int(c) for c in rest[:-1]], float(rest[-1])))
    return header, rows


def test_recall_is_the_diagonal_when_class_names_share_their_first_characters(table_run,
                                                                                capsys):
    run, _ = table_run
    assert run_cli("evaluate", run) == 0
    header, rows = confusion_rows(capsys.readouterr().out)
    labels = [label for label, _, _ in rows]
    assert len(set(labels)) == 3 and header.split()[:3] == labels  # distinguishable
    for i, (_, counts, recall) in enumerate(rows):
        assert recall == pytest.approx(counts[i] / sum(counts), abs=5e-4)
    assert len({recall for _, _, recall in rows}) > 1  # (the data make them differ)


@pytest.mark.parametrize("change, message", [
    (dict(n_features=9), r"its examples have shape \(9,\), the run's had \(6,\)"),
    (dict(names=("category_alpha", "category_beta")), "it has 2 classes, the run had 3"),
    (dict(names=("a", "b", "c", "d", "e")), "it has 5 classes, the run had 3"),
    (dict(names=("category_alpha", "category_beta", "other")),
     "its class 2 is named 'other', the run's was 'category_gamma'"),
])
def test_a_data_file_changed_since_training_is_named_before_any_evaluation(
        table_run, tmp_path, capsys, change, message):
    copy = copy_run(table_run[0], tmp_path / "run")
    config = json.loads((copy / "config.json").read_text())
    config["dataset"] = str(table(tmp_path / "changed.npz", **change))
    (copy / "config.json").write_text(json.dumps(config))
    err, out = one_line_error(capsys, "evaluate", copy)
    assert re.search(message, err) and "no longer matches the data the run was trained on" in err
    assert "confusion" not in out
    err, _ = one_line_error(capsys, "lab", "landscape", copy, "--points", 3, "--grid", 0,
                            "--no-progress", "--output", tmp_path / "figures")
    assert re.search(message, err)


def test_best_missing_says_the_last_checkpoint_was_evaluated(table_run, tmp_path, capsys):
    copy = copy_run(table_run[0], tmp_path / "run", leave_out="best.safetensors")
    assert run_cli("evaluate", copy) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "last checkpoint (epoch 2; the run has no best.safetensors)" in first
    assert "best checkpoint" not in first


def test_a_damaged_checkpoint_names_the_other_one_to_try(table_run, tmp_path, capsys):
    copy = copy_run(table_run[0], tmp_path / "run")
    (copy / "best.safetensors").write_bytes(b"")
    err, _ = one_line_error(capsys, "evaluate", copy)
    assert "truncated or corrupt" in err and "--checkpoint last" in err
    assert run_cli("evaluate", copy, "--checkpoint", "last") == 0


def test_attack_examples_without_attack_is_refused(table_run, capsys):
    run, _ = table_run
    err, out = one_line_error(capsys, "evaluate", run, "--attack-examples", 5)
    assert "--attack-examples" in err and "--attack SPEC" in err and out == ""


def stripes(path, n=80, size=16, seed=0):
    """Grey images of horizontal (class 0) or vertical (class 1) stripes, with noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    grid = np.arange(size)
    x = np.empty((n, 1, size, size), np.float32)
    for i in range(n):
        wave = 0.5 + 0.4 * np.sin(grid * 1.3 + rng.uniform(0, 6))
        x[i, 0] = wave[:, None] if y[i] == 0 else wave[None, :]
    x = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
    np.savez(path, x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])
    return path


@pytest.fixture(scope="module")
def features_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("features")
    assert run_cli("train", "--dataset", stripes(home / "stripes.npz"), "--features",
                   "hog:4:2", "--model", "mlp", "--hidden", "4", "--epochs", 2,
                   "--output", home / "run", "-q") == 0
    return home / "run"


def test_evaluate_attack_on_a_features_run_is_refused_up_front(features_run, capsys):
    err, out = one_line_error(capsys, "evaluate", features_run, "--attack", "fgsm:eps=0.05")
    assert "--attack" in err and "--features" in err and "leave out --attack" in err
    assert out == ""  # refused before any metric


def test_lab_landscape_of_a_features_run(features_run, tmp_path, capsys):
    assert run_cli("lab", "landscape", features_run, "--points", 3, "--grid", 0,
                   "--no-progress", "--output", tmp_path) == 0
    assert (tmp_path / "interpolation.png").is_file()


def test_lab_summary_of_a_folder_without_runs_is_an_error(table_run, tmp_path, capsys):
    run, _ = table_run
    for folder in (tmp_path, run):
        err, out = one_line_error(capsys, "lab", "summary", folder)
        assert f"{folder} holds no run files" in err and out == ""


def _record(seed, epochs=2):
    from lab_helpers import make_record

    return make_record(problem="relu4", optimizer="sgd", seed=seed, epochs=epochs)


def test_lab_summary_counts_a_run_in_two_folders_once(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "lab"))
    for folder in ("a", "b"):
        for seed in (0, 1):
            results.save(_record(seed), tmp_path / folder)
    results.save(_record(2), tmp_path / "b")
    assert run_cli("lab", "summary", tmp_path / "a", "--baselines", tmp_path / "b") == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("relu4"))
    assert "seeds 3" in line  # seeds 0, 1 and 2, as `lab merge` would unite them


def test_lab_output_folders_that_cannot_be_made_are_one_line_naming_the_path(tmp_path,
                                                                             capsys,
                                                                             monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "lab"))
    results.save(_record(0), tmp_path / "res")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    err, _ = one_line_error(capsys, "lab", "merge", tmp_path / "res", "--into", blocker / "x")
    assert f"{blocker} is a file, not a folder" in err and "--into" in err
    assert "Errno" not in err
    err, _ = one_line_error(capsys, "lab", "report", tmp_path / "res", "--output",
                            blocker / "r.html", "--no-trajectories", "--no-seeds-landscape",
                            "--no-progress")
    assert f"{blocker} is a file, not a folder" in err and "--output" in err
    assert "Errno" not in err


def test_lab_help_lists_every_subcommand_and_no_developer_notes(capsys):
    with pytest.raises(SystemExit):
        main(["lab", "--help"])
    out = capsys.readouterr().out
    description = out.split("positional arguments")[0]
    for name in ("run", "problems", "summary", "merge", "report", "landscape", "trajectories",
                 "boundary", "table"):
        assert f"ermlab lab {name}" in description, name
    assert "add_<name>" not in out and "add_commands" not in out


def test_compare_on_table_data_gives_advice_that_fits(capsys):
    err, _ = one_line_error(capsys, "compare", "--dataset", "digits", "--methods",
                            "pixels-softmax")
    assert "table data, not images" in err
    assert "leave out the image features" not in err  # none were asked for


def test_resume_on_a_data_file_changed_since_training_is_refused(tmp_path, capsys):
    data = table(tmp_path / "data.npz")
    assert run_cli("train", "--dataset", data, "--hidden", "4", "--epochs", 2,
                   "--output", tmp_path / "run", "-q") == 0
    table(data, n_features=9)  # the same path, rewritten
    err, _ = one_line_error(capsys, "train", "--resume", tmp_path / "run", "--epochs", 4)
    assert re.search(r"its examples have shape \(9,\), the run's had \(6,\)", err)
