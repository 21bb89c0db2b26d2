"""One local Ray cluster per test session, shared by every Ray test (starting Ray costs seconds on 2 cores).

Import the fixture into a test module (``from _ray_support import ray_cluster  # noqa: F401``). A Ray
already initialised (by another fixture or the caller) is used as it is and left running.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import ModuleType

import pytest

RAY_CPUS = 2


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[ModuleType]:
    """``ray``, initialised on a local cluster of ``RAY_CPUS`` CPUs (loopback only, no dashboard)."""
    from zerank_integrations.ray_data import ray_session

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    with ray_session(RAY_CPUS, feature="the Ray tests") as ray:
        yield ray
