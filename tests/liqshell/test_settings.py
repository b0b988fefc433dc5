"""liqshell.settings: strict TOML → typed settings; every problem is one named line."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import urllib.request
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqcore import (
    AccountReset,
    Config,
    InstrumentSpec,
    OrderFailed,
    PortfolioMargin,
    StandardMargin,
    SubmitOrder,
)
from liqshell.adapters import Retention, ServiceUnavailable, read_records
from liqshell.adapters.nats import ChainEvent, NatsConnector, publish_chain_event
from liqshell.cli import main
from liqshell.ports import RecordKind
from liqshell.settings import (
    EXCHANGE_GROUP,
    ExchangeSettings,
    MetricsSettings,
    Settings,
    SettingsError,
    StoreSettings,
    exchange_factory,
    load_settings,
    parse_settings,
    resolve_exchange,
    retention_of,
    run_watcher,
)
from liqshell.sim import SimParams
from liqshell.testing import FakeExchange
from liqshell.watcher import Watcher
from tests.liqshell.engine_service import eventually
from tests.liqshell.services import NatsServer, free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "liqshell.toml"


def write(tmp_path: Path, text: str) -> Path:
    """A config file holding ``text``."""
    path = tmp_path / "liqshell.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_settings_example_file_parses_with_its_values() -> None:
    """The shipped example is valid and says what it means."""
    settings = load_settings(EXAMPLE)
    assert settings.config.poll_interval_ms == 5_000
    assert settings.config.instruments["BTC"] == InstrumentSpec(
        size_step=Decimal("0.01"), price_tick=Decimal("0.5"), min_size=Decimal("0.01")
    )
    assert settings.config.standard_margin == StandardMargin()
    assert settings.config.portfolio_margin == PortfolioMargin()
    assert settings.store == StoreSettings()
    assert settings.nats is None
    assert settings.sim == SimParams()
    assert settings.exchange == ExchangeSettings(source="sim", speed=Decimal(10))


def test_load_settings_empty_file_gives_defaults(tmp_path: Path) -> None:
    """Every section is optional."""
    settings = load_settings(write(tmp_path, ""))
    assert settings.config == Config()
    assert settings.store == StoreSettings()
    assert settings.nats is None
    assert settings.metrics == MetricsSettings()
    assert settings == Settings(source=str(tmp_path / "liqshell.toml"))


@given(
    poll=st.integers(1, 10**9),
    escalation=st.integers(0, 10**9),
    start=st.integers(0, 5_000),
    extra=st.integers(0, 5_000),
    threshold=st.decimals(0, 10**6, places=4, allow_nan=False, allow_infinity=False),
)
def test_parse_settings_liqcore_values_reach_config(
    poll: int, escalation: int, start: int, extra: int, threshold: Decimal
) -> None:
    """Whatever valid values [liqcore] holds, the Config carries exactly them."""
    settings = parse_settings(
        {
            "liqcore": {
                "poll_interval_ms": poll,
                "full_escalation_timeout_ms": escalation,
                "partial_bonus_start_bps": start,
                "partial_bonus_max_bps": start + extra,
                "min_shortfall_threshold": str(threshold),
            }
        }
    )
    assert settings.config.poll_interval_ms == poll
    assert settings.config.full_escalation_timeout_ms == escalation
    assert settings.config.partial_bonus_max_bps == start + extra
    assert settings.config.min_shortfall_threshold == threshold


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "[liqcore]\npoll_intervall_ms = 5\n",
            "[liqcore] poll_intervall_ms: unknown key (did you mean 'poll_interval_ms'?)",
        ),
        ("[liqcore]\npoll_interval_ms = 0\n", "poll_interval_ms"),
        ("[liqcore]\npoll_interval_ms = '5'\n", "must be an integer"),
        (
            "[liqcore]\npartial_bonus_start_bps = 10\npartial_bonus_max_bps = 5\n",
            "partial_bonus_max_bps",
        ),
        ("[liqcore]\nmin_shortfall_threshold = 'lots'\n", "min_shortfall_threshold"),
        ("[liqcore]\nmin_shortfall_threshold = nan\n", "min_shortfall_threshold"),
        ("[liqcore]\nenabled = 'yes'\n", "true or false"),
        ("[liqcore.standard_margin]\nrate = -1\n", "[liqcore.standard_margin]"),
        ("[liqcore.portfolio_margin]\nspot_shocks = []\n", "spot_shocks"),
        ("[liqcore.instruments.BTC]\nsize_step = 0\n", "[liqcore.instruments.BTC]"),
        ("[liqcore.instruments]\nBTC = 3\n", "must be a table"),
        ("[store]\nkind = 'redis'\n", "[store] kind"),
        ("[store]\nkind = 'postgres'\n", "[store] dsn: is required"),
        ("[store]\nrecord_mode = 'some'\n", "[store] record_mode"),
        ("[store]\nkeep_days = 0\n", "[store] keep_days: must be ≥ 1"),
        ("[store]\nkeep_records = 'lots'\n", "[store] keep_records: must be an integer"),
        ("[store]\nprune_interval_ms = -5\n", "[store] prune_interval_ms"),
        ("[nats]\nservers = ['localhost']\n", "not a URL"),
        ("[nats]\nrequest_timeout_ms = 0\n", "request_timeout_ms"),
        ("[metrics]\nport = 70000\n", "[metrics] port"),
        ("[sim]\naccounts = 0\n", "[sim]"),
        ("[sim]\nshock_pct = -99\n", "shock_pct"),
        ("[simulation]\naccounts = 3\n", "[simulation]: unknown section"),
        ("liqcore = 3\n", "[liqcore]: must be a table"),
        ("[liqcore\n", "invalid TOML"),
    ],
)
def test_load_settings_bad_file_one_line_naming_the_place(
    tmp_path: Path, text: str, fragment: str
) -> None:
    """A bad value, key or section: one SettingsError line naming the file and the key."""
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert fragment in message
    assert message.startswith(str(path))
    assert "\n" not in message


def test_load_settings_missing_or_directory_or_binary_clear_error(tmp_path: Path) -> None:
    """Bad paths are named, never a traceback from the OS or the TOML parser."""
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(SettingsError, match="is a directory"):
        load_settings(tmp_path)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SettingsError, match="UTF-8"):
        load_settings(binary)


def test_parse_settings_float_money_read_through_its_text() -> None:
    """A TOML float for money is read as its text (0.1 is 0.1, not 0.1000000000000000055…)."""
    settings = parse_settings({"liqcore": {"standard_margin": {"rate": 0.1}}})
    standard = settings.config.standard_margin
    assert isinstance(standard, StandardMargin)
    assert standard.rate == Decimal("0.1")


def test_parse_settings_nats_and_exchange_sections_read() -> None:
    """[nats] and [exchange] values reach their settings."""
    settings = parse_settings(
        {
            "nats": {
                "servers": ["nats://a:1", "nats://b:2"],
                "stream": "S",
                "chain_stream": "C",
                "request_timeout_ms": 700,
            },
            "exchange": {"source": "my.exchange:sources", "speed": 2.5},
            "store": {"changes": "c.jsonl", "timeout_ms": 50, "record_mode": "all"},
        }
    )
    assert settings.nats is not None
    assert settings.nats.servers == ("nats://a:1", "nats://b:2")
    assert (settings.nats.stream, settings.nats.chain_stream) == ("S", "C")
    assert settings.nats.request_timeout_ms == 700
    assert settings.exchange == ExchangeSettings(source="my.exchange:sources", speed=Decimal("2.5"))
    assert (settings.store.changes, settings.store.timeout_ms) == ("c.jsonl", 50)
    assert settings.store.record_mode == "all"


def test_parse_settings_store_retention_reaches_the_stores_retention() -> None:
    """[store] keep_days, keep_records and prune_interval_ms become the stores' Retention;
    without them the store keeps everything."""
    settings = parse_settings(
        {"store": {"keep_days": 30, "keep_records": 5_000_000, "prune_interval_ms": 9_000}}
    )
    assert retention_of(settings.store) == Retention(
        keep_days=30, keep_records=5_000_000, interval_ms=9_000
    )
    assert retention_of(parse_settings({}).store).keeps_everything


@pytest.mark.parametrize(
    ("exchange", "fragment"),
    [({"source": "not a path"}, "source"), ({"speed": 0}, "speed"), ({"sauce": "sim"}, "sauce")],
)
def test_parse_settings_bad_exchange_named(exchange: dict[str, object], fragment: str) -> None:
    """A bad [exchange] is one error naming its key."""
    with pytest.raises(SettingsError, match=fragment):
        parse_settings({"exchange": exchange})


def sim_settings(tmp_path: Path, **extra: dict[str, object]) -> Settings:
    """Settings running a small simulated exchange fast, with a SQLite store and a log."""
    document: dict[str, object] = {
        "store": {"path": str(tmp_path / "run.sqlite"), "record": str(tmp_path / "run.jsonl")},
        "sim": {"accounts": 4, "minutes": 2, "seed": 3},
        "exchange": {"source": "sim", "speed": 120},
        **extra,
    }
    return parse_settings(document, source="test.toml")


async def run_for(settings: Settings, seconds: float) -> list[Watcher]:
    """Run the watcher ``settings`` build for ``seconds`` of wall time; the watchers it made."""
    stop = asyncio.Event()
    made: list[Watcher] = []
    asyncio.get_running_loop().call_later(seconds, stop.set)
    await run_watcher(settings, stop, on_ready=made.append)
    return made


def poll_notes(log: Path) -> list[str]:
    """The notes of the poll summaries among the complete lines of the JSON Lines ``log``
    (a watcher may be writing its last line while we read)."""
    if not log.exists():
        return []
    text = log.read_text(encoding="utf-8")
    complete = text[: text.rfind("\n") + 1]
    notes = []
    for line in complete.splitlines():
        document = json.loads(line)
        if document.get("kind") == RecordKind.POLL.value:
            notes.append(str(document["note"]))
    return notes


async def test_run_watcher_sim_source_polls_records_and_stops(tmp_path: Path) -> None:
    """``run`` against the simulated exchange polls every account, records, stops cleanly.

    It is stopped once its log holds three poll summaries, not after a wall time: a loaded
    machine changes how many polls fit in a second, not what each poll does.
    """
    settings = sim_settings(tmp_path)
    log = tmp_path / "run.jsonl"
    stop = asyncio.Event()
    made: list[Watcher] = []

    async def stop_after_three_polls() -> None:
        while len(poll_notes(log)) < 3:
            await asyncio.sleep(0.02)
        stop.set()

    stopper = asyncio.create_task(stop_after_three_polls())
    try:
        await asyncio.wait_for(run_watcher(settings, stop, on_ready=made.append), 300)
    finally:
        stopper.cancel()
    (watcher,) = made
    assert set(watcher.states) <= {f"0xsim000{i}" for i in range(4)}
    records = list(read_records(log))
    polls = [r for r in records if r.kind is RecordKind.POLL]
    assert len(polls) >= 3
    # Every poll that finished before the stop stepped all four accounts (healthy no-ops
    # are counted, not recorded); the poll in flight at the stop may end early by design.
    assert [r.note for r in polls[:3] if "stepped=4 " not in r.note] == []
    assert {r.now for r in records} != {records[0].now}  # simulated time moved


async def test_run_watcher_without_exchange_source_refused(tmp_path: Path) -> None:
    """``run`` needs an [exchange] source: one SettingsError naming it."""
    settings = parse_settings({"store": {"path": str(tmp_path / "x.sqlite")}}, source="t.toml")
    with pytest.raises(SettingsError, match=r"\[exchange\] source"):
        await run_for(settings, 0.1)


async def test_run_watcher_store_in_missing_directory_refused(tmp_path: Path) -> None:
    """A store path in a directory that does not exist is a settings error, before connecting."""
    settings = parse_settings(
        {"store": {"path": str(tmp_path / "no" / "x.sqlite")}, "exchange": {"source": "sim"}},
        source="t.toml",
    )
    with pytest.raises(SettingsError, match=r"\[store\] path: directory"):
        await run_for(settings, 0.1)


async def test_run_watcher_unreachable_nats_service_unavailable(tmp_path: Path) -> None:
    """No NATS server on the configured port: ServiceUnavailable naming it, quickly."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = sim_settings(
        tmp_path, nats={"servers": [f"nats://127.0.0.1:{port}"], "connect_timeout_ms": 300}
    )
    with pytest.raises(ServiceUnavailable, match=str(port)):
        await run_for(settings, 5.0)


CALLED: list[str] = []


@exchange_factory
def not_an_exchange(settings: Settings) -> object:
    """A marked factory returning an object without the observation methods."""
    CALLED.append("not_an_exchange")
    return "not an exchange"


@exchange_factory
def failing_exchange(settings: Settings) -> object:
    """A marked factory that fails."""
    CALLED.append("failing_exchange")
    raise TypeError("no exchange today")


def unmarked_exchange(settings: Settings) -> object:
    """Any callable, not marked as a factory."""
    CALLED.append("unmarked_exchange")
    return object()


async def test_run_watcher_factory_source_missing_methods_refused(tmp_path: Path) -> None:
    """A factory whose object lacks observation methods is named."""
    here = "tests.liqshell.test_settings"
    settings = parse_settings(
        {
            "store": {"path": str(tmp_path / "x.sqlite")},
            "exchange": {"source": f"{here}:not_an_exchange"},
        },
        source="t.toml",
    )
    with pytest.raises(SettingsError, match="without portfolios"):
        await run_for(settings, 0.1)
    failing = attrs.evolve(settings, exchange=ExchangeSettings(source=f"{here}:failing_exchange"))
    with pytest.raises(SettingsError, match=r"failing_exchange\(\) failed: TypeError"):
        await run_for(failing, 0.1)
    absent = attrs.evolve(settings, exchange=ExchangeSettings(source="no_such_module:x"))
    with pytest.raises(SettingsError, match="cannot import no_such_module"):
        await run_for(absent, 0.1)


@pytest.mark.parametrize(
    "source", ["os:system", "builtins:print", "tests.liqshell.test_settings:unmarked_exchange"]
)
async def test_run_watcher_refuses_an_unmarked_callable_before_creating_anything(
    tmp_path: Path, source: str
) -> None:
    """``source = "os:system"`` (any callable not marked as an exchange factory, nor an entry
    point) is refused without being called and before any file is created."""
    CALLED.clear()
    settings = parse_settings(
        {"store": {"path": str(tmp_path / "x.sqlite")}, "exchange": {"source": source}},
        source="t.toml",
    )
    with pytest.raises(SettingsError, match="not marked as a liqshell exchange factory"):
        resolve_exchange(settings)
    with pytest.raises(SettingsError, match="not marked"):
        await run_for(settings, 0.1)
    assert CALLED == []
    assert list(tmp_path.iterdir()) == []


def _entry_point(folder: Path, name: str, target: str) -> None:
    """An installed distribution declaring ``name`` in the group liqshell.exchanges."""
    info = folder / "liqshell_test_exchange-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: liqshell-test-exchange\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(f"[{EXCHANGE_GROUP}]\n{name} = {target}\n")


def test_resolve_exchange_loads_an_entry_point_without_calling_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``source = "name"`` loads the entry point of that name in the group
    liqshell.exchanges (a package vouches for it: no mark needed), without calling it; an
    unknown name lists the installed ones."""
    CALLED.clear()
    _entry_point(tmp_path, "test-exchange", "tests.liqshell.test_settings:unmarked_exchange")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = parse_settings({"exchange": {"source": "test-exchange"}}, source="t.toml")
    assert resolve_exchange(settings) is unmarked_exchange
    assert CALLED == []
    missing = parse_settings({"exchange": {"source": "nope"}}, source="t.toml")
    with pytest.raises(SettingsError, match=r"installed: .*test-exchange"):
        resolve_exchange(missing)


def test_resolve_exchange_accepts_a_marked_factory_without_calling_it() -> None:
    """A callable marked with exchange_factory is imported and checked, not called."""
    CALLED.clear()
    settings = parse_settings(
        {"exchange": {"source": "tests.liqshell.test_settings:not_an_exchange"}}, source="t.toml"
    )
    assert resolve_exchange(settings) is not_an_exchange
    assert CALLED == []


@exchange_factory
def needs_a_url(settings: Settings, url: str) -> object:
    """A factory that cannot be called as factory(settings)."""
    raise AssertionError("never called")


@exchange_factory
def takes_nothing() -> object:
    """A factory that takes no settings."""
    raise AssertionError("never called")


@exchange_factory
async def async_exchange(settings: Settings) -> FakeExchange:
    """A coroutine function: calling it would not build the exchange."""
    raise AssertionError("never called")


@exchange_factory
def returns_an_int(settings: Settings) -> int:
    """Annotated with a type that serves no port."""
    raise AssertionError("never called")


@exchange_factory
def returns_none(settings: Settings) -> None:
    """Annotated to return nothing."""
    raise AssertionError("never called")


class ObservationOnly:
    """The four observation ports, no order, auction or feed port."""

    async def portfolios(self) -> object: ...
    async def portfolio(self, wallet: str) -> object: ...
    async def margin(self, wallet: str, portfolio: object) -> object: ...
    async def quotes(self, symbols: object) -> object: ...
    async def open_orders(self, wallet: str) -> object: ...


@exchange_factory
def observation_only(settings: Settings) -> ObservationOnly:
    """Serves observation only: fine with [nats], not without."""
    raise AssertionError("never called")


class EveryPort(ObservationOnly):
    """The observation ports and the order, auction and feed ports."""

    async def submit(self, order: object) -> object: ...
    async def cancel(self, order: object) -> object: ...
    async def start(self, request: object) -> object: ...
    async def stop(self, request: object) -> object: ...
    def events(self, after: object) -> object: ...


@exchange_factory
def full_exchange(settings: Settings, *more: object, extra: int = 1) -> EveryPort:
    """Binds factory(settings) (the rest has defaults) and returns every port."""
    raise AssertionError("never called")


@exchange_factory
def unresolvable(settings: Settings) -> NotImportedHere:  # type: ignore[name-defined]  # noqa: F821
    """Its return annotation names a type only a type checker would see."""
    raise AssertionError("never called")


@pytest.mark.parametrize(
    ("name", "nats", "message"),
    [
        ("needs_a_url", False, r"test_settings:needs_a_url cannot be called as "
         r"factory\(settings\): missing a required argument: 'url'"),
        ("takes_nothing", False, r"cannot be called as factory\(settings\): too many "
         r"positional arguments"),
        ("async_exchange", False, r"is a coroutine function: a factory is called as "
         r"factory\(settings\)"),
        ("returns_an_int", False, r"annotated to return int, which has no portfolios, "
         r"portfolio, margin, quotes, open_orders"),
        ("returns_none", False, r"annotated to return None, not an exchange"),
        ("observation_only", False, r"annotated to return ObservationOnly, which has no "
         r"submit, cancel, start, stop, events \(without \[nats\]"),
    ],
)  # fmt: skip
def test_resolve_exchange_type_checks_the_factory_without_calling_it(
    name: str, nats: bool, message: str
) -> None:
    """The factory's signature must bind ``factory(settings)``, it must not be async, and a
    return annotation that resolves must be a class serving the ports: each failure is one
    SettingsError naming the file, ``[exchange] source`` and the factory."""
    source = f"tests.liqshell.test_settings:{name}"
    document: dict[str, object] = {"exchange": {"source": source}}
    if nats:
        document["nats"] = {}
    settings = parse_settings(document, source="t.toml")
    with pytest.raises(SettingsError, match=r"^t\.toml: \[exchange\] source: ") as raised:
        resolve_exchange(settings)
    assert re.search(message, str(raised.value)), str(raised.value)


@pytest.mark.parametrize(
    ("name", "nats"),
    [
        ("full_exchange", False),
        ("observation_only", True),
        ("unresolvable", False),
        ("not_an_exchange", False),
    ],
)
def test_resolve_exchange_accepts_factories_that_type_check(name: str, nats: bool) -> None:
    """Extra parameters with defaults, a class serving the ports it is to serve (with
    ``[nats]``, observation alone), ``-> object``, and an annotation that does not resolve
    at run time are accepted."""
    document: dict[str, object] = {"exchange": {"source": f"tests.liqshell.test_settings:{name}"}}
    if nats:
        document["nats"] = {}
    assert resolve_exchange(parse_settings(document)) is globals()[name]


def test_check_config_reports_a_factory_that_does_not_type_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``liqshell check-config`` runs the same check: one error line, usage status."""
    path = tmp_path / "c.toml"
    path.write_text('[exchange]\nsource = "tests.liqshell.test_settings:needs_a_url"\n')
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "[exchange] source" in err
    assert "missing a required argument: 'url'" in err


@pytest.mark.services
async def test_run_watcher_sim_over_nats_full_loop(tmp_path: Path, nats_server: NatsServer) -> None:
    """With [nats], orders, auctions and chain events all travel over NATS (JetStream), the
    chain events signed with the configured key and verified by the feed."""
    key = tmp_path / "chain.key"
    key.write_bytes(b"indexer-secret\n")
    settings = sim_settings(
        tmp_path,
        nats={
            "servers": [nats_server.url],
            "stream": "LIQ_STATE",
            "chain_stream": "LIQ_CHAIN",
            "chain_key_file": str(key),
        },
    )
    settings = attrs.evolve(settings, sim=SimParams(accounts=8, minutes=2, seed=1))
    await run_for(settings, 3.0)
    records = list(read_records(tmp_path / "run.jsonl"))
    commands = [c for r in records if r.kind is RecordKind.DECISION for c in r.commands]
    assert any(isinstance(c, SubmitOrder) for c in commands)
    outcomes = [e for r in records if r.kind is RecordKind.OUTCOMES for e in r.events]
    assert not any(isinstance(e, OrderFailed) for e in outcomes)
    assert any(r.kind is RecordKind.FEED for r in records)


@pytest.mark.services
async def test_run_watcher_serves_the_feed_refusals_as_a_metric(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """``liqshell run``'s feed counts into the metrics it serves: a chain event signed with
    a guessed key (the configured ``chain_key_file`` is another) is refused by the verify
    hook and shows as ``liqshell_feed_refused_total{reason="rejected"} 1.0`` on the
    ``/metrics`` endpoint, and still 1.0 three polls later (each poll reads the stream again
    from the cursor; before, each read counted it again)."""
    key = tmp_path / "chain.key"
    key.write_bytes(b"indexer-secret\n")
    port = free_port()
    settings = sim_settings(
        tmp_path,
        nats={
            "servers": [nats_server.url],
            "chain_stream": "LIQ_CHAIN_REFUSED",
            "chain_subject": "liq.chain.refused",
            "chain_key_file": str(key),
        },
        metrics={"enabled": True, "host": "127.0.0.1", "port": port},
    )
    stop = asyncio.Event()
    made: list[Watcher] = []
    running = asyncio.create_task(run_watcher(settings, stop, on_ready=made.append))
    connector = NatsConnector(nats_server.url)
    rejected = 'liqshell_feed_refused_total{reason="rejected"} 1.0'
    scraped = [""]

    def scrape() -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
            scraped[0] = response.read().decode()

    try:
        await eventually(lambda: bool(made) or running.done(), timeout_s=60)
        assert not running.done(), running
        forged = ChainEvent(event_id="forged", wallet="0xsim0001", event=AccountReset())
        await publish_chain_event(
            connector, forged, subject="liq.chain.refused", stream="LIQ_CHAIN_REFUSED",
            key=b"guess",
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while rejected not in scraped[0]:
            assert loop.time() < deadline, scraped[0]
            assert not running.done(), running
            await asyncio.sleep(0.1)
            await asyncio.to_thread(scrape)
        # Polls read the stream again from the cursor: the message is counted only once.
        first = _polls(scraped[0])
        while _polls(scraped[0]) < first + 3:
            assert loop.time() < deadline, scraped[0]
            assert not running.done(), running
            await asyncio.sleep(0.1)
            await asyncio.to_thread(scrape)
        assert rejected in scraped[0]
    finally:
        stop.set()
        await connector.close()
        await running


def _polls(exposition: str) -> float:
    """``liqshell_poll_duration_seconds_count`` in a scraped ``/metrics`` text."""
    found = re.search(r"^liqshell_poll_duration_seconds_count (\S+)$", exposition, re.M)
    return float(found.group(1)) if found else 0.0


async def test_run_watcher_unreadable_chain_key_refused_before_creating_anything(
    tmp_path: Path,
) -> None:
    """A ``[nats] chain_key_file`` that cannot be read is a settings error, before the store
    is created or anything connects."""
    settings = sim_settings(
        tmp_path,
        nats={"servers": ["nats://127.0.0.1:1"], "chain_key_file": str(tmp_path / "no.key")},
    )
    with pytest.raises(SettingsError, match="chain_key_file"):
        await run_for(settings, 0.1)
    assert not (tmp_path / "run.sqlite").exists()
