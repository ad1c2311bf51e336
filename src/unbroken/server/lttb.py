"""Largest-Triangle-Three-Buckets downsampling (Steinarsson, 2013), in numpy.

Pure: arrays in, indices out. Keeps the first and last point and, from each of ``threshold - 2``
equal-count buckets between them, the point forming the largest triangle with the point kept in
the previous bucket and the mean of the next bucket, so peaks and dips survive the reduction.
Points whose value is not finite are treated as 0 for the choice but keep their index.
"""

from __future__ import annotations

import numpy as np


def lttb_indices(x: np.ndarray, y: np.ndarray, threshold: int) -> np.ndarray:
    """Indices (ascending) of at most ``threshold`` points of (x, y) chosen by LTTB.

    ``x`` must be sorted ascending. With ``threshold >= len(x)`` or ``threshold < 3`` every
    index (respectively the first and last) is returned.
    """
    n = len(x)
    if threshold >= n or n <= 2:
        return np.arange(n)
    if threshold < 3:
        return np.array([0, n - 1])
    y = np.where(np.isfinite(y), y, 0.0)
    edges = np.linspace(1, n - 1, threshold - 1).astype(np.int64)  # threshold-2 buckets over [1, n-1)
    chosen = np.empty(threshold, dtype=np.int64)
    chosen[0], chosen[-1] = 0, n - 1
    a = 0
    for b in range(threshold - 2):
        lo, hi = edges[b], max(edges[b + 1], edges[b] + 1)
        nxt_lo, nxt_hi = (edges[b + 1], edges[b + 2]) if b + 2 < len(edges) else (n - 1, n)
        nxt_hi = max(nxt_hi, nxt_lo + 1)
        cx, cy = x[nxt_lo:nxt_hi].mean(), y[nxt_lo:nxt_hi].mean()
        ax, ay = x[a], y[a]
        area = np.abs((ax - cx) * (y[lo:hi] - ay) - (ax - x[lo:hi]) * (cy - ay))
        a = lo + int(np.argmax(area))
        chosen[b + 1] = a
    return chosen
