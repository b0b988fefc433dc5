"""Sphinx glue for the liqcore docs: content drawn from the code at build time.

* ``liq-transitions`` (a directive): the phase diagram and the table of transitions, read
  from :data:`liqcore.state.TRANSITIONS`, so the picture cannot drift from the code.
* ```` ```{liq-notebook} FILE ```` (a macro, expanded when the page is read): executes a
  jupytext percent-format script and shows its cells with their real output.
* ```` ```{liq-api} ```` (a macro): one autodoc section per module named in its body, for the
  modules that exist; the missing ones are listed in a note (a warning, and so an error
  under ``-W``, once ``liq_api_strict = True``).

Pages using any of them are re-read on every build, because what they show depends on
code Sphinx does not track.
"""

from __future__ import annotations

import importlib.util
import re
import traceback
from pathlib import Path
from typing import Any

from docutils import nodes
from liqrender import (
    Edge,
    cause_kind,
    execute_cells,
    notebook_markdown,
    parse_percent,
    transitions_svg,
)
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.errors import ExtensionError
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

__all__ = ["setup"]

logger = logging.getLogger(__name__)

_NOTEBOOK = re.compile(r"^```\{liq-notebook\}[ \t]+(?P<path>\S+)[ \t]*\n```[ \t]*$", re.M)
_API = re.compile(r"^```\{liq-api\}[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
_DYNAMIC = ("{liq-notebook}", "{liq-api}", "{liq-transitions}", "liq-transitions::")


def _xref(target: str, text: str) -> pending_xref:
    ref = pending_xref(
        "", refdomain="py", reftype="class", reftarget=target, refexplicit=True, refwarn=False
    )
    ref += nodes.literal(text, text, classes=["xref", "py", "py-class"])
    return ref


def _table(title: str, header: list[str], rows: list[list[nodes.Node]]) -> nodes.table:
    table = nodes.table(classes=["liq-transitions"])
    table += nodes.title(title, title)
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    group += head
    head_row = nodes.row()
    head += head_row
    for text in header:
        head_row += nodes.entry("", nodes.paragraph(text, text))
    body = nodes.tbody()
    group += body
    for cells in rows:
        row = nodes.row()
        body += row
        for cell in cells:
            paragraph = nodes.paragraph()
            paragraph += cell
            row += nodes.entry("", paragraph)
    return table


class TransitionsDirective(SphinxDirective):
    """The phase diagram and the table of :data:`liqcore.state.TRANSITIONS`."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from liqcore import state

        self.env.note_dependency(state.__file__)
        names: dict[str, str] = {tag: phase.__name__ for phase, tag in state.PHASE_TAGS.items()}
        tags: list[str] = list(state.PHASE_TAGS.values())
        edges = [Edge(source=t.source, target=t.target, cause=t.cause) for t in state.TRANSITIONS]
        svg = transitions_svg(tags, names, edges)
        figure = nodes.container(classes=["liq-figure"])
        figure += nodes.raw("", svg, format="html")
        rows: list[list[nodes.Node]] = []
        for number, edge in enumerate(edges, start=1):
            kind, text = cause_kind(edge.cause)
            if kind == "apply" and text.isidentifier():
                cause: nodes.Node = _xref(f"liqcore.events.{text}", text)
            else:
                cause = nodes.Text(text)
            rows.append(
                [
                    nodes.Text(str(number)),
                    _xref(f"liqcore.state.{names[edge.source]}", names[edge.source]),
                    _xref(f"liqcore.state.{names[edge.target]}", names[edge.target]),
                    nodes.literal(kind, kind) if kind else nodes.Text("—"),
                    cause,
                ]
            )
        table = _table(
            f"liqcore.state.TRANSITIONS ({len(edges)} transitions, read at build time)",
            ["#", "From", "To", "Driven by", "Cause"],
            rows,
        )
        return [figure, table]


def _notebook(match: re.Match[str], directory: Path) -> str:
    path = directory / match.group("path")
    cells = parse_percent(path.read_text(encoding="utf-8"))
    try:
        outputs = execute_cells(cells, str(path))
    except Exception as error:
        detail = "".join(traceback.format_exception(error))
        message = f"the notebook {path} failed while building the docs:\n{detail}"
        raise ExtensionError(message) from error
    return notebook_markdown(cells, outputs)


def _api(match: re.Match[str], strict: bool, docname: str) -> str:
    sections: list[str] = []
    missing: list[str] = []
    note = ""
    for line in match.group("body").splitlines():
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
            continue
        sections.append(
            f"{name}\n{'-' * len(name)}\n\n.. automodule:: {name}\n"
            "   :members:\n   :show-inheritance:\n"
        )
    if missing:
        listing = ", ".join(f"`{name}`" for name in missing)
        message = f"API modules not written yet: {', '.join(missing)}"
        if strict:
            logger.warning(message, location=docname)
        else:
            logger.info(message)
        note = (
            "```{note}\nNot written yet (their sections appear when they land): "
            f"{listing}.\n```\n"
        )
    # One reST block for the whole list: docutils then keeps section ids unique across
    # modules (two module docstrings may both have a "Theory of operation" section).
    block = f"```{{eval-rst}}\n{chr(10).join(sections)}\n```\n" if sections else ""
    return block + note


def _on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    text = source[0]
    if "{liq-" not in text:
        return
    directory = Path(app.env.doc2path(docname)).parent
    strict = bool(app.config.liq_api_strict)
    text = _NOTEBOOK.sub(lambda match: _notebook(match, directory), text)
    text = _API.sub(lambda match: _api(match, strict, docname), text)
    source[0] = text


def _always_outdated(
    app: Sphinx, env: BuildEnvironment, added: set[str], changed: set[str], removed: set[str]
) -> list[str]:
    dynamic = []
    for docname in sorted(env.found_docs):
        path = Path(env.doc2path(docname))
        if path.is_file() and any(mark in path.read_text(encoding="utf-8") for mark in _DYNAMIC):
            dynamic.append(docname)
    return dynamic


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive, the two macros and the re-read rule."""
    app.add_config_value("liq_api_strict", False, "env", bool)
    app.add_directive("liq-transitions", TransitionsDirective)
    app.connect("source-read", _on_source_read)
    app.connect("env-get-outdated", _always_outdated)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
