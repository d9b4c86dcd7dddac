"""`ermlab lab trajectories | boundary | table`: files written, wall time printed, errors in
one line."""

import numpy
from PIL import Image

from ermlab.cli import main


def test_trajectories_command_writes_png_and_gif(tmp_path, capsys):
    assert main(["lab", "trajectories", "--function", "quadratic", "--optimizers",
                 "sgd:lr=0.01,adam:lr=0.1", "--steps", "4", "--gif", "--every", "2",
                 "--output", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "quadratic.png").is_file()
    with Image.open(tmp_path / "quadratic.gif") as gif:
        assert gif.n_frames == 3
    assert f"wrote {tmp_path / 'quadratic.png'}" in out and "(3 frames)" in out


def test_boundary_and_table_commands(tmp_path, capsys):
    assert main(["lab", "boundary", "--dataset", "moons", "--n", "40", "--hidden", "2,4",
                 "--l2", "0", "--epochs", "3", "--output", str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "boundary_moons.png").is_file()
    assert main(["lab", "table"]) == 0
    assert "| Adam | ✓ | ✓ | ✓ | ✓ |" in capsys.readouterr().out


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["lab", "trajectories", "--function", "nope", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ermlab lab: error: unknown test function 'nope'; choose one of rosenbrock, "
                   "beale, booth, himmelblau, saddle, monkey_saddle, quadratic"]
    assert main(["lab", "boundary", "--hidden", "two", "--output", str(tmp_path)]) == 2
    assert "--hidden is a comma-separated list" in capsys.readouterr().err
    assert main(["lab", "landscape", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_paths_off_unbounded_functions_end_in_nan_with_exit_0(tmp_path, capsys):
    """BFGS on the saddle and strong-Wolfe L-BFGS on the monkey saddle run to ±∞; the line
    search's float arithmetic used to raise (ZeroDivisionError, OverflowError)."""
    from ermlab.lab import trajectories as tr

    for function, spec in (("saddle", "bfgs"),
                           ("monkey_saddle", "lbfgs:line_search_fn=strong_wolfe")):
        assert main(["lab", "trajectories", "--function", function, "--optimizers", spec,
                     "--steps", "20", "--output", str(tmp_path), "--no-progress"]) == 0
        assert (tmp_path / f"{function}.png").is_file()
        points, values = tr.path(function, tr.optimizer(spec), 20)
        assert numpy.isfinite(points[:2]).all()  # it moves before it leaves the numbers
        assert numpy.isnan(points[-1]).all() and numpy.isnan(values[-1])
