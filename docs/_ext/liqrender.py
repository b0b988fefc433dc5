"""Pure renderers behind the docs extension: the phase diagram and percent-format notebooks.

Nothing here imports Sphinx or docutils, so the tests exercise it with the ``tests`` extra
alone. :mod:`liqdocs` is the thin Sphinx glue around it.
"""

from __future__ import annotations

import ast
import contextlib
import html
import io
import json
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

__all__ = [
    "Cell",
    "Edge",
    "cause_kind",
    "execute_cells",
    "layout",
    "notebook_markdown",
    "parse_percent",
    "transitions_svg",
]

# ---------------------------------------------------------------------------------------
# The phase diagram
# ---------------------------------------------------------------------------------------

Point = tuple[float, float]

_WIDTH = 960.0
_CENTER: Point = (_WIDTH / 2, 340.0)
_RADIUS_X = 380.0
_RADIUS_Y = 290.0
_NODE_RX = 88.0
_NODE_RY = 30.0
_GAP = 3.0
_LINE_HEIGHT = 15.0
_WRAP = 16
_LEGEND_SPACE = 56.0


@attrs.frozen(kw_only=True)
class Edge:
    """One drawn transition: ``source`` → ``target`` (phase tags), labelled by ``cause``."""

    source: str
    target: str
    cause: str


def cause_kind(cause: str) -> tuple[str, str]:
    """Split ``"apply: AuctionStarted"`` into ``("apply", "AuctionStarted")``.

    A cause without a ``step:``/``apply:`` prefix has kind ``""``.
    """
    kind, sep, text = cause.partition(": ")
    if sep and kind in {"step", "apply"}:
        return kind, text
    return "", cause


def _hub(tags: Sequence[str], edges: Sequence[Edge]) -> str | None:
    """The first node linked to every other, when there are at least four nodes."""
    if len(tags) < 4:
        return None
    neighbours: dict[str, set[str]] = {tag: set() for tag in tags}
    for edge in edges:
        neighbours[edge.source].add(edge.target)
        neighbours[edge.target].add(edge.source)
    return next((tag for tag in tags if neighbours[tag] == set(tags) - {tag}), None)


def layout(tags: Sequence[str], edges: Sequence[Edge]) -> dict[str, Point]:
    """Node centres. A node linked to every other (a hub) sits in the middle when there are
    at least four nodes, which keeps a complete graph of four planar; the others go round an
    ellipse clockwise from the top, in the order of ``tags``."""
    hub = _hub(tags, edges)
    ring = [tag for tag in tags if tag != hub]
    positions: dict[str, Point] = {}
    if hub is not None:
        positions[hub] = _CENTER
    for index, tag in enumerate(ring):
        angle = -math.pi / 2 + 2 * math.pi * index / len(ring)
        positions[tag] = (
            _CENTER[0] + _RADIUS_X * math.cos(angle),
            _CENTER[1] + _RADIUS_Y * math.sin(angle),
        )
    return positions


def _unit(dx: float, dy: float) -> Point:
    length = math.hypot(dx, dy)
    return (dx / length, dy / length)


def _on_ellipse(centre: Point, toward: Point) -> Point:
    """Where the ray from ``centre`` toward ``toward`` leaves the node's ellipse (plus a gap)."""
    ux, uy = _unit(toward[0] - centre[0], toward[1] - centre[1])
    reach = 1 / math.sqrt((ux / _NODE_RX) ** 2 + (uy / _NODE_RY) ** 2) + _GAP
    return (centre[0] + ux * reach, centre[1] + uy * reach)


def _text(x: float, y: float, lines: Sequence[str], anchor: str, css: str) -> str:
    spans = "".join(
        f'<tspan x="{x:.1f}" dy="{0 if i == 0 else _LINE_HEIGHT:.1f}">{html.escape(line)}</tspan>'
        for i, line in enumerate(lines)
    )
    return f'<text class="{css}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{spans}</text>'


def _edge_svg(
    edge: Edge, positions: Mapping[str, Point], bidirectional: bool, hub: str | None
) -> str:
    start, end = positions[edge.source], positions[edge.target]
    ux, uy = _unit(end[0] - start[0], end[1] - start[1])
    normal = (uy, -ux)  # the same side of travel for both directions, so a pair separates
    length = math.hypot(end[0] - start[0], end[1] - start[1])
    bend = min(0.22 * length, 48.0) if bidirectional else 0.0
    middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
    control = (middle[0] + normal[0] * bend, middle[1] + normal[1] * bend)
    p0 = _on_ellipse(start, control if bend else end)
    p1 = _on_ellipse(end, control if bend else start)
    kind, text = cause_kind(edge.cause)
    css = f"liq-edge liq-edge-{kind or 'other'}"
    path = (
        f'<path class="{css}" d="M {p0[0]:.1f} {p0[1]:.1f} Q {control[0]:.1f} {control[1]:.1f} '
        f'{p1[0]:.1f} {p1[1]:.1f}" marker-end="url(#liq-arrow)"/>'
    )
    # The label sits beside the curve: on the bend side of a curved pair, away from the
    # diagram's centre for a straight edge; on a spoke, nearer the hub, where the ring's
    # edges are far away.
    t = 0.6 if edge.target == hub else 0.4 if edge.source == hub else 0.5
    mid = (
        (1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * control[0] + t**2 * p1[0],
        (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * control[1] + t**2 * p1[1],
    )
    side = normal
    if not bend:
        away = (mid[0] - _CENTER[0], mid[1] - _CENTER[1])
        if away[0] * normal[0] + away[1] * normal[1] < 0:
            side = (-normal[0], -normal[1])
    lines = textwrap.wrap(text, _WRAP) or [text]
    x, y = mid[0] + side[0] * 10, mid[1] + side[1] * 10
    if side[0] > 0.35:
        anchor = "start"
    elif side[0] < -0.35:
        anchor = "end"
    else:
        anchor = "middle"
    block = _LINE_HEIGHT * (len(lines) - 1)
    if anchor != "middle":
        y += 4 - block / 2  # centred beside the curve
    elif side[1] < 0:
        y -= block + 2  # above it, growing upwards
    else:
        y += 11  # below it
    return path + _text(x, y, lines, anchor, "liq-label")


def transitions_svg(
    tags: Sequence[str], names: Mapping[str, str], transitions: Sequence[Edge]
) -> str:
    """An inline SVG of the phases (``tags``, shown by ``names``) and the ``transitions``.

    Arrows driven by ``step`` (an observation) are solid, those driven by ``apply`` (an
    event) dashed. Colours follow the page's text colour, so it reads in light and dark mode.
    """
    positions = layout(tags, transitions)
    pairs = {(edge.source, edge.target) for edge in transitions}
    top = min(y for _, y in positions.values()) - _NODE_RY - 20
    height = max(y for _, y in positions.values()) + _NODE_RY + _LEGEND_SPACE - top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="liq-diagram" role="img" '
        f'viewBox="0 {top:.0f} {_WIDTH:.0f} {height:.0f}" aria-labelledby="liq-diagram-title">',
        '<title id="liq-diagram-title">Account phases and the transitions between them</title>',
        "<style>"
        ".liq-diagram{color:var(--color-foreground-primary,#222);max-width:100%;height:auto;"
        "font-family:var(--font-stack,sans-serif)}"
        ".liq-node{fill:var(--color-background-secondary,#f4f4f4);stroke:currentColor;"
        "stroke-width:1.5}"
        ".liq-name{fill:currentColor;font-size:15px;font-weight:600}"
        ".liq-tag{fill:currentColor;font-size:11px;opacity:.75;font-family:monospace}"
        ".liq-edge{fill:none;stroke:currentColor;stroke-width:1.4}"
        ".liq-edge-apply{stroke-dasharray:6 4}"
        ".liq-label{fill:currentColor;font-size:12.5px;paint-order:stroke;"
        "stroke:var(--color-background-primary,#fff);stroke-width:4px;stroke-linejoin:round}"
        ".liq-legend{fill:currentColor;font-size:12px}"
        "</style>",
        '<defs><marker id="liq-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="8" markerHeight="8" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="currentColor"/></marker></defs>',
    ]
    hub = _hub(tags, transitions)
    parts.extend(
        _edge_svg(edge, positions, (edge.target, edge.source) in pairs, hub)
        for edge in transitions
        if edge.source != edge.target  # staying in a phase is implicit, never drawn
    )
    for tag in tags:
        x, y = positions[tag]
        parts.append(
            f'<ellipse class="liq-node" cx="{x:.1f}" cy="{y:.1f}" '
            f'rx="{_NODE_RX:.0f}" ry="{_NODE_RY:.0f}"/>'
        )
        parts.append(_text(x, y - 2, [names.get(tag, tag)], "middle", "liq-name"))
        parts.append(_text(x, y + 14, [tag], "middle", "liq-tag"))
    legend_y = top + height - 14
    parts.append(
        f'<line class="liq-edge liq-edge-step" x1="20" y1="{legend_y - 4:.0f}" x2="60" '
        f'y2="{legend_y - 4:.0f}"/>'
        + _text(68, legend_y, ["step (an observation)"], "start", "liq-legend")
        + f'<line class="liq-edge liq-edge-apply" x1="270" y1="{legend_y - 4:.0f}" x2="310" '
        f'y2="{legend_y - 4:.0f}"/>'
        + _text(318, legend_y, ["apply (an event the shell reports)"], "start", "liq-legend")
    )
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------
# Percent-format notebooks
# ---------------------------------------------------------------------------------------

_CELL_MARKER = re.compile(r"^# %%(?P<header>.*)$")
_TAGS = re.compile(r"tags=(?P<tags>\[[^\]]*\])")


@attrs.frozen(kw_only=True)
class Cell:
    """One cell of a jupytext percent-format notebook."""

    kind: Literal["code", "markdown"]
    source: str
    tags: tuple[str, ...] = ()


def _uncomment(line: str) -> str:
    if line.startswith("# "):
        return line[2:]
    if line.rstrip() == "#":
        return ""
    return line


def parse_percent(text: str) -> list[Cell]:
    """The cells of a percent-format script (``# %%`` starts a code cell, ``# %% [markdown]``
    a Markdown cell whose lines are commented with ``# ``; ``tags=[...]`` is read)."""
    cells: list[Cell] = []
    kind: Literal["code", "markdown"] = "code"
    tags: tuple[str, ...] = ()
    lines: list[str] = []

    def flush() -> None:
        body = "\n".join(_uncomment(line) if kind == "markdown" else line for line in lines)
        if body.strip():
            cells.append(Cell(kind=kind, source=body.strip("\n"), tags=tags))

    for line in text.splitlines():
        marker = _CELL_MARKER.match(line)
        if marker is None:
            lines.append(line)
            continue
        flush()
        header = marker.group("header")
        kind = "markdown" if "[markdown]" in header else "code"
        found = _TAGS.search(header)
        tags = tuple(str(tag) for tag in json.loads(found.group("tags"))) if found else ()
        lines = []
    flush()
    return cells


def execute_cells(cells: Sequence[Cell], filename: str) -> list[str]:
    """Run the code cells in order in one fresh namespace, as a kernel would, and return
    each cell's printed output ("" for Markdown cells). A trailing expression's ``repr``
    is shown, as in Jupyter. An exception propagates (the page must not hide a failure)."""
    namespace: dict[str, object] = {"__name__": "__main__"}
    outputs: list[str] = []
    for index, cell in enumerate(cells):
        if cell.kind != "code":
            outputs.append("")
            continue
        tree = ast.parse(cell.source, filename=filename)
        trailing: ast.expr | None = None
        last = tree.body[-1] if tree.body else None
        if isinstance(last, ast.Expr):
            tree.body.pop()
            trailing = last.value
        buffer = io.StringIO()
        label = f"{filename} (cell {index + 1})"
        with contextlib.redirect_stdout(buffer):
            exec(compile(tree, label, "exec"), namespace)
            if trailing is not None:
                value = eval(compile(ast.Expression(trailing), label, "eval"), namespace)
                if value is not None:
                    print(repr(value))
        outputs.append(buffer.getvalue())
    return outputs


def notebook_markdown(cells: Sequence[Cell], outputs: Sequence[str]) -> str:
    """MyST Markdown for executed cells: Markdown as is, code in a ``python`` block, its
    output in a ``liq-output`` block right below."""
    parts: list[str] = []
    for cell, output in zip(cells, outputs, strict=True):
        if cell.kind == "markdown":
            parts.append(cell.source)
            continue
        parts.append(f"````python\n{cell.source}\n````")
        if output.strip():
            parts.append(f"````{{code-block}} none\n:class: liq-output\n\n{output.rstrip()}\n````")
    return "\n\n".join(parts) + "\n"
