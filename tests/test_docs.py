"""The executable parts of the docs: the walkthrough notebook and the drawn phase diagram."""

from __future__ import annotations

import importlib.util
import os
import re
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path
from types import ModuleType

import jupytext  # type: ignore[import-untyped, unused-ignore]
import nbclient
import nbformat
import pytest
from hypothesis import given
from hypothesis import strategies as st

import liqcore
import liqshell
from liqcore.commands import SubmitOrder
from liqcore.state import PHASE_TAGS, TRANSITIONS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
WALKTHROUGH = DOCS / "examples" / "walkthrough.py"
QUANT = DOCS / "examples" / "quant.py"
SVG = "{http://www.w3.org/2000/svg}"


def _load_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("liqrender", DOCS / "_ext" / "liqrender.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_renderer()


@pytest.fixture(scope="module")
def executed() -> nbformat.NotebookNode:
    """The walkthrough executed in a python3 Jupyter kernel importing this liqcore."""
    return _execute(WALKTHROUGH)


@pytest.fixture(scope="module")
def executed_quant() -> nbformat.NotebookNode:
    """The quant notebook executed in a python3 Jupyter kernel importing this liqcore."""
    return _execute(QUANT)


def _execute(path: Path) -> nbformat.NotebookNode:
    notebook: nbformat.NotebookNode = jupytext.read(path, fmt="py:percent")
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    env = dict(os.environ)
    source_root = str(Path(liqcore.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=env)
    return notebook


def _stream_text(cell: nbformat.NotebookNode) -> str:
    return "".join(
        str(output.get("text", "")) for output in cell.outputs if output.output_type == "stream"
    )


def test_walkthrough_executed_without_error(executed: nbformat.NotebookNode) -> None:
    """Every code cell of the walkthrough ran and none produced an error output."""
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.execution_count is not None for cell in code)
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]


def test_quant_notebook_executed_replays_exactly_and_answers_the_what_if(
    executed_quant: nbformat.NotebookNode,
) -> None:
    """The quant notebook ran in a kernel without an error: the replay found 0 mismatches,
    the what-if at 300 bps diverged at the first reprice, four plots were written and the
    account's story was told."""
    code = [cell for cell in executed_quant.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    text = "".join(_stream_text(cell) for cell in code)
    assert "0 mismatches" in text
    assert "what if partial_bonus_max_bps=300" in text
    assert "phase.bonus_bps: recorded 65, replayed 54" in text
    assert "['account.png', 'bonus.png', 'comparison.png', 'timeline.png']" in text
    assert "healthy -> pre_liquidation" in text


def test_walkthrough_entry_cell_submits_at_the_banded_price(
    executed: nbformat.NotebookNode,
) -> None:
    """The cell tagged "entry" prints one SubmitOrder priced 120.6 (ask capped by the band)."""
    (entry,) = [cell for cell in executed.cells if "entry" in cell.metadata.get("tags", [])]
    submits = [line for line in _stream_text(entry).splitlines() if "SubmitOrder" in line]
    assert len(submits) == 1
    assert re.search(r"@ 120\.6\s", submits[0] + " ")


def test_walkthrough_docs_executor_matches_the_kernel(executed: nbformat.NotebookNode) -> None:
    """The docs build's in-process executor prints exactly what the Jupyter kernel printed."""
    cells = render.parse_percent(WALKTHROUGH.read_text(encoding="utf-8"))
    outputs = render.execute_cells(cells, str(WALKTHROUGH))
    kernel_cells = [cell for cell in executed.cells if cell.cell_type in {"code", "markdown"}]
    assert [cell.kind for cell in cells] == [cell.cell_type for cell in kernel_cells]
    for cell, output, kernel_cell in zip(cells, outputs, kernel_cells, strict=True):
        if cell.kind == "code":
            assert output == _stream_text(kernel_cell)


def _edges() -> list[object]:
    return [render.Edge(source=t.source, target=t.target, cause=t.cause) for t in TRANSITIONS]


def test_diagram_draws_every_transition_and_phase() -> None:
    """The SVG has one arrow per TRANSITIONS entry, one node per phase, every cause's text."""
    names = {tag: phase.__name__ for phase, tag in PHASE_TAGS.items()}
    svg = render.transitions_svg(list(PHASE_TAGS.values()), names, _edges())
    root = ET.fromstring(svg)
    arrows = [p for p in root.iter(f"{SVG}path") if "liq-edge" in p.get("class", "")]
    assert len(arrows) == len(TRANSITIONS)
    assert len(list(root.iter(f"{SVG}ellipse"))) == len(PHASE_TAGS)
    texts = [" ".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    for name in names.values():
        assert name in texts
    labels = " ".join(texts)
    for transition in TRANSITIONS:
        _, cause = render.cause_kind(transition.cause)
        assert cause in labels


def test_diagram_styles_step_and_apply_arrows_apart() -> None:
    """Arrows caused by step and by apply carry distinct classes (solid vs dashed)."""
    names = {tag: phase.__name__ for phase, tag in PHASE_TAGS.items()}
    root = ET.fromstring(render.transitions_svg(list(PHASE_TAGS.values()), names, _edges()))
    classes = [
        p.get("class", "") for p in root.iter(f"{SVG}path") if "liq-edge" in p.get("class", "")
    ]
    kinds = [render.cause_kind(t.cause)[0] for t in TRANSITIONS]
    assert [c.split()[-1] for c in classes] == [f"liq-edge-{kind or 'other'}" for kind in kinds]


_TAGS = ["a", "b", "c", "d", "e", "f"]


@given(
    count=st.integers(min_value=2, max_value=6),
    pairs=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=15, unique=True),
)
def test_layout_any_graph_renders_well_formed_with_distinct_nodes(
    count: int, pairs: list[tuple[int, int]]
) -> None:
    """Any small directed graph lays out at distinct points and renders as well-formed SVG."""
    tags = _TAGS[:count]
    edges = [
        render.Edge(source=tags[s], target=tags[t], cause=f"step: {s} to {t}")
        for s, t in pairs
        if s < count and t < count and s != t
    ]
    positions = render.layout(tags, edges)
    points = {(round(x, 3), round(y, 3)) for x, y in positions.values()}
    assert len(points) == count
    root = ET.fromstring(render.transitions_svg(tags, {}, edges))
    arrows = [p for p in root.iter(f"{SVG}path") if "liq-edge" in p.get("class", "")]
    assert len(arrows) == len(edges)


def test_parse_percent_cells_kinds_tags_and_uncommented_markdown() -> None:
    """Percent cells split on '# %%', Markdown lines lose their '# ', tags are read."""
    text = '# %% [markdown]\n# # Title\n#\n# text\n\n# %% tags=["x", "y"]\nprint(1)\n'
    cells = render.parse_percent(text)
    assert [(c.kind, c.source, c.tags) for c in cells] == [
        ("markdown", "# Title\n\ntext", ()),
        ("code", "print(1)", ("x", "y")),
    ]


def test_execute_cells_shows_trailing_expression_and_shares_namespace() -> None:
    """Cells share one namespace; a trailing expression's repr is shown as in Jupyter."""
    cells = render.parse_percent("# %%\nx = 2\n# %%\nprint(x)\nx * 3\n# %%\nNone\n")
    assert render.execute_cells(cells, "t.py") == ["", "2\n6\n", ""]


def _api_listing() -> dict[str, list[str]]:
    """The modules named in the liq-api blocks of each page of docs/api/, by page."""
    pages: dict[str, list[str]] = {}
    for page in sorted((DOCS / "api").glob("*.md")):
        blocks = re.findall(r"```\{liq-api\}\n(.*?)```", page.read_text("utf-8"), flags=re.S)
        names = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
        pages[page.stem] = [name for name in names if name]
    return pages


def _public_modules(package_dir: Path, package: str) -> set[str]:
    """Every module and package under ``package_dir`` with no part starting with ``_``."""
    found: set[str] = set()
    for path in package_dir.rglob("*.py"):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            found.add(".".join((package, *parts)))
    return found


@pytest.mark.parametrize("package", [liqcore, liqshell], ids=["liqcore", "liqshell"])
def test_api_pages_cover_every_public_module_once(package: ModuleType) -> None:
    """Every public module and package of liqcore and liqshell on disk (liqshell.analysis
    included) is on exactly one API page, and the pages name no module that does not
    exist."""
    name = package.__name__
    assert package.__file__ is not None
    on_disk = _public_modules(Path(package.__file__).resolve().parent, name)
    listed = [module for modules in _api_listing().values() for module in modules]
    ours = [module for module in listed if module.split(".")[0] == name]
    assert on_disk - set(ours) == set()
    assert set(ours) - on_disk == set()
    assert len(ours) == len(set(ours)), "a module is on two pages"
    assert "liqshell.analysis" in listed


def test_api_reference_opens_with_step_apply_the_watcher_and_the_ports() -> None:
    """The API index's table of contents starts with step/apply, the Watcher and the ports,
    every page of docs/api/ is in it, and the old single page is gone."""
    index = (DOCS / "api" / "index.md").read_text(encoding="utf-8")
    toctree = re.search(r"```\{toctree\}\n(.*?)```", index, flags=re.S)
    assert toctree is not None
    entries = [line.strip() for line in toctree.group(1).splitlines()]
    entries = [entry for entry in entries if entry and not entry.startswith(":")]
    assert entries[:3] == ["machine", "watcher", "ports"]
    pages = _api_listing()
    assert set(entries) == set(pages) - {"index"}
    assert pages["machine"] == ["liqcore.machine"]
    assert pages["watcher"][0] == "liqshell.watcher"
    assert pages["ports"] == ["liqshell.ports"]
    assert not (DOCS / "api.md").exists()


def test_index_quick_start_example_runs_and_prices_at_120_6() -> None:
    """The home page's example runs as written and leaves a SubmitOrder at 120.6."""
    page = (DOCS / "index.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    namespace: dict[str, object] = {}
    exec(compile(code, str(DOCS / "index.md"), "exec"), namespace)
    commands = namespace["commands"]
    assert isinstance(commands, tuple)
    prices = [command.price for command in commands if isinstance(command, SubmitOrder)]
    assert prices == [Decimal("120.6")]


def test_wire_protocol_examples_parse_into_the_classes_they_name() -> None:
    """Every example of docs/wire.md is the JSON of the class named before it, field for
    field (parsed with liqcore.codec and written back unchanged), and every subject of the
    protocol has one."""
    import json

    from liqcore import codec
    from liqshell import ports
    from liqshell.adapters import nats, nats_exchange

    text = (DOCS / "wire.md").read_text()
    examples = re.findall(r"`(\w+)`:\n\n```json\n(.*?)\n```", text, flags=re.S)
    assert len(examples) == 18
    for name, body in examples:
        cls = next(
            getattr(module, name)
            for module in (nats_exchange, nats, ports, liqcore)
            if hasattr(module, name)
        )
        data = json.loads(body)
        assert json.loads(codec.to_json(codec.structure(data, cls))) == data, name
    for subject in (
        nats_exchange.PORTFOLIOS_SUBJECT,
        nats_exchange.MARGIN_SUBJECT,
        nats_exchange.QUOTES_SUBJECT,
        nats_exchange.OPEN_ORDERS_SUBJECT,
        nats.SUBMIT_SUBJECT,
        nats.CANCEL_SUBJECT,
        nats.AUCTION_START_SUBJECT,
        nats.AUCTION_STOP_SUBJECT,
        nats.CHAIN_SUBJECT,
        nats.STATE_SUBJECT,
    ):
        assert f"`{subject}`" in text, subject


def _load_mutate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_mutate", ROOT / "bench" / "mutate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mutation_page_is_the_checked_in_report() -> None:
    """docs/mutation.md is exactly what ``python -m bench.mutate --markdown`` writes from
    bench/mutation-report.json and bench/mutation_equivalents.txt (an equivalent added or a
    module measured again without regenerating the page fails here), and every mutant
    listed as equivalent has its reason."""
    import json

    mutate = _load_mutate()
    report = json.loads((ROOT / "bench" / "mutation-report.json").read_text(encoding="utf-8"))
    known = mutate.equivalents()
    assert (DOCS / "mutation.md").read_text(encoding="utf-8") == mutate.markdown(report, known)
    assert known
    assert all(reason for reason in known.values())
