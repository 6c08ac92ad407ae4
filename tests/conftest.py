"""Shared pytest setup."""
import os, sys; sys.path.insert(0, os.path.dirname(__file__))

import pytest as _pytest


def pytest_collection_modifyitems(config, items):
    """Session-level tests need the C++ Runtime; skip them (with the reason) in a build without it."""
    import minmo_rt._core as core

    if hasattr(core, "Runtime"):
        return
    skip = _pytest.mark.skip(reason="this build of minmo_rt._core has no Runtime (streaming glue not built)")
    for item in items:
        if item.fspath.basename in ("test_session.py", "test_runtime_bundle_errors.py", "test_bench.py"):
            item.add_marker(skip)
