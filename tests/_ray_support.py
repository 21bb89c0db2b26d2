"""One local Ray cluster per test session, shared by every Ray test module (Serve and Data).

``ray.init(num_cpus=2)`` once, bound to 127.0.0.1 (never the machine's network address; conftest calls
``prepare_local_cluster`` before anything imports ray); a cluster another fixture (or module) already started
is used as it is and left running: only what this fixture started is shut down.
Not a test module itself; import the fixture into a test module or conftest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """The ``ray`` module, initialised on a 2-CPU local cluster whose workers import this checkout."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    if started:
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        from zerank_integrations.ray_support import local_cluster_options

        ray.init(
            num_cpus=2,
            **local_cluster_options(),
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
        )
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
