"""Figures of an evaluation: the presence scores of texts with a target against those without.

matplotlib is optional (extra `plot`); it is imported only when a figure is drawn, and
drawn through its object API (no pyplot state), to a PNG written atomically.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unilseg.errors import UnilsegError
from unilseg.eval.metrics import Record, best_min_score
from unilseg.io.writers import write_atomic

PLOT_EXTRA = "pip install 'unilseg[plot]' (or: pip install matplotlib)"


def check_plotting() -> None:
    """Raise one UnilsegError line if matplotlib is not installed (before a long evaluation, not after)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UnilsegError(f"the presence plot needs matplotlib: {PLOT_EXTRA}") from None


def presence_plot(
    records_or_scores: Sequence[Record] | tuple[Sequence[float], Sequence[float]], path: str | Path,
    threshold: float | None = None, bins: int = 40,
) -> float | None:
    """Write a PNG of two histograms of presence scores in [0, 1]: texts with a target and texts whose target
    is empty, with the min score as a vertical line -> that min score (None when not drawn).

    records_or_scores: evaluated Records, or (scores with a target, scores without) as two sequences.
    threshold: the line; default, for records, the min score maximising N-acc + T-acc (`best_min_score`, drawn
    only when both kinds are there), for scores none.
    """
    check_plotting()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(records_or_scores, tuple):
        target, empty = (np.asarray(s, float).ravel() for s in records_or_scores)
    else:
        records = list(records_or_scores)
        scores = np.array([r.presence for r in records], float)
        has_target = np.array([not r.target_empty for r in records], bool)
        target, empty = scores[has_target], scores[~has_target]
        if threshold is None and target.size and empty.size:
            found = np.array([not r.pred_empty for r in records], bool)
            threshold = best_min_score(scores, has_target, found)[0]
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    edges = np.linspace(0.0, 1.0, bins + 1)
    ax.hist(target, bins=edges, alpha=0.6, color="tab:blue", label=f"target ({target.size})")
    ax.hist(empty, bins=edges, alpha=0.6, color="tab:orange", label=f"no target ({empty.size})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"min score {threshold:.2f}")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("presence score")
    ax.set_yscale("log")  # the few texts on the wrong side are the point of the figure
    ax.set_ylabel("texts (log scale)")
    ax.set_title("Presence scores: texts with a target vs texts naming nothing")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_atomic(path, buf.getvalue())
    return threshold
