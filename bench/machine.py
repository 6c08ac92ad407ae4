"""What ran the benchmark: platform, CPU model, library versions, and the host memory copy rate."""
from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata
from typing import Optional

import numpy as np


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "onnxruntime": _version("onnxruntime"),
        "torch": _version("torch"),
        "minmo_rt": _version("minmo-rt"),
    }


def last_level_cache_bytes() -> Optional[int]:
    """Size in bytes of the largest CPU cache the OS reports (Linux sysfs), or None."""
    import glob

    best = None
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(os.path.join(d, "size")) as f:
                text = f.read().strip().upper()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text[:-1] if text[-1:] in "KMG" else text
        if digits.isdigit():
            size = int(digits) * mult
            best = size if best is None else max(best, size)
    return best


def host_copy_rate(mbytes: int = 256, repeats: int = 3) -> dict:
    """Best-of-``repeats`` numpy copy of a ``mbytes`` MB float32 array into a pre-touched buffer.

    Returns bytes moved per second counting the read and the write (2 x size / time, as STREAM's
    "copy" does) and the one-way rate (size / time). numpy copies on one thread."""
    n = mbytes * (1 << 20) // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.zeros_like(src)  # touched: no page faults inside the timed copy
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    size = src.nbytes
    del src, dst
    return {"array_bytes": int(size), "seconds": best,
            "copy_gb_s": 2 * size / best / 1e9, "read_gb_s": size / best / 1e9}
