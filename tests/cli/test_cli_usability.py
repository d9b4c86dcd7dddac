"""The first hour with the `ermlab` command: help, --version, --debug, python -m, import ermlab."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

import ermlab
from ermlab.cli import build_parser, main


def run_cli(*argv):
    return main([str(a) for a in argv])


def test_python_dash_m_ermlab_is_the_command():
    done = subprocess.run([sys.executable, "-m", "ermlab", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ermlab {ermlab.__version__}"


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli("--version")
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"ermlab {ermlab.__version__}"


def test_import_ermlab_reaches_the_submodules_lazily():
    code = ("import sys, ermlab\n"
            "assert 'ermlab.nn' not in sys.modules and 'numpy' not in sys.modules\n"
            "assert ermlab.nn.Linear and ermlab.optim.SGD and ermlab.losses and ermlab.data\n"
            "assert ermlab.data.transforms.parse\n"
            "assert 'nn' in dir(ermlab)\n"
            "try:\n    ermlab.no_such_thing\nexcept AttributeError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no attribute 'no_such_thing'" in done.stdout


def _actions(parser):
    for action in parser._actions:
        yield parser.prog, action
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield parser.prog, choice
            for sub in action.choices.values():
                yield from _actions(sub)


def test_every_flag_and_command_has_help():
    missing = [f"{prog} {action.option_strings or action.dest}"
               for prog, action in _actions(build_parser())
               if not action.help or action.help == argparse.SUPPRESS]
    assert not missing


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_command_shows_the_traceback(where, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--set", "no_such_key=1"]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(ValueError, match="no_such_key"):
        run_cli(*argv)


def test_without_debug_the_error_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli("train", "--set", "no_such_key=1") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no_such_key" in err


def test_usage_errors_are_one_line_with_the_way_to_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli("train", "--epochs", "ten")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "ermlab train: error: argument --epochs: invalid int value: 'ten' "
        "(see `ermlab train --help`)"]


def test_every_public_module_is_reachable_from_import_ermlab():
    """`import ermlab` then attribute access reaches every module of the package (the class of
    `ermlab.nn` failing): ermlab.optim.schedules, ermlab.nn.summary, ermlab.training.plots ..."""
    root = Path(ermlab.__file__).parent
    names = sorted(
        ".".join(("ermlab", *path.relative_to(root).with_suffix("").parts))
        for path in root.rglob("*.py")
        if not path.name.startswith("_")
    )
    code = ("import functools, importlib, sys\n"
            "missing = []\n"
            f"for name in {names!r}:\n"
            "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'ermlab']:\n"
            "        del sys.modules[loaded]\n"
            "    ermlab = importlib.import_module('ermlab')  # afresh: nothing imported before\n"
            "    try:\n"
            "        functools.reduce(getattr, name.split('.')[1:], ermlab)\n"
            "    except AttributeError:\n"
            "        missing.append(name)\n"
            "print(' '.join(missing))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(names) > 50
    assert done.stdout.strip() == "", f"not reachable as attributes: {done.stdout}"
