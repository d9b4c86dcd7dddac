"""``ermlab evaluate RUN --attack SPEC`` and ``ermlab train --adversarial SPEC``: eps in the raw
data's units, robust accuracy reported, bad specs refused in one line before any work."""

import json
import re

import numpy as np
import pytest

from ermlab.cli import main


def run_cli(*argv):
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three classes of 8×8 images in [0, 1], told apart by a bright band."""
    home = tmp_path_factory.mktemp("robust")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 100)
    x = rng.uniform(0, 0.4, (300, 1, 8, 8))
    for c in range(3):
        x[y == c, 0, 2 * c:2 * c + 3] += 0.5
    np.savez(home / "img.npz", x=x.clip(0, 1).astype(np.float32), y=y)
    return home


def train(images, name, *extra):
    run = images / name
    assert run_cli("train", "--dataset", images / "img.npz", "--hidden", 16, "--epochs", 6,
                   "--output", run, "-q", *extra) == 0
    return run


def attacked(run, spec, capsys):
    assert run_cli("evaluate", run, "--attack", spec) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("under attack")][0]
    clean, robust = map(float, re.findall(r"accuracy (\d\.\d+)", line))
    return clean, robust


def test_evaluate_reports_robust_accuracy_in_raw_units(images, capsys):
    run = train(images, "plain")
    clean, robust = attacked(run, "pgd:eps=0.0001,steps=3", capsys)
    assert robust == clean > 0.9  # a ball far smaller than any margin changes nothing
    clean, fgsm = attacked(run, "fgsm:eps=0.3", capsys)
    _, pgd = attacked(run, "pgd:eps=0.3,steps=10", capsys)
    assert pgd <= fgsm < clean


def test_train_adversarial_records_the_attack_and_trains_on_it(images):
    plain = train(images, "plain2")
    robust = train(images, "adversarial", "--adversarial", "pgd:eps=0.1,steps=3")
    assert json.loads((robust / "config.json").read_text())["adversarial"] == \
        "pgd:eps=0.1,steps=3"
    first = [json.loads((r / "metrics.json").read_text()) for r in (plain, robust)]
    assert first[0] != first[1]
    loss = [float((r / "history.csv").read_text().splitlines()[1].split(",")[1])
            for r in (plain, robust)]
    assert loss[1] > loss[0]  # the first epoch's training loss, on adversarial batches


@pytest.mark.parametrize("argv, message", [
    (["train", "--adversarial", "pgd:eps=2"], "eps 2 is outside the data range"),
    (["train", "--adversarial", "pgd:steps=3"], "needs eps=E"),
    (["train", "--adversarial", "fgsm:eps=0.1,steps=3"], "is not KEY=VALUE"),
    (["evaluate", "RUN", "--attack", "pgd:eps=1.5"], "eps 1.5 is outside the data range"),
    (["evaluate", "RUN", "--attack", "deepfool:eps=0.1"], "unknown attack 'deepfool'"),
    (["evaluate", "RUN", "--attack", "fgsm:eps=0.1", "--attack-examples", "0"],
     "--attack-examples must be ≥ 1"),
])
def test_bad_specs_are_one_line_errors_before_work(images, capsys, argv, message):
    run = images / "plain"
    if not run.exists():
        train(images, "plain")
    out = images / "refused"
    argv = [str(run) if a == "RUN" else a for a in argv]
    if argv[0] == "train":
        argv += ["--dataset", images / "img.npz", "--output", out, "-q"]
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
