"""`ermlab train --dp`: the run directory records ε per epoch and the ε spent; bad DP
settings are one-line errors before any directory is made."""

import csv
import json

import pytest

pytest.importorskip("dp_accounting", reason='accountant absent: pip install "ermlab[privacy]"')

from ermlab.cli import main  # noqa: E402
from ermlab.privacy import epsilon  # noqa: E402

SMALL = ["--hidden", "16", "--epochs", "2", "--patience", "none", "--optimizer", "sgd",
         "--lr", "0.2"]


def test_dp_run_records_the_privacy_spent(tmp_path, capsys):
    run = tmp_path / "dp"
    assert main(["train", "--dp", "--clip", "1.0", "--noise", "1.1", "--target-epsilon", "30",
                 "--delta", "1e-5", "--batch-size", "128", *SMALL, "--output", str(run),
                 "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["dp"], config["clip"], config["noise"], config["delta"]) == (True, 1.0, 1.1,
                                                                                 1e-5)
    rows = list(csv.DictReader((run / "history.csv").open()))
    n = 1797 - 450 - round(0.1 * (1797 - 450))           # digits' training split
    steps = -(-n // 128)
    spent = [epsilon(1.1, 1 / steps, steps * k, 1e-5) for k in (1, 2)]
    assert [float(row["epsilon"]) for row in rows] == pytest.approx(spent)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epsilon"] == pytest.approx(spent[-1]) and metrics["delta"] == 1e-5


def test_noise_calibrated_from_the_target_is_recorded(tmp_path, capsys):
    run = tmp_path / "cal"
    assert main(["train", "--dp", "--target-epsilon", "5", "--batch-size", "256", *SMALL,
                 "--output", str(run), "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert 0 < config["noise"] < 5
    assert json.loads((run / "metrics.json").read_text())["epsilon"] == pytest.approx(5, rel=1e-3)


@pytest.mark.parametrize("argv, words", [
    (["--dp", "--clip", "0", "--noise", "1"], "the clip norm must be a number > 0; got 0.0"),
    (["--dp", "--clip", "-2", "--noise", "1"], "the clip norm must be a number > 0"),
    (["--dp", "--noise", "-1"], "the noise multiplier must be ≥ 0; got -1.0"),
    (["--dp", "--noise", "1", "--delta", "0.01"], "delta = 0.01 must be below 1/N"),
    (["--dp", "--noise", "1", "--target-epsilon", "0.05"], "target ε = 0.05 is unreachable"),
    (["--dp", "--noise", "1", "--batch-norm"], "batch normalization"),
    (["--dp"], "needs a noise multiplier or a target epsilon"),
    (["--clip", "1"], "clip need(s) --dp"),
    (["--dp", "--noise", "1", "--distributed", "sync"], "cannot be combined with --distributed"),
])
def test_bad_dp_settings_are_one_line_errors(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["train", *argv, *SMALL])
    err = capsys.readouterr().err
    assert code == 2 and words in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_resume_keeps_the_sampling_rate(tmp_path, capsys):
    run = tmp_path / "dp"
    assert main(["train", "--dp", "--noise", "1.0", "--batch-size", "256", *SMALL,
                 "--output", str(run), "--quiet"]) == 0
    assert main(["train", "--resume", str(run), "--batch-size", "128", "--quiet"]) == 2
    assert "cannot change batch_size" in capsys.readouterr().err
