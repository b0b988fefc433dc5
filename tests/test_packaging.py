"""The distribution installs as declared: one version, a licence in the wheel and the sdist,
plain ``psycopg``, the metadata an index shows, and the files the tests read."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tarfile
import tomllib
import types
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import liqcore
import liqshell

ROOT = Path(__file__).resolve().parents[1]
NAME = f"liqcore-{liqcore.__version__}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The wheel and the sdist, built from the checkout with the declared build backend."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-d", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return out / f"{NAME}-py3-none-any.whl", out / f"{NAME}.tar.gz"


def test_version_has_one_source_shared_by_both_packages() -> None:
    """liqcore and liqshell report the version written in liqcore/_version.py."""
    text = (ROOT / "liqcore" / "_version.py").read_text()
    assert f'__version__ = "{liqcore.__version__}"' in text
    assert liqshell.__version__ == liqcore.__version__
    assert "version = " not in (ROOT / "pyproject.toml").read_text().split("[project]")[1][:200]


def test_cli_prints_its_version() -> None:
    """``liqshell --version`` prints the distribution's version."""
    out = subprocess.run(
        [sys.executable, "-m", "liqshell", "--version"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == f"liqshell {liqcore.__version__}"


def test_wheel_holds_the_licence_the_packages_and_the_declared_metadata(
    built: tuple[Path, Path],
) -> None:
    """The wheel ships LICENSE, both packages with py.typed, and metadata with the version,
    the MIT licence (expression and classifier), project URLs, a development status and
    topic, plain ``psycopg`` (the binary build is the application's choice), and the
    ``pytest11`` and ``hypothesis`` entry points."""
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = Parser().parsestr(archive.read(f"{NAME}.dist-info/METADATA").decode())
        entry_points = archive.read(f"{NAME}.dist-info/entry_points.txt").decode()
    assert f"{NAME}.dist-info/licenses/LICENSE" in names
    assert {"liqcore/py.typed", "liqshell/py.typed", "liqcore/_version.py"} <= names
    assert metadata["Version"] == liqcore.__version__
    assert metadata["License-Expression"] == "MIT"
    classifiers = metadata.get_all("Classifier") or []
    assert "License :: OSI Approved :: MIT License" in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    assert any(c.startswith("Topic ::") for c in classifiers)
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(urls)
    requires = metadata.get_all("Requires-Dist") or []
    psycopg = [r for r in requires if r.startswith("psycopg") and "extra == 'postgres'" in r]
    assert psycopg, requires
    assert not any("binary" in r for r in psycopg), psycopg
    # the fakes as pytest fixtures and liqcore's Hypothesis strategies, found by entry point
    assert "[pytest11]\nliqshell = liqshell.pytest_plugin" in entry_points
    assert "[hypothesis]\nliqcore = liqcore._hypothesis_plugin:setup" in entry_points


def test_sdist_holds_the_licence_examples_and_what_its_tests_read(
    built: tuple[Path, Path],
) -> None:
    """The sdist ships LICENSE, examples/ (the CLI tests read it), the tests, docs, the
    nox sessions and CI script, so its tests run from it."""
    _, sdist = built
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(f"{NAME}/") for name in archive.getnames()}
    expected = {
        "LICENSE",
        "README.md",
        "pyproject.toml",
        "noxfile.py",
        ".ci/run",
        "examples/liqshell.toml",
        "tests/liqshell/test_cli.py",
        "docs/index.md",
        "liqcore/_version.py",
    }
    assert expected <= names, sorted(expected - names)


def _noxfile(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """noxfile.py loaded with a stand-in ``nox`` (sessions are plain functions; nox itself
    need not be installed to read what the sessions would install)."""
    stub = types.ModuleType("nox")

    def session(*function: object, **options: object) -> object:
        return function[0] if function else lambda decorated: decorated

    stub.session = session  # type: ignore[attr-defined]
    stub.options = types.SimpleNamespace()  # type: ignore[attr-defined]
    stub.Session = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nox", stub)
    spec = importlib.util.spec_from_file_location("liqshell_noxfile", ROOT / "noxfile.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lowest_session_pins_every_declared_floor_and_ci_runs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``nox -s lowest`` installs exactly the ``>=`` floor of every runtime dependency
    pyproject.toml declares (core and the testing, shell, postgres and nats extras: attrs,
    cattrs, hypothesis, prometheus_client, psycopg, nats-py, …), each pinned with ``==``;
    and CI (.ci/run) runs it. A new dependency without a floor, or a floor the session does
    not pin, fails here."""
    monkeypatch.chdir(ROOT)
    pins = _noxfile(monkeypatch).lowest_pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = list(project["dependencies"])
    for extra in ("testing", "shell", "postgres", "nats"):
        declared += project["optional-dependencies"][extra]
    expected = set()
    for requirement in declared:
        name, floor = re.split(r"(?:\[[^\]]*\])?>=", requirement)
        expected.add(f"{name}=={floor}")
    assert expected <= set(pins)
    assert set(pins) - expected == {f"psycopg-binary=={_floor(declared, 'psycopg')}"}
    names = {pin.split("==")[0] for pin in pins}
    assert {"attrs", "cattrs", "hypothesis", "prometheus_client", "psycopg", "nats-py"} <= names
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^python3 -m nox -s lowest\b", ci, re.M), ci


def _floor(declared: list[str], name: str) -> str:
    (requirement,) = (r for r in declared if re.match(rf"{re.escape(name)}(\[|>=)", r))
    return requirement.split(">=")[1]
