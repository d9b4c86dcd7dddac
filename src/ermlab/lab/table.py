"""The seeds' comparison table of optimizers, generated from what each class declares.

Which method keeps a first moment (a momentum), a second moment (a per-coordinate
scale), whether its averages are leaky (exponentially decaying), whether they are
bias-corrected, and its update formula — the table of Zhang et al., *Dive into
Deep Learning* (ch. 12) and of the Adam paper's related work (Kingma & Ba 2015,
§5). Nothing here is typed by hand: every row is an optimizer class's own
``traits`` (``ermlab.optim.traits.Traits``), so a new optimizer appears in the
table by declaring its traits, and one that declares none is an error.

    >>> from ermlab.lab import table
    >>> print(table.markdown(table.rows()))
"""

from __future__ import annotations

import html as html_escape
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ermlab.optim.traits import Traits

COLUMNS = ("first moment", "second moment", "leaky average", "bias correction", "curvature",
           "update", "reference")
FIELDS = ("first_moment", "second_moment", "leaky_average", "bias_correction", "curvature",
          "update", "reference")


@dataclass(frozen=True)
class Row:
    """One optimizer's row: its class name and its declared traits."""

    name: str
    traits: Traits

    def cells(self) -> list[str]:
        """The row's cells in ``COLUMNS`` order: ✓ / — for a flag, words for a condition."""
        return [_cell(getattr(self.traits, field)) for field in FIELDS]


def optimizer_classes() -> list[type]:
    """Every optimizer a user can name: ``ermlab.optim``'s exports and ``config.optimizers()``."""
    from ermlab import config, optim

    found: dict[str, type] = {}
    for name in optim.__all__:
        cls = getattr(optim, name)
        if isinstance(cls, type) and issubclass(cls, optim.Optimizer) \
                and cls is not optim.Optimizer:
            found[cls.__name__] = cls
    for cls in config.optimizers().values():
        found.setdefault(cls.__name__, cls)
    return sorted(found.values(), key=_teaching_order)


def _teaching_order(cls: type) -> tuple[bool, ...]:
    """Plain and momentum methods, then per-coordinate scaling, bias-corrected, curvature."""
    traits = vars(cls).get("traits")
    if not isinstance(traits, Traits):
        return (True,) * 3
    return (bool(traits.curvature), bool(traits.second_moment), bool(traits.bias_correction))


def missing_traits() -> list[type]:
    """Classes of the package deriving from ``Optimizer`` that do not set ``traits`` in
    their own body (base classes set ``traits = None``)."""
    from ermlab.optim.base import Optimizer

    missing, todo = [], list(Optimizer.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("ermlab.") and "traits" not in vars(cls):
            missing.append(cls)
    return sorted(set(missing), key=lambda c: c.__qualname__)


def rows(classes: Iterable[type] | None = None) -> list[Row]:
    """The table's rows for ``classes`` (default: ``optimizer_classes()``), in that order."""
    result = []
    for cls in optimizer_classes() if classes is None else classes:
        traits = vars(cls).get("traits")
        if not isinstance(traits, Traits):
            raise TypeError(
                f"optimizer {cls.__name__} declares no traits: add `traits = Traits(...)` "
                "(ermlab.optim.traits) to its class body, saying which moments it keeps and "
                "its update formula"
            )
        result.append(Row(cls.__name__, traits))
    return result


def markdown(table: Sequence[Row]) -> str:
    """The table as GitHub Markdown."""
    lines = ["| optimizer | " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * (len(COLUMNS) + 1)]
    for row in table:
        cells = [cell.replace("|", "\\|") for cell in row.cells()]
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def html(table: Sequence[Row]) -> str:
    """The table as an HTML ``<table>`` (text escaped)."""
    head = "".join(f"<th>{html_escape.escape(c)}</th>" for c in ("optimizer", *COLUMNS))
    body = "".join(
        "<tr>" + f"<th>{html_escape.escape(row.name)}</th>"
        + "".join(f"<td>{html_escape.escape(cell)}</td>" for cell in row.cells()) + "</tr>"
        for row in table
    )
    return (f'<table class="traits"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def figure(table: Sequence[Row]) -> Any:
    """The table drawn as a matplotlib figure (flags and conditions; formulas are in
    ``markdown``/``html``, too long for a picture)."""
    from ermlab.lab._mpl import new_figure

    columns = COLUMNS[:5]
    fig = new_figure(10, 0.3 * len(table) + 0.6)
    axes = fig.add_subplot()
    axes.axis("off")
    drawn = axes.table(cellText=[row.cells()[:5] for row in table],
                       rowLabels=[row.name for row in table], colLabels=list(columns),
                       loc="center", cellLoc="center")
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(8)
    drawn.scale(1, 1.3)
    return fig


def _cell(value: bool | str) -> str:
    if value is True:
        return "✓"
    if value is False:
        return "—"
    return str(value)
