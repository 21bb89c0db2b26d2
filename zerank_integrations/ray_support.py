"""Ray is an optional extra (``pip install "zerank-integrations[ray]"``): one place says how to get it."""

from __future__ import annotations

import os
from types import ModuleType

RAY_INSTALL_HINT = 'pip install "zerank-integrations[ray]"'

#: The node address of every local cluster this library starts: Ray's default is the machine's network address,
#: which would put the GCS, raylet and object-manager ports on the network for a one-user, one-machine cluster.
LOOPBACK = "127.0.0.1"
#: Ray reads this when ``ray`` is imported: "0" makes it a single-node cluster on loopback. Without it, Ray 2.60
#: turns ``_node_ip_address="127.0.0.1"`` back into the network address (``resolve_ip_for_localhost``) and its
#: gRPC servers listen on every interface.
SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def prepare_local_cluster() -> None:
    """Call before ``import ray`` (here and in Ray's child processes) when this process will start a local
    cluster: every Ray socket then binds and connects on loopback. A value the user set is kept."""
    os.environ.setdefault(SINGLE_NODE_ENV, "0")


def local_cluster_options() -> dict[str, object]:
    """``ray.init`` keywords for a local cluster started by this library: bound to loopback, no dashboard."""
    return {"_node_ip_address": LOOPBACK, "include_dashboard": False}


class RayNotInstalledError(ImportError):
    """Ray (or Ray Serve / Ray Data) is missing; the message names the extra to install."""


def require_ray(feature: str, module: str = "ray") -> ModuleType:
    """Import ``module`` (``"ray"``, ``"ray.serve"``, ``"ray.data"``) or fail naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise RayNotInstalledError(f"{feature} needs Ray ({module} is not installed): {RAY_INSTALL_HINT}") from error
