"""The summary numbers every report shares: quantiles and histograms of scores and ratios."""

from __future__ import annotations

from typing import Sequence

import numpy as np

QUANTILES = {"min": 0.0, "p10": 0.1, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p90": 0.9, "max": 1.0}


def quantiles(values: Sequence[float]) -> dict:
    """``QUANTILES`` of ``values``, four decimals; {} for no values."""
    if not len(values):
        return {}
    return {name: round(float(np.quantile(values, q)), 4) for name, q in QUANTILES.items()}


def histogram(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """Counts per bin of ``edges``; values beyond the first or last edge count in that bin."""
    if not len(values):
        return [0] * (len(edges) - 1)
    clipped = np.clip(np.asarray(values, dtype=float), edges[0], edges[-1])
    return [int(count) for count in np.histogram(clipped, bins=edges)[0]]
