"""One local Ray cluster per test session, shared by every Ray test (starting Ray costs seconds on 2 cores).

Import the fixture into a test module (``from _ray_support import ray_cluster  # noqa: F401``). A Ray
already initialised (by another fixture or the caller) is used as it is and left running.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from types import ModuleType

import pytest

RAY_CPUS = 2


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[ModuleType]:
    """``ray``, initialised on a local cluster of ``RAY_CPUS`` CPUs, loopback only, no dashboard."""
    from zerank_integrations.ray_support import require_ray

    ray = require_ray("the Ray tests")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    data = require_ray("the Ray tests", "ray.data")
    data.DataContext.get_current().enable_progress_bars = False  # keep test logs readable
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=RAY_CPUS, include_dashboard=False, logging_level=logging.WARNING)
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
