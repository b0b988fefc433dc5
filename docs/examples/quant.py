# %% [markdown]
# # A quant's notebook: replay, what-if, sweep, plots and one account's story
#
# This page is a notebook (a jupytext "percent" script, `docs/examples/quant.py`). The
# docs build executes it and shows its real output, and the test suite runs it in a
# Jupyter kernel, so it cannot go stale. It needs the `notebook` extra (pandas,
# matplotlib).
#
# We simulate a market shock, load the recording, prove the engine deterministic on it,
# ask "what if the max bonus were 300 bps?", sweep the bonus ramp, plot, and explain one
# account.

# %%
import tempfile
from pathlib import Path

from liqcore import Config
from liqshell import analysis
from liqshell.analysis import plots
from liqshell.analysis.report import money, render_money
from liqshell.sim import SimParams

plots.use_agg()  # no display needed
folder = Path(tempfile.mkdtemp(prefix="liqshell-quant-"))

# %% [markdown]
# ## Simulate and load
#
# `analysis.simulated` runs the simulator (8 accounts, 3 minutes, a −15 % shock) with the
# watcher and loads its recording. The recording carries its own config in its header.

# %%
recording = analysis.simulated(
    SimParams(accounts=8, minutes=3, seed=3), config=Config(), path=folder / "run.sqlite"
)
print(f"{len(recording)} records of {len(recording.wallets)} wallets")
print("recorded max bonus:", recording.config.partial_bonus_max_bps, "bps")

# %% [markdown]
# ## Replay: is the engine deterministic on this recording?
#
# Every decision is re-run through `liqcore.step` with the recorded config and compared
# with what was recorded.

# %%
trace = analysis.replay(recording)
print(f"{len(trace.decisions)} decisions replayed, {len(trace.mismatches)} mismatches")
assert analysis.diff(trace, recording) == []

# %% [markdown]
# ## What if the max bonus were 300 bps?
#
# One call. The recording's market does not react to the different orders (see
# [the limit](../analysis.md)); the comparison says what the watcher would have asked for.

# %%
comparison = analysis.what_if(recording, partial_bonus_max_bps=300)
print(comparison.render())

# %% [markdown]
# ## Sweep the bonus ramp

# %%
results = analysis.sweep(
    recording,
    {"partial_bonus_max_bps": [300, 600, 1000], "partial_bonus_ramp_ms": [120_000, 300_000]},
    progress=False,
)
for point, summary in results:
    max_bps, ramp_s = point["partial_bonus_max_bps"], point["partial_bonus_ramp_ms"] // 1000
    total = summary.total
    print(
        f"max {max_bps:>4} bps, ramp {ramp_s:>3} s: {total.orders} orders, "
        f"bonus offered {total.bonus_offered:,.2f} USD"
    )

# %% [markdown]
# ## A frame per decision, and the money

# %%
frame = recording.to_frame()
touched = sorted(frame[frame["phase"] != "healthy"]["wallet"].unique())
for wallet in touched:
    rows = frame[frame["wallet"] == wallet]
    lowest = rows["equity"].min()
    print(f"{wallet}: final phase {rows['phase'].iloc[-1]}, lowest equity {lowest:,.2f} USD")
print()
print(render_money(money(recording)))

# %% [markdown]
# ## Plots
#
# Each plot function returns its figure and writes it to `path=`.

# %%
plots.plot_account(recording, "0xsim0001", path=folder / "account.png")
plots.plot_bonus(recording, "0xsim0001", path=folder / "bonus.png")
plots.plot_timeline(recording, path=folder / "timeline.png")
plots.plot_comparison(comparison, path=folder / "comparison.png")
print(sorted(p.name for p in folder.glob("*.png")))

# %% [markdown]
# ## One account's story
#
# `liqshell explain RECORDING --wallet 0xsim0001` prints the same.

# %%
print(analysis.render_story(recording, "0xsim0001"))
