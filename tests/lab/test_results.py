"""Run files: DeepOBS's layout, complete and valid, atomic, resumable and mergeable."""

import json
import math

import pytest
from lab_helpers import make_record

from ermlab.lab import results


def test_layout_and_round_trip(tmp_path):
    path = results.save(make_record(lr=1e-3, seed=3), tmp_path)
    assert path == tmp_path / "relu4" / "sgd" / "batch_size__32__lr__0.001" / \
        "random_seed__3.json"
    assert results.load(path) == make_record(lr=1e-3, seed=3)
    assert [p.name for p in path.parent.iterdir()] == ["random_seed__3.json"]  # no temporaries
    assert json.loads(path.read_text())["train_losses"] == [2.0, 1.5, 1.0]


def test_setting_names_are_canonical():
    assert results.setting_name({"lr": 0.001}, 128) == results.setting_name({"lr": 1e-3}, 128)
    assert results.setting_name({"momentum": 0.9, "lr": 0.1}, None) == \
        "batch_size__full__lr__0.1__momentum__0.9"
    assert results.setting_name({"lr": 1e-5, "betas": (0.9, 0.999)}, 8) == \
        "batch_size__8__lr__1e-05__betas__0.9_0.999"


def test_not_a_number_is_written_as_null_and_read_back(tmp_path):
    record = make_record(diverged=True)
    record["train_losses"][-1] = math.nan
    path = results.save(record, tmp_path)
    assert json.loads(path.read_text())["train_losses"][-1] is None
    assert math.isnan(results.load(path)["train_losses"][-1])


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("test_losses"), "missing keys \\['test_losses'\\]"),
    (lambda r: r["valid_losses"].pop(), "valid_losses must hold num_epochs \\+ 1 = 3"),
    (lambda r: r["test_accuracies"].append(1.0), "test_accuracies must hold"),
    (lambda r: r.update(format="other/9"), "format 'other/9'"),
    (lambda r: r.update(num_epochs=-1), "num_epochs must be an integer"),
    (lambda r: r.update(optimizer_hyperparams={}), "with 'lr'"),
    (lambda r: r["train_losses"].__setitem__(0, "x"), "must hold numbers"),
])
def test_incomplete_or_invalid_records_are_refused(tmp_path, change, message):
    record = make_record()
    change(record)
    with pytest.raises(ValueError, match=message):
        results.save(record, tmp_path)
    assert not any(tmp_path.rglob("*.json"))


def test_a_damaged_file_is_one_clear_error_and_not_complete(tmp_path):
    path = results.save(make_record(), tmp_path)
    path.write_text('{"format": ')
    with pytest.raises(ValueError, match="not valid JSON.*delete it and rerun"):
        results.load(path)
    assert not results.is_complete(path, 1)


def test_is_complete_counts_epochs_and_divergence(tmp_path):
    path = results.save(make_record(epochs=2), tmp_path)
    assert results.is_complete(path, 2) and not results.is_complete(path, 3)
    diverged = results.save(make_record(epochs=1, diverged=True, seed=1), tmp_path)
    assert results.is_complete(diverged, 50)
    assert not results.is_complete(tmp_path / "missing.json", 1)


def test_load_all_filters_and_refuses_a_missing_folder(tmp_path):
    for optimizer in ("sgd", "adam"):
        for seed in range(2):
            results.save(make_record(optimizer=optimizer, seed=seed), tmp_path)
    results.save(make_record(problem="logreg"), tmp_path)
    (tmp_path / "study.json").write_text("{}")
    assert len(results.load_all(tmp_path)) == 5
    assert len(results.load_all(tmp_path, problem="relu4", optimizer="adam")) == 2
    with pytest.raises(FileNotFoundError, match="does not exist; run `ermlab lab run`"):
        results.load_all(tmp_path / "nope")


def test_merge_unites_trees_and_keeps_the_longer_run(tmp_path):
    a, b, target = tmp_path / "a", tmp_path / "b", tmp_path / "merged"
    results.save(make_record(seed=0, epochs=2), a)
    results.save(make_record(seed=1, epochs=2), a)
    results.save(make_record(seed=1, epochs=4), b)
    results.save(make_record(seed=2, epochs=1), b)
    results.save(make_record(seed=0, epochs=1), b)
    counts = results.merge([a, b], target)
    merged = {r["random_seed"]: r["num_epochs"] for r in results.load_all(target)}
    assert merged == {0: 2, 1: 4, 2: 1}
    assert counts == {"copied": 4, "kept": 1}


def test_truncate_keeps_the_first_epochs_of_every_curve_and_step(tmp_path):
    record = make_record(epochs=3, diverged=True, cpu_time=2.0,
                         minibatch_train_losses=[float(k) for k in range(6)],
                         trajectory=[[float(k), 0.0] for k in range(7)])
    record["test_losses"][3] = math.inf  # diverged in its third epoch
    path = results.save(record, tmp_path)
    cut = results.load(path, epochs=1)
    assert cut["num_epochs"] == 1 and results.validate(cut)
    assert cut["train_losses"] == [2.0, 1.5]
    assert cut["valid_accuracies"] == record["valid_accuracies"][:2]
    assert cut["train_times"] == [0.0, 0.1]
    assert cut["minibatch_train_losses"] == [0.0, 1.0]  # 2 steps per epoch
    assert cut["trajectory"] == [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]  # θ₀, then each step
    assert cut["diverged"] is False  # the first epoch ended finite
    assert math.isnan(cut["wall_time"]) and math.isnan(cut["cpu_time"])  # whole-run clocks
    assert results.load(path, epochs=3)["diverged"] is True
    assert results.load(path, epochs=5)["num_epochs"] == 3
    assert results.load_all(tmp_path, epochs={"relu4": 2})[0]["num_epochs"] == 2
    assert results.load_all(tmp_path, epochs={"other": 2})[0]["num_epochs"] == 3


def test_truncate_refuses_steps_that_are_not_whole_epochs():
    record = make_record(epochs=2, minibatch_train_losses=[1.0] * 5)
    with pytest.raises(ValueError, match="5 minibatch_train_losses steps in 2 epochs are not "
                                         "whole epochs"):
        results.truncate(record, 1, "run.json")


def test_saved_files_honour_the_umask(tmp_path):
    """As ``open()`` would create them (0o666 minus the umask), not mkstemp's 0o600."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = results.save(make_record(seed=0), tmp_path / "a")
        os.umask(0o002)
        shared = results.save(make_record(seed=1), tmp_path / "a")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(shared.stat().st_mode) == 0o664
    assert results.load(path)["random_seed"] == 0
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, shared.name])


def test_unique_keeps_one_copy_of_each_run_the_longest():
    copies = [make_record(seed=0, epochs=2), make_record(seed=1, epochs=2),
              make_record(seed=0, epochs=3), make_record(seed=1, epochs=1)]
    kept = results.unique(copies)
    assert sorted((r["random_seed"], r["num_epochs"]) for r in kept) == [(0, 3), (1, 2)]
