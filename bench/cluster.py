"""Many watchers on one PostgreSQL store: ``python -m bench.cluster`` (``nox -s
bench-cluster``) writes ``docs/benchmarks/cluster.md``.

Every instance is a process of its own (``python -m bench.cluster worker``): a
:class:`~liqshell.Watcher` with a :class:`~liqshell.ownership.ShardOwner`, polling back to
back (``run_once``, which ticks the owner when a renewal is due) on the system clock, over
one throwaway PostgreSQL server on loopback (one database per phase, a store of its own
per process). Its exchange is the project's in-memory one
(:class:`liqshell.testing.FakeExchange`) in the same process, serving the accounts of
``bench-watcher`` (``bench.throughput.poll``: 99 % healthy, 1 % in pre-liquidation, which
plan, reprice and commit). Why not the simulated exchange over NATS (the reference
responder): it is one process serving every instance — on two cores it would take a core
itself and the figure would be its encoding and its margin engine, not the instances'.
In-process, what an instance pays is what the product pays per instance: listing the
portfolios (every instance lists all of them: the port has no per-shard listing),
observing and stepping its shards' wallets, committing to the shared store, its leases.

Measured in one run:

* **throughput** — for 1, 2 and 3 instances on a fresh database: once every instance holds
  its balanced share of the shards and has polled twice, the wallets stepped in the polls
  that fall inside a common window, per instance over the span of its polls, summed;
* **failover** — three instances on a fresh database, a short TTL; ≥ 20 times the instance
  holding the most shards is killed with SIGKILL and the time from the signal until every
  shard is held again by a live instance (an unexpired lease row of a live one, read from
  the database every 10 ms) is taken; a replacement (a new instance id) is started and the
  shards rebalanced before the next kill; then a few times the same instance is stopped
  with SIGSTOP until the others hold its shards, and resumed with SIGCONT (it finds its
  commits fenced and rejoins);
* **fenced commits** (the instances' ``liqshell_fenced_commits_total``, last reported by
  each, killed ones included) and **duplicate sends**: every instance writes each request
  id it is about to send *before* sending it (so a killed instance's last attempt counts
  too); an order or cancel id sent twice over all instances of the phase is a duplicate.

The machine has two cores shared with other work: the load average is stated with each
phase, and the ratios between rows of one run are what carries over.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from bench.common import load, machine, table
from bench.throughput import poll
from bench.watcher import exchange_of
from liqcore import CancelOrder, Config, StartAuction, StopAuction, SubmitOrder
from liqshell.clock import SystemClock
from liqshell.ports import AuctionReceipt, OrderAnswer

OUT = Path("docs/benchmarks/cluster.md")
COMMAND = "nox -s bench-cluster"
ROOT = Path(__file__).resolve().parents[1]
SHARDS = 12
THROUGHPUT_ACCOUNTS = 20_000
THROUGHPUT_TTL_MS = 10_000
WINDOW_S = 30.0
FAILOVER_ACCOUNTS = 2_000
FAILOVER_TTL_MS = 2_000
FAILOVER_RENEW_MS = 500
KILLS = 24
PAUSES = 6
DEADLINE_S = 180.0  # a bound on waiting, never a figure


# --------------------------------------------------------------------------- the instance


@attrs.define
class Announcing:
    """The order gateway and auction executor of one instance: writes each request id it is
    about to send on stdout (flushed) before the exchange gets it."""

    exchange: Any

    def _say(self, op: str, request_id: str) -> None:
        sys.stdout.write(json.dumps({"send": op, "id": request_id}) + "\n")
        sys.stdout.flush()

    async def submit(self, command: SubmitOrder) -> OrderAnswer:
        self._say("submit", command.request_id)
        answer: OrderAnswer = await self.exchange.submit(command)
        return answer

    async def cancel(self, command: CancelOrder) -> OrderAnswer:
        self._say("cancel", command.request_id)
        answer: OrderAnswer = await self.exchange.cancel(command)
        return answer

    async def start(self, command: StartAuction) -> AuctionReceipt:
        self._say("start", command.request_id)
        receipt: AuctionReceipt = await self.exchange.start(command)
        return receipt

    async def stop(self, command: StopAuction) -> None:
        self._say("stop", command.request_id)
        await self.exchange.stop(command)


async def worker(args: argparse.Namespace) -> None:
    """One instance: poll back to back until SIGTERM, a JSON line per poll on stdout."""
    from prometheus_client import CollectorRegistry

    from liqshell import Watcher
    from liqshell.adapters.postgres import PostgresStore
    from liqshell.ownership import ShardOwner
    from liqshell.testing import MemorySink

    config = Config()
    exchange = exchange_of(poll(args.accounts, config))
    gateway = Announcing(exchange)
    store = PostgresStore(args.dsn, schema="bench", pool_size=4, timeout_ms=args.ttl)
    registry = CollectorRegistry()
    watcher = Watcher(
        portfolios=exchange, margin=exchange, quotes=exchange, orders=exchange,
        gateway=gateway, auctions=gateway, store=store, sink=MemorySink(), recorder=store,
        clock=SystemClock(), config=config, metrics=registry,
        owner=ShardOwner(store, instance_id=args.instance, shards=SHARDS, lease_ttl_ms=args.ttl),
        renew_interval_ms=args.renew,
    )  # fmt: skip
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    def sample(name: str) -> float:
        return registry.get_sample_value(name) or 0.0

    while not stop.is_set():
        started = time.time()
        report = await watcher.run_once()
        line = {
            "poll": [started, time.time()],
            "stepped": report.stepped,
            "conflicts": report.conflicts,
            "shards": len(watcher.shards),
            "fenced": sample("liqshell_fenced_commits_total"),
            "losses": sample("liqshell_lease_losses_total"),
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
    await watcher._leave()
    await watcher.close()


# --------------------------------------------------------------------------- CPU time

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int, *, children: bool = False) -> float:
    """CPU seconds (user + system) of process ``pid`` so far, with its reaped children's
    if ``children``; 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def server_cpu_s(postmaster: int) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster, its reaped children and the
    live ones (the backends serving the instances)."""
    total = cpu_s(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            total += cpu_s(int(entry.name))
    return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (every process, every core) so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _TICK


# --------------------------------------------------------------------------- the orchestra


@attrs.define
class Instance:
    """A worker process and what it reported."""

    name: str
    process: asyncio.subprocess.Process
    polls: list[dict[str, Any]] = attrs.Factory(list)
    sends: list[tuple[str, str]] = attrs.Factory(list)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = json.loads(raw)
            if "send" in line:
                self.sends.append((line["send"], line["id"]))
            else:
                self.polls.append(line)

    @property
    def shards(self) -> int:
        return self.polls[-1]["shards"] if self.polls else 0


async def spawn(name: str, dsn: str, *, accounts: int, ttl: int, renew: int, log: Path) -> Instance:
    with log.open("ab") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.cluster", "worker", "--dsn", dsn, "--instance", name,
            "--accounts", str(accounts), "--ttl", str(ttl), "--renew", str(renew),
            stdout=asyncio.subprocess.PIPE, stderr=err, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    instance = Instance(name=name, process=process)
    instance.reader = asyncio.ensure_future(instance.read())
    return instance


async def stop_all(instances: Sequence[Instance]) -> None:
    for instance in instances:
        if instance.process.returncode is None:
            instance.process.send_signal(signal.SIGTERM)
    for instance in instances:
        try:
            await asyncio.wait_for(instance.process.wait(), 60)
        except TimeoutError:
            instance.process.kill()
            await instance.process.wait()
        if instance.reader is not None:
            with contextlib.suppress(Exception):
                await instance.reader


def _check_alive(instances: Sequence[Instance], log: Path) -> None:
    for instance in instances:
        if instance.process.returncode is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"instance {instance.name} exited: {tail}")


async def throughput(
    dsn: str, count: int, log: Path, *, accounts: int, window: float, postmaster: int
) -> dict[str, Any]:
    """``count`` instances: accounts stepped per second, each and together."""
    names = [f"t{count}-{i}" for i in range(1, count + 1)]
    renew = THROUGHPUT_TTL_MS // 3
    instances = [
        await spawn(n, dsn, accounts=accounts, ttl=THROUGHPUT_TTL_MS, renew=renew, log=log)
        for n in names
    ]
    try:
        low = SHARDS // count
        deadline = time.monotonic() + DEADLINE_S
        # Balanced, and two polls since: the first polls after a take load and enter.
        while True:
            _check_alive(instances, log)
            if all(i.shards >= low for i in instances) and sum(i.shards for i in instances) == (
                SHARDS
            ):
                marks = [len(i.polls) for i in instances]
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"never balanced: {[i.shards for i in instances]}")
            await asyncio.sleep(0.05)
        while any(len(i.polls) < m + 2 for i, m in zip(instances, marks, strict=True)):
            _check_alive(instances, log)
            await asyncio.sleep(0.05)
        start = time.time()
        load_start = os.getloadavg()[0]
        cpu_start = [cpu_s(i.process.pid) for i in instances]
        server_start, busy_start = server_cpu_s(postmaster), machine_busy_s()
        await asyncio.sleep(window)
        cpu_end = [cpu_s(i.process.pid) for i in instances]
        server_end, busy_end = server_cpu_s(postmaster), machine_busy_s()
        end = time.time()
        load_end = os.getloadavg()[0]
        _check_alive(instances, log)
    finally:
        await stop_all(instances)
    rows = []
    for k, instance in enumerate(instances):
        inside = [p for p in instance.polls if p["poll"][0] >= start and p["poll"][1] <= end]
        if not inside:
            raise RuntimeError(f"{instance.name} finished no poll inside the window")
        span = inside[-1]["poll"][1] - inside[0]["poll"][0]
        stepped = sum(p["stepped"] for p in inside)
        rows.append(
            {
                "instance": instance.name,
                "polls": len(inside),
                "stepped": stepped,
                "per_s": stepped / span,
                "shards": inside[-1]["shards"],
                "poll_s": statistics.median(p["poll"][1] - p["poll"][0] for p in inside),
                "conflicts": sum(p["conflicts"] for p in instance.polls),
                "cpu_s": cpu_end[k] - cpu_start[k],
                "cpu_share": (cpu_end[k] - cpu_start[k]) / (end - start),
                "stepped_window": stepped * min(1.0, (end - start) / span),
            }
        )
    return {
        "instances": count,
        "per_s": sum(r["per_s"] for r in rows),
        "rows": rows,
        "load": [load_start, load_end],
        "window_s": end - start,
        "server_cores": (server_end - server_start) / (end - start),
        "machine_cores": (busy_end - busy_start) / (end - start),
        "sends": _sends(instances),
        "fenced": sum(i.polls[-1]["fenced"] for i in instances if i.polls),
    }


def _sends(instances: Sequence[Instance]) -> dict[str, Any]:
    counts = collections.Counter(send for i in instances for send in i.sends)
    duplicates = sum(n - 1 for (op, _), n in counts.items() if n > 1 and op in ("submit", "cancel"))
    resent = sum(n - 1 for (op, _), n in counts.items() if n > 1 and op in ("start", "stop"))
    return {"sent": sum(counts.values()), "duplicates": duplicates, "auction_resends": resent}


async def _leases(dsn: str) -> dict[int, tuple[str, int]]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        try:
            rows = await (
                await conn.execute("SELECT shard, holder, expires_at FROM bench.leases")
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    return {int(s): (str(h), int(x)) for s, h, x in rows}


def _all_held(rows: dict[int, tuple[str, int]], live: set[str]) -> bool:
    now = time.time() * 1000
    return len(rows) == SHARDS and all(h in live and x > now for h, x in rows.values())


async def _balanced(dsn: str, live: dict[str, Instance], log: Path) -> Counter[str]:
    """Wait until every shard is held by a live instance, a third of them each."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        _check_alive(list(live.values()), log)
        rows = await _leases(dsn)
        held = collections.Counter(h for h, _ in rows.values())
        if _all_held(rows, set(live)) and all(held[n] == SHARDS // 3 for n in live):
            return held
        if time.monotonic() > deadline:
            raise RuntimeError(f"never balanced: {dict(held)}")
        await asyncio.sleep(0.05)


async def _taken_over(dsn: str, live: set[str], signalled: float) -> float:
    """Seconds from ``signalled`` until every shard is held by a member of ``live``."""
    while True:
        rows = await _leases(dsn)
        if _all_held(rows, live):
            return time.time() - signalled
        if time.time() - signalled > DEADLINE_S:
            raise RuntimeError(f"shards not taken over: {rows}")
        await asyncio.sleep(0.01)


async def failover(dsn: str, kills: int, pauses: int, log: Path) -> dict[str, Any]:
    """Three instances; ``kills`` times SIGKILL the one holding the most shards (a
    replacement with a new id is started after the takeover), then ``pauses`` times
    SIGSTOP it until the others hold its shards and SIGCONT it; time each takeover."""
    ttl, renew = FAILOVER_TTL_MS, FAILOVER_RENEW_MS
    serial = iter(range(1, 10_000))
    live = {}
    for _ in range(3):
        name = f"f{next(serial)}"
        live[name] = await spawn(
            name, dsn, accounts=FAILOVER_ACCOUNTS, ttl=ttl, renew=renew, log=log
        )
    everyone = list(live.values())
    took: list[float] = []
    paused_took: list[float] = []
    loads: list[float] = []
    fenced_on_resume = 0.0
    try:
        for _ in range(kills):
            held = await _balanced(dsn, live, log)
            victim = max(sorted(live), key=lambda n: held[n])
            process = live.pop(victim).process
            signalled = time.time()
            process.send_signal(signal.SIGKILL)
            took.append(await _taken_over(dsn, set(live), signalled))
            await process.wait()
            loads.append(os.getloadavg()[0])
            name = f"f{next(serial)}"
            live[name] = await spawn(
                name, dsn, accounts=FAILOVER_ACCOUNTS, ttl=ttl, renew=renew, log=log
            )
            everyone.append(live[name])
        for _ in range(pauses):
            held = await _balanced(dsn, live, log)
            victim = max(sorted(live), key=lambda n: held[n])
            instance = live[victim]
            before = instance.polls[-1]["fenced"] if instance.polls else 0.0
            signalled = time.time()
            instance.process.send_signal(signal.SIGSTOP)
            try:
                paused_took.append(await _taken_over(dsn, set(live) - {victim}, signalled))
            finally:
                instance.process.send_signal(signal.SIGCONT)
            polls = len(instance.polls)
            await _balanced(dsn, live, log)  # it learnt its loss and rejoined
            while len(instance.polls) < polls + 2:
                await asyncio.sleep(0.05)
            fenced_on_resume += instance.polls[-1]["fenced"] - before
    finally:
        await stop_all(list(live.values()))
        for instance in everyone:
            if instance.reader is not None:
                with contextlib.suppress(Exception):
                    await instance.reader
    return {
        "kills": len(took),
        "took_s": took,
        "pauses": len(paused_took),
        "paused_took_s": paused_took,
        "fenced_on_resume": fenced_on_resume,
        "ttl_ms": ttl,
        "renew_ms": renew,
        "load": [min(loads), max(loads)] if loads else [0, 0],
        "sends": _sends(everyone),
        "fenced": sum(i.polls[-1]["fenced"] for i in everyone if i.polls),
        "losses": sum(i.polls[-1]["losses"] for i in everyone if i.polls),
    }


# --------------------------------------------------------------------------- the report


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(results: dict[str, Any]) -> str:
    runs = results["throughput"]
    one = runs[0]["per_s"]
    rows = [
        [
            r["instances"],
            f"{r['per_s']:,.0f}",
            " / ".join(f"{row['per_s']:,.0f}" for row in r["rows"]),
            f"{r['per_s'] / one:.2f}×",
            " / ".join(f"{row['poll_s']:.2f}" for row in r["rows"]),
            " / ".join(f"{row['cpu_share']:.2f}" for row in r["rows"]),
            " / ".join(f"{row['per_s'] / row['cpu_share']:,.0f}" for row in r["rows"]),
            f"{r['server_cores']:.2f}",
            f"{r['machine_cores']:.2f}",
            sum(row["conflicts"] for row in r["rows"]),
            f"{r['load'][0]:.1f} → {r['load'][1]:.1f}",
        ]
        for r in runs
    ]
    fail = results["failover"]
    took = fail["took_s"]
    efficiency = [
        sum(row["per_s"] / row["cpu_share"] for row in r["rows"]) / len(r["rows"]) for r in runs
    ]
    reading = (
        f"How to read it: the machine has {os.cpu_count()} cores. One instance keeps one "
        f"busy ({runs[0]['rows'][0]['cpu_share']:.2f}) and PostgreSQL "
        f"{runs[0]['server_cores']:.2f} of another; with "
        + ", ".join(
            f"{r['instances']} instances the machine was busy {r['machine_cores']:.2f} cores "
            f"(PostgreSQL {r['server_cores']:.2f})"
            for r in runs[1:]
        )
        + ". What an instance does per CPU-second it gets — "
        + " / ".join(f"{e:,.0f}" for e in efficiency)
        + " accounts with 1 / 2 / 3 instances, "
        + " / ".join(f"{e / efficiency[0]:.2f}" for e in efficiency)
        + "× of one — stays near one instance's, and the store used a fraction of a core "
        "with no conflict: the sum is bounded by the cores, not by the store. Each instance "
        "also lists every portfolio at each poll (the port has no per-shard listing) and "
        "checks which wallets are its own: a cost per instance that does not shrink with "
        "its share of the shards."
    )
    bound = (fail["ttl_ms"] + fail["renew_ms"]) / 1000
    sends = [r["sends"] for r in runs] + [fail["sends"]]
    lines = [
        "# Many instances on one PostgreSQL store",
        "",
        f"Produced by `{COMMAND}` (`python -m bench.cluster`); what is measured, and why the "
        "exchange is in-process, is in the module's docstring. "
        f"Machine: {machine()}; shared with other work while it ran (load averages below): "
        "the ratios between rows of this one run are the figures that carry over. "
        f"Written in {results['seconds']:.0f} s.",
        "",
        "## Accounts swept per second",
        "",
        f"{results['accounts']:,} accounts (99 % healthy, 1 % liquidating), {SHARDS} shards, "
        f"lease TTL {THROUGHPUT_TTL_MS / 1000:g} s; each instance a process polling back to "
        f"back, its wallets stepped per second over the span of its polls inside a common "
        f"{results['window_s']:g} s window once it held its share and had polled twice.",
        "",
        table(
            [
                "instances",
                "accounts/s (sum)",
                "per instance",
                "× one instance",
                "median poll s",
                "CPU of each instance (cores)",
                "accounts per instance CPU-second",
                "PostgreSQL (cores)",
                "machine busy (cores, all processes)",
                "conflicts",
                "load (1 min)",
            ],
            rows,
        ),
        "",
        reading,
        "",
        "## Failover",
        "",
        f"Three instances, {FAILOVER_ACCOUNTS:,} accounts, {SHARDS} shards, lease TTL "
        f"{fail['ttl_ms']} ms, renewal every {fail['renew_ms']} ms; {fail['kills']} times the "
        "instance holding the most shards was killed with SIGKILL and a replacement started "
        f"once every shard was held again; then {fail['pauses']} times it was stopped with "
        "SIGSTOP instead until the others held its shards (time from the signal until every "
        "shard was held again by a live instance below).",
        "",
        table(
            ["fault", "count", "min s", "median s", "p90 s", "max s", "mean s", "bound s"],
            [
                [
                    name,
                    len(values),
                    f"{min(values):.2f}",
                    f"{statistics.median(values):.2f}",
                    f"{_quantile(values, 0.9):.2f}",
                    f"{max(values):.2f}",
                    f"{statistics.fmean(values):.2f}",
                    f"{bound:g}",
                ]
                for name, values in (
                    ("SIGKILL", took),
                    ("SIGSTOP (SIGCONT after)", fail["paused_took_s"]),
                )
                if values
            ],
        ),
        "",
        "The bound is the TTL plus one renewal interval (a lease runs out at most that long "
        "after the holder's last renewal). Every takeover after SIGKILL, s: "
        + ", ".join(f"{t:.2f}" for t in took)
        + f". Load average during the kills: {fail['load'][0]:.1f}–{fail['load'][1]:.1f}. "
        f"After each SIGSTOP the instance was resumed once the others held its shards: "
        f"{fail['fenced_on_resume']:g} of its commits were fenced when it resumed (its "
        "leases had run out on its own clock or been taken: nothing executed), and it "
        "rejoined.",
        "",
        "## Fencing and duplicates",
        "",
        table(
            [
                "phase",
                "requests sent",
                "order/cancel sent twice",
                "auction re-sends",
                "fenced commits",
                "leases lost",
            ],
            [
                [
                    f"{r['instances']} instance(s)",
                    r["sends"]["sent"],
                    r["sends"]["duplicates"],
                    r["sends"]["auction_resends"],
                    f"{r['fenced']:g}",
                    "—",
                ]
                for r in runs
            ]
            + [
                [
                    "failover",
                    fail["sends"]["sent"],
                    fail["sends"]["duplicates"],
                    fail["sends"]["auction_resends"],
                    f"{fail['fenced']:g}",
                    f"{fail['losses']:g}",
                ]
            ],
        ),
        "",
        "Duplicates over the whole run: "
        f"{sum(s['duplicates'] for s in sends)} (every send is counted when it is about to "
        "leave, a killed instance's last attempt included).",
        "",
    ]
    return "\n".join(lines)


async def orchestrate(kills: int, pauses: int, accounts: int, window: float) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.liqshell.services import start_postgres

    started = time.perf_counter()
    server = start_postgres()
    log = Path(os.environ.get("BENCH_CLUSTER_LOG", "/tmp/bench-cluster.log"))
    log.write_bytes(b"")
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    try:
        runs = []
        for count in (1, 2, 3):
            dsn = server.dsn(server.create_database())
            runs.append(
                await throughput(
                    dsn, count, log, accounts=accounts, window=window, postmaster=postmaster
                )
            )
            print(f"{count} instance(s): {runs[-1]['per_s']:,.0f} accounts/s", file=sys.stderr)
        dsn = server.dsn(server.create_database())
        fail = await failover(dsn, kills, pauses, log)
        print(f"failover: {fail['kills']} kills, {fail['took_s']}", file=sys.stderr)
    finally:
        server.remove()
    return {
        "throughput": runs,
        "failover": fail,
        "seconds": time.perf_counter() - started,
        "load_end": load(),
        "accounts": accounts,
        "window_s": window,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("worker", help=argparse.SUPPRESS)
    one.add_argument("--dsn", required=True)
    one.add_argument("--instance", required=True)
    one.add_argument("--accounts", type=int, required=True)
    one.add_argument("--ttl", type=int, required=True)
    one.add_argument("--renew", type=int, required=True)
    parser.add_argument("--kills", type=int, default=KILLS)
    parser.add_argument("--pauses", type=int, default=PAUSES)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures")
    parser.add_argument("--accounts", type=int, default=THROUGHPUT_ACCOUNTS)
    parser.add_argument("--window", type=float, default=WINDOW_S, help="seconds per row")
    args = parser.parse_args(argv)
    if args.command == "worker":
        asyncio.run(worker(args))
        return 0
    results = asyncio.run(orchestrate(args.kills, args.pauses, args.accounts, args.window))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(results), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
