"""`ermlab lab`: run a tiny study, summarize it, list problems; errors are one line; Ctrl-C
stops the workers and leaves only complete run files, which a rerun skips."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ermlab.cli import main
from ermlab.lab import results

TINY = ["--problems", "relu4,booth", "--optimizers", "sgd,adam", "--budget", "tiny",
        "--trials", "2", "--seeds", "2", "--n-jobs", "1", "--no-progress"]


def run_cli(*argv):
    return main([str(a) for a in argv])


def test_lab_run_writes_every_run_and_the_study_and_summary_reads_them(tmp_path, capsys):
    out = tmp_path / "study"
    assert run_cli("lab", "run", *TINY, "--out", out) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 + 3  # a row per problem and optimizer, then the profile
    assert all("seeds 2" in line for line in printed[:4])
    assert printed[4].startswith("performance profile over 2 problems")
    records = results.load_all(out)
    assert len(records) == 2 * 2 * (2 + 1)  # problems × optimizers × (tuning + one more seed)
    study = json.loads((out / "study.json").read_text())
    assert set(study["tuning"]) == {"relu4", "booth"}
    assert study["protocol"]["seeds"] == 2 and study["epochs"]["relu4"] == 3
    assert run_cli("lab", "summary", out, "--target", "0.3") == 0
    summary = capsys.readouterr().out
    assert summary.count("to target") == 4 and "performance profile" in summary


def test_lab_merge_unites_result_folders(tmp_path, capsys):
    for name, optimizer in (("a", "sgd"), ("b", "adam")):
        argv = ["lab", "run", "--problems", "booth", "--optimizers", optimizer, "--budget",
                "tiny", "--trials", "2", "--seeds", "1", "--n-jobs", "1", "--no-progress"]
        assert run_cli(*argv, "--out", tmp_path / name) == 0
    assert run_cli("lab", "merge", tmp_path / "a", tmp_path / "b", "--into", tmp_path / "m") == 0
    assert "4 runs copied" in capsys.readouterr().out
    assert {r["optimizer_name"] for r in results.load_all(tmp_path / "m")} == {"sgd", "adam"}
    assert run_cli("lab", "merge", tmp_path / "nope", "--into", tmp_path / "m") == 2
    assert "does not exist" in capsys.readouterr().err


def test_lab_problems_lists_problems_and_optimizers(capsys):
    assert run_cli("lab", "problems", "--budget", "small") == 0
    out = capsys.readouterr().out
    for name in ("logreg", "mlp", "fmnist_2c2d", "noisy_quadratic", "relu4", "rosenbrock",
                 "monkey_saddle", "optimizers: sgd, momentum, nesterov, adam"):
        assert name in out


def test_user_problem_from_a_toml_file(tmp_path, capsys):
    spec = tmp_path / "mine.toml"
    spec.write_text('name = "digits_small"\ndataset = "digits"\nhidden = [8]\nepochs = 1\n'
                    'n_valid = 200\nbatch_size = 64\n')
    argv = ["lab", "run", "--problems", str(spec), "--optimizers", "adam", "--trials", "1",
            "--seeds", "1", "--n-jobs", "1", "--no-progress", "--out", tmp_path / "r"]
    assert run_cli(*argv) == 0
    (record,) = results.load_all(tmp_path / "r")
    assert record["testproblem"] == "digits_small" and record["problem"]["dataset"] == "digits"


@pytest.mark.parametrize("argv, message", [
    (["--optimizers", "sgd,adamm"], "unknown optimizer 'adamm'"),
    (["--problems", "nope"], "unknown problem 'nope'"),
    (["--budget", "huge"], "unknown budget 'huge'"),
    (["--lr-range", "1e-3"], "--lr-range is LOW,HIGH"),
    (["--seeds", "0"], "seeds must be an integer ≥ 1"),
    (["--problems", "missing.toml"], "problem file missing.toml does not exist"),
])
def test_bad_arguments_are_one_line_and_no_work(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = run_cli("lab", "run", "--budget", "tiny", "--out", tmp_path / "r", *argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def _children(pid):
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z" and b"multiprocessing" in cmdline:
                found.append(int(entry.name))
    return found


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find worker processes")
def test_ctrl_c_stops_the_workers_keeps_finished_runs_and_a_rerun_skips_them(tmp_path):
    out = tmp_path / "r"
    argv = [sys.executable, "-m", "ermlab", "lab", "run", "--problems", "relu4", "--budget",
            "tiny", "--epochs", "60", "--optimizers", "sgd", "--trials", "4", "--seeds", "1",
            "--n-jobs", "2", "--no-progress", "--out", str(out)]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.rglob("random_seed__0.json")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    workers = _children(process.pid)
    assert workers, "no worker processes found"
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    assert "interrupted" in process.stderr.read()
    time.sleep(0.5)
    assert not [pid for pid in workers if _alive(pid)], "a worker outlived Ctrl-C"
    finished = results.run_files(out)
    assert 1 <= len(finished) < 4
    assert all(results.is_complete(path, 60) for path in finished)
    before = {path: path.stat().st_mtime_ns for path in finished}
    assert run_cli(*argv[3:-5], "--n-jobs", "1", "--no-progress", "--out", out) == 0  # in process
    assert len(results.run_files(out)) == 4
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in before.items())
    assert not list(out.rglob("*.tmp"))
