"""liqshell.sim.live: simulated time on the wall clock, scaled."""

from __future__ import annotations

import asyncio

import pytest

from liqshell.sim.live import ScaledClock


def test_scaled_clock_runs_speed_times_wall_time() -> None:
    """now_ms moves ``speed`` ms per wall ms from its start."""
    wall = [100.0]
    clock = ScaledClock(1_000, 10, wall=lambda: wall[0])
    assert clock.now_ms() == 1_000
    wall[0] += 0.5
    assert clock.now_ms() == 6_000
    assert clock.wall_seconds_until(16_000) == pytest.approx(1.0)


async def test_scaled_clock_wait_for_times_out_on_simulated_time() -> None:
    """A timeout of 1 simulated second at speed 100 expires after ~10 wall ms."""
    clock = ScaledClock(0, 100)
    with pytest.raises(TimeoutError):
        await clock.wait_for(asyncio.sleep(1), 1_000)
    assert await clock.wait_for(asyncio.sleep(0, result=7), 1_000) == 7


def test_scaled_clock_non_positive_speed_refused() -> None:
    """Time cannot stand still or run backwards."""
    with pytest.raises(ValueError, match="speed"):
        ScaledClock(0, 0)
