"""A simulated options exchange, deterministic for a seed, to run the real watcher against.

* :mod:`~liqshell.sim.market` — instruments (BTC/ETH options and perps), seeded price paths
  with a shock and a rebound, quotes around Black–Scholes theo with spreads;
* :mod:`~liqshell.sim.world` — the exchange's state and how a seed generates it (accounts
  with option books, cash, user orders);
* :mod:`~liqshell.sim.engine` — the order engine (engine-enforced reduce-only, fills when
  the market reaches a price);
* :mod:`~liqshell.sim.auctions` — the auction house (idempotent per wallet) and its feed;
* :mod:`~liqshell.sim.margin` — the margin engine (liqcore's reference models);
* :mod:`~liqshell.sim.exchange` — :class:`SimExchange`, every port the watcher needs;
* :mod:`~liqshell.sim.persistence` — the world in SQLite (snapshot per tick + journal);
* :mod:`~liqshell.sim.runner` — :func:`simulate`: the watcher on a virtual clock.
"""

from __future__ import annotations

from liqshell.sim.exchange import SimExchange
from liqshell.sim.persistence import SimStateError, WorldStore
from liqshell.sim.runner import ProgressBar, SimClock, SimSummary, render_summary, simulate
from liqshell.sim.world import Market, SimParams, World, new_world

__all__ = [
    "Market",
    "ProgressBar",
    "SimClock",
    "SimExchange",
    "SimParams",
    "SimStateError",
    "SimSummary",
    "World",
    "WorldStore",
    "new_world",
    "render_summary",
    "simulate",
]
