"""The README's examples work as written: the Python tour runs, and every command of the
command-line section names a real subcommand and real flags."""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from ermlab.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_python_tour_runs(capsys):
    (tour,) = blocks("python")
    namespace = {}
    exec(compile(tour, str(README), "exec"), namespace)
    assert namespace["value"] > 0 and np.isfinite(namespace["value"])
    assert namespace["result"].max_rel_error < 1e-6
    tied = namespace["tied"]
    assert tied[0] is tied[2] and len(tied.parameters()) == 2


def ermlab_commands():
    for block in blocks("sh"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = re.sub(r"\s\[--[^]]*\]", "", line.split("#")[0])  # optional parts: [--x y]
            for command in line.split(";"):
                words = shlex.split(command)
                if words[:1] == ["ermlab"]:
                    yield words[1:]
                elif words[:3] == ["python", "-m", "ermlab"]:
                    yield words[3:]


@pytest.mark.parametrize("argv", list(ermlab_commands()), ids=" ".join)
def test_every_command_line_example_parses(argv):
    if argv in (["--version"], ["--help"]):
        return
    parser = build_parser()
    args = parser.parse_args(argv)
    assert callable(args.run)
