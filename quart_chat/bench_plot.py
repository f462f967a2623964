"""``python -m quart_chat.bench_plot RESULTS.json OUT.png``: the plot of a saved ``quart-chat
bench --json`` run. The code is `quart_chat.bench.plot`; this name stays for that command."""

import sys

from .bench.plot import PlotUnavailable, main, plot, require_matplotlib

__all__ = ["PlotUnavailable", "main", "plot", "require_matplotlib"]

if __name__ == "__main__":
    sys.exit(main())
