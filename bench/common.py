"""Shared benchmark helpers: timing, growth fits, machine description, Markdown tables."""

from __future__ import annotations

import cProfile
import gc
import math
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import attrs


def machine() -> str:
    """One line naming the machine and interpreter the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {sys.platform}"
    )


def load() -> str:
    """The 1-minute load average and the core count, e.g. ``"2.9 on 2 cores"``."""
    try:
        one, _, _ = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.1f} on {os.cpu_count()} cores"


def best_ns(fn: Callable[[], object], *, number: int, repeat: int = 7) -> float:
    """Best time per call in ns over ``repeat`` runs of ``number`` calls (GC off while timing)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter_ns()
            for _ in range(number):
                fn()
            times.append((time.perf_counter_ns() - start) / number)
        finally:
            gc.enable()
    return min(times)


def interleaved_ns(
    fns: Sequence[Callable[[], object]], *, number: int, repeat: int = 15
) -> list[float]:
    """Best time per call in ns of each of ``fns``, their runs interleaved.

    A ratio of two figures is only as good as the conditions they share: on a shared
    machine the load changes from second to second, so the runs alternate (a, b, a, b …)
    and each keeps its best, rather than timing all of ``a`` and then all of ``b``.
    """
    best = [math.inf] * len(fns)
    for _ in range(repeat):
        for index, fn in enumerate(fns):
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter_ns()
                for _ in range(number):
                    fn()
                elapsed = (time.perf_counter_ns() - start) / number
            finally:
                gc.enable()
            best[index] = min(best[index], elapsed)
    return best


def calibrated_ns(fn: Callable[[], object], *, budget_s: float = 0.1, repeat: int = 5) -> float:
    """:func:`best_ns` with as many calls per run as fit in ``budget_s`` (at least one)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    return best_ns(fn, number=max(1, int(budget_s / max(first, 1e-9))), repeat=repeat)


def once_s(fn: Callable[[], object], *, repeat: int = 3) -> float:
    """Best wall time in seconds of ``repeat`` runs of ``fn`` (GC on, as in production)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def growth_exponent(sizes: Sequence[float], times: Sequence[float]) -> float:
    """Least-squares slope of log(time) against log(size): 1.0 is linear growth."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(max(t, 1e-12)) for t in times]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    den = sum((x - mx) ** 2 for x in xs)
    return num / den


GROWTH_MODELS: dict[str, Callable[[float], float]] = {
    "n": lambda n: n,
    "n log n": lambda n: n * math.log(n),
    "n²": lambda n: n * n,
}
"""The shapes a cost curve is fitted to, each as ``a + b·g(n)``."""


@attrs.frozen(kw_only=True)
class Growth:
    """How a cost curve grows: the best of :data:`GROWTH_MODELS` and the tail exponent."""

    model: str  # the best-fitting shape, e.g. "n"
    error: float  # its root-mean-square relative error
    errors: dict[str, float]  # the same for every shape
    tail_exponent: float  # log-log slope over the largest decade of sizes (→ 1 for linear)

    def tied(self) -> list[str]:
        """The shapes that fit as well as the best, within the noise (``self.model`` first)."""
        close = [n for n, e in self.errors.items() if e <= self.error * 1.25 + 0.01]
        return sorted(close, key=lambda name: name != self.model)

    def describe(self) -> str:
        """``"n (rms error 3 %; n log n 9 %, n² 60 %)"``, or ``"n ≈ n log n (…)"`` when the
        data cannot tell two shapes apart."""
        tied = self.tied()
        others = ", ".join(f"{n} {e:.0%}" for n, e in self.errors.items() if n != self.model)
        return f"{' ≈ '.join(tied)} (rms error {self.error:.0%}; {others})"


def fit_growth(sizes: Sequence[float], times: Sequence[float]) -> Growth:
    """Fit ``time = a + b·g(size)`` (a, b ≥ 0) for each shape of :data:`GROWTH_MODELS`.

    Least squares on relative error, so the small sizes count as much as the large ones.
    A constant ``a`` absorbs the fixed cost of a call, which would otherwise bend a plain
    log-log slope below 1 at small sizes.
    """
    errors = {name: _fit_error(g, sizes, times) for name, g in GROWTH_MODELS.items()}
    model = min(errors, key=lambda name: errors[name])
    top = [i for i, n in enumerate(sizes) if n * 10 >= sizes[-1]]
    if len(top) < 2:
        top = [len(sizes) - 2, len(sizes) - 1]
    tail = growth_exponent([sizes[i] for i in top], [times[i] for i in top])
    return Growth(model=model, error=errors[model], errors=errors, tail_exponent=tail)


def _fit_error(
    g: Callable[[float], float], sizes: Sequence[float], times: Sequence[float]
) -> float:
    # Weighted least squares of t ≈ a + b·g(n) with weights 1/t, then clamp to a, b ≥ 0.
    rows = [(1 / t, g(n) / t) for n, t in zip(sizes, times, strict=True)]
    s11 = sum(x * x for x, _ in rows)
    s12 = sum(x * y for x, y in rows)
    s22 = sum(y * y for _, y in rows)
    r1 = sum(x for x, _ in rows)  # the target of each row is t/t = 1
    r2 = sum(y for _, y in rows)
    det = s11 * s22 - s12 * s12
    a, b = (r1 * s22 - r2 * s12) / det, (s11 * r2 - s12 * r1) / det
    if a < 0 or b < 0:  # a negative part is not a cost: fit the other alone
        candidates = [(r1 / s11, 0.0), (0.0, r2 / s22)]
        a, b = min(candidates, key=lambda ab: _rms(ab, rows))
    return _rms((a, b), rows)


def _rms(ab: tuple[float, float], rows: Sequence[tuple[float, float]]) -> float:
    a, b = ab
    return math.sqrt(statistics.fmean((a * x + b * y - 1) ** 2 for x, y in rows))


def profile_top(fn: Callable[[], object], *, limit: int = 12) -> list[tuple[str, float, float]]:
    """cProfile of one call of ``fn``: ``(function, own share, cumulative share)`` of the
    busiest functions by own time (shares of the profiled total, profiler overhead
    included)."""
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (path, line, name), (_, _, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((_where(path, line, name), own / total, cumulative / total))
    rows.sort(key=lambda row: row[1], reverse=True)
    return rows[:limit]


def _where(path: str, line: int, name: str) -> str:
    if path == "~":
        return name  # a builtin, e.g. "<method 'add' of 'decimal.Context' objects>"
    for marker in ("/site-packages/", "/liqcore/", "/bench/", "/lib/python"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{line} {name}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def plot(
    path: str,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, tuple[list[float], list[float]]],
) -> None:
    """A log-log PNG of one or more curves, with a dotted linear guide through each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, (xs, ys) in series.items():
        (line,) = ax.loglog(xs, ys, marker="o", label=label)
        # The linear guide meets the curve at its largest size.
        ax.loglog(
            xs,
            [ys[-1] * x / xs[-1] for x in xs],
            linestyle=":",
            color=line.get_color(),
            alpha=0.6,
        )
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="dotted: linear through the last point", title_fontsize="small")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no version stamp: stable bytes per run
    plt.close(fig)
