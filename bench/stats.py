"""Small numeric and formatting helpers shared by the bench modules."""
from __future__ import annotations

import time
from typing import Callable, Iterable, Optional, Sequence

import numpy as np


def summarize(ms: Sequence[float]) -> dict:
    """{count, total_ms, p50_ms, p99_ms, mean_ms} of a list of per-call times (None when empty)."""
    a = np.asarray(list(ms), dtype=np.float64)
    if a.size == 0:
        return {"count": 0, "total_ms": 0.0, "p50_ms": None, "p99_ms": None, "mean_ms": None}
    return {
        "count": int(a.size),
        "total_ms": float(a.sum()),
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
    }


def time_calls(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    """Wall time in ms of ``runs`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(max(0, warmup)):
        fn()
    out = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def p50(ms: Iterable[float]) -> Optional[float]:
    a = list(ms)
    return float(np.percentile(np.asarray(a, dtype=np.float64), 50)) if a else None


def fmt(x: Optional[float], nd: int = 2) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:.0f}"
    return f"{x:.{nd}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    cols = [list(header)] + [list(r) for r in rows]
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(header))]

    def line(r):
        cells = [str(r[0]).ljust(widths[0])] + [str(c).rjust(w) for c, w in zip(r[1:], widths[1:])]
        return " | ".join(cells)

    sep = "-+-".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(r) for r in rows])
