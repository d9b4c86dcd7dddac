"""The HTML report stands alone: every figure is a data: URI, and Chromium loads them all."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ermlab.cli import main
from ermlab.lab import report, results

CHROMIUM = "/usr/bin/chromium"
CHECK = """<script>window.addEventListener("load", () => {
  const loaded = [...document.images].map(i => i.complete && i.naturalWidth > 0 ? 1 : 0);
  const out = document.createElement("pre"); out.id = "image-check";
  out.textContent = loaded.join(","); document.body.appendChild(out);
});</script>"""
BROKEN = '<img alt="broken on purpose" src="data:image/png;base64,AAAAAAAA">'


def run(problem, optimizer, lr, seed, losses):
    epochs = len(losses) - 1
    return {"format": results.FORMAT, "testproblem": problem, "optimizer_name": optimizer,
            "optimizer_hyperparams": {"lr": lr}, "random_seed": seed, "batch_size": 10,
            "weight_decay": 0.0, "num_epochs": epochs, "train_losses": losses,
            "valid_losses": losses, "test_losses": losses,
            "train_accuracies": [0.1 + 0.2 * e for e in range(epochs + 1)],
            "valid_accuracies": [0.1 + 0.2 * e for e in range(epochs + 1)],
            "test_accuracies": [0.1 + 0.2 * e for e in range(epochs + 1)],
            "train_times": [0.1 * e for e in range(epochs + 1)], "wall_time": 0.5,
            "minibatch_train_losses": [1.0 + 0.1 * (k % 4) for k in range(4 * epochs)],
            "diverged": False, "problem": {"name": problem}}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    for problem in ("a", "b"):
        for optimizer, lr in (("sgd", 0.1), ("adam", 0.01)):
            results.save(run(problem, optimizer, lr * 10, 0, [2.0, 1.8, 1.7]), root)  # tuning
            for seed in range(2):
                results.save(run(problem, optimizer, lr, seed, [2.0, 1.0 + seed, 0.5]), root)
    path, built_report = report.build(root, steps=6, seeds_landscape=False, progress=False)
    return path, built_report


def test_report_embeds_every_figure_and_needs_nothing_beside_it(built):
    path, built_report = built
    page = path.read_text()
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(sources) == len(built_report.figures) == 2 * 3 + 1 + 3
    assert all(s.startswith(("data:image/png;base64,", "data:image/gif;base64,"))
               for s in sources)
    assert sum(s.startswith("data:image/gif") for s in sources) == 1
    assert "<script" not in page and "<link" not in page
    assert not re.findall(r'(?:src|href)="(?!data:)|url\((?!"?data:)', page)  # nothing fetched
    for section in ("Summary", "Learning curves", "Performance profile", "Trajectories",
                    "The optimizers: what each keeps", "Figure wall times"):
        assert f"<h2>{section.replace(chr(39), '&#x27;')}</h2>" in page
    assert page.count("drawn in ") == len(sources)
    assert "<td>Adam</td>" in page or "<th>Adam</th>" in page


@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_chromium_loads_every_image(built, tmp_path):
    path, built_report = built
    page = path.read_text().replace("</body>", f"{BROKEN}{CHECK}</body>")
    checked = tmp_path / "checked.html"
    checked.write_text(page)
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", checked.as_uri()],
        capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="image-check">([0-9,]*)</pre>', done.stdout)
    assert found, f"no check output from Chromium: {done.stderr[-2000:]}"
    loaded = [int(v) for v in found.group(1).split(",")]
    assert loaded == [1] * len(built_report.figures) + [0]  # the broken one is caught
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_bad_arguments_fail_before_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.build(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no run files"):
        report.build(tmp_path / "empty")


def test_report_command(built, tmp_path, capsys):
    root = built[0].parent
    output = tmp_path / "r.html"
    assert main(["lab", "report", str(root), "--output", str(output), "--no-trajectories",
                 "--no-seeds-landscape", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {output}" in out and "s  Learning curves: a" in out
    assert output.read_text().count("<img ") == 2 * 3 + 1
    assert main(["lab", "report", str(root), "--output", str(tmp_path / "r.pdf")]) == 2
    assert "name it *.html" in capsys.readouterr().err
