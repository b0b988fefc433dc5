"""liqcore: the pure core of liquidation (filled in as modules land)."""
