"""minmo_rt.bench: ``minmo-bench BUNDLE`` measures a bundle and writes JSON.

Benchmarks measure; they are not tests. See ``README.md`` next to this file for what each
number means.

    from minmo_rt.bench import run_bench
    report = run_bench("bundle/", runs=5, warmup=1)
"""
from .cli import main, run_bench

__all__ = ["main", "run_bench"]
