"""`ermlab search`: a searched `epochs` keeps its column in the CSV, beside `epochs_trained`."""

import csv

from ermlab.cli import main


def test_search_csv_keeps_a_searched_epochs_beside_the_epochs_trained(tmp_path, capsys):
    spec = tmp_path / "search.toml"
    spec.write_text(f'[search]\nmethod = "grid"\noutput = "{tmp_path / "table.csv"}"\n'
                    '[base]\ndataset = "moons"\nbatch_size = 4\nhidden = [8]\npatience = 1\n'
                    'lr = 0.5\noptimizer = "sgd"\n'
                    '[space]\nepochs = [30, 40]\n')
    assert main(["search", str(spec)]) == 0
    capsys.readouterr()
    with open(tmp_path / "table.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["trial", "epochs", "mean_score", "std_score", "epochs_trained",
                             "fit_time", "error"]
    assert [int(row["epochs"]) for row in rows] == [30, 40]
    assert all(float(row["epochs_trained"]) < 30 for row in rows)  # early stopping (patience 1)
