"""The comparison table is generated from the traits each optimizer class declares."""

import pytest

from ermlab import config, optim
from ermlab.lab import table
from ermlab.optim.traits import Traits


def test_every_optimizer_declares_traits_and_has_a_row():
    assert table.missing_traits() == []
    names = [row.name for row in table.rows()]
    assert len(names) == len(set(names))
    assert {cls.__name__ for cls in config.optimizers().values()} <= set(names)
    assert {"LBFGS", "BFGS", "Newton"} <= set(names)


def test_a_new_optimizer_without_traits_fails():
    class Mine(optim.SGD):  # inherits SGD's traits but steps its own way
        pass

    Mine.__module__ = "ermlab.optim.mine"  # as if it lived in the package
    assert Mine in table.missing_traits()
    with pytest.raises(TypeError, match="Mine declares no traits"):
        table.rows([optim.Adam, Mine])


def test_rows_come_from_the_declared_traits(monkeypatch):
    rows = {row.name: row.cells() for row in table.rows()}
    assert rows["Adam"][:4] == ["✓", "✓", "✓", "✓"]
    assert rows["Adagrad"][:4] == ["—", "✓", "—", "—"]  # a sum, not a leaky average
    assert rows["SGD"][0] == "momentum > 0"
    assert rows["Newton"][4] == "finite-difference Hessian"
    changed = Traits(first_moment=True, second_moment=False, leaky_average="never",
                     bias_correction=False, update="θ ← θ − γ G⁻½ g", reference="test")
    monkeypatch.setattr(optim.Adagrad, "traits", changed)
    row = next(r for r in table.rows() if r.name == "Adagrad")
    assert row.cells() == ["✓", "—", "never", "—", "—", "θ ← θ − γ G⁻½ g", "test"]
    assert "| Adagrad | ✓ | — | never |" in table.markdown([row])


def test_markdown_html_and_figure_escape_and_count():
    rows = table.rows()
    md = table.markdown(rows).splitlines()
    assert len(md) == len(rows) + 2
    assert "\\|g\\|" in next(line for line in md if line.startswith("| Adamax"))
    page = table.html(rows)
    assert page.count("<tr>") == len(rows) + 1 and "<script" not in page
    figure = table.figure(rows)
    assert len(figure.axes) == 1


def test_traits_refuse_a_missing_formula_or_a_bad_flag():
    with pytest.raises(ValueError, match="update formula"):
        Traits(True, True, True, True, update=" ", reference="x")
    with pytest.raises(TypeError, match="first_moment"):
        Traits(1, True, True, True, update="u", reference="x")
