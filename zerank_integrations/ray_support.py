"""Ray is an optional extra (``pip install "zerank-integrations[ray]"``): the one place that imports it, starts
or joins a cluster, and says how to get it.

Every Ray start-up in the library and the CLI (``serve --engine ray``, ``eval --engine ray``,
:func:`~zerank_integrations.ray_data.ray_session`) goes through :func:`ray_cluster`:

* no address (argument or ``$RAY_ADDRESS``): a local cluster bound to 127.0.0.1 (GCS, raylet, object store,
  workers), no dashboard, shut down afterwards. A cluster other machines can join (Ray's default node address,
  the machine's network address) only when asked: ``reachable=True`` / ``--ray-reachable-head`` /
  ``ZERANK_RAY_REACHABLE_HEAD=1``. Ray has no authentication for the object store and runs whatever code a
  connected driver sends: a reachable head belongs on a trusted network only.
* an address: that cluster is joined as Ray joins it (its own node addresses). A head with token
  authentication (Ray 2.60's default) gets the user's token when one is available (``$RAY_AUTH_TOKEN``,
  ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``); when the head refuses, one line says what to set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

RAY_INSTALL_HINT = 'pip install "zerank-integrations[ray]"'

#: The node address of every local cluster this library starts: Ray's default is the machine's network address,
#: which would put the GCS, raylet and object-manager ports on the network for a one-user, one-machine cluster.
LOOPBACK = "127.0.0.1"
#: Ray reads this when ``ray`` is imported: "0" makes it a single-node cluster on loopback. Without it, Ray 2.60
#: turns ``_node_ip_address="127.0.0.1"`` back into the network address (``resolve_ip_for_localhost``) and its
#: gRPC servers listen on every interface.
SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: "1" makes a cluster this library starts reachable from the network (Ray's default node address).
REACHABLE_HEAD_ENV = "ZERANK_RAY_REACHABLE_HEAD"
#: Ray's token-authentication settings (``ray/_private/authentication``): the mode, and where the token is read.
AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")
AUTH_HINT = (
    f"put the head's token in ${AUTH_TOKEN_ENV} (or the file ${AUTH_TOKEN_PATH_ENV} names, or {DEFAULT_TOKEN_PATH}; "
    f"`ray get-auth-token` on the head prints it) and set {AUTH_MODE_ENV}=token"
)

logger = logging.getLogger("zerank_integrations.ray")


class RayNotInstalledError(ImportError):
    """Ray (or Ray Serve / Ray Data) is missing; the message names the extra to install."""


class RayJoinError(RuntimeError):
    """The cluster could not be joined (refused token, unreachable address); the message is one line."""


def require_ray(feature: str, module: str = "ray") -> ModuleType:
    """Import ``module`` (``"ray"``, ``"ray.serve"``, ``"ray.data"``) or fail naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise RayNotInstalledError(f"{feature} needs Ray ({module} is not installed): {RAY_INSTALL_HINT}") from error


def reachable_head_requested(flag: bool | None = None) -> bool:
    """``flag`` when given, else ``$ZERANK_RAY_REACHABLE_HEAD`` ("1", "true", "yes")."""
    if flag is not None:
        return flag
    return os.environ.get(REACHABLE_HEAD_ENV, "").strip().lower() in ("1", "true", "yes")


def prepare_local_cluster(reachable: bool = False) -> None:
    """Call before ``import ray`` (here and in Ray's child processes) when this process will start a local
    cluster: every Ray socket then binds and connects on loopback. A value the user set is kept; a reachable
    head leaves Ray's default."""
    if reachable or SINGLE_NODE_ENV in os.environ:
        return
    os.environ[SINGLE_NODE_ENV] = "0"  # for this process's import of ray and for every process Ray starts
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):  # ray was imported already
        constants.ENABLE_RAY_CLUSTER = False


def local_cluster_options(reachable: bool = False) -> dict[str, object]:
    """``ray.init`` keywords for a local cluster started by this library: a new one (``address="local"``: never a
    cluster some ``ray start`` left on this machine), bound to loopback (unless ``reachable``), no dashboard."""
    options: dict[str, object] = {"address": "local", "include_dashboard": False}
    if not reachable:
        options["_node_ip_address"] = LOOPBACK
    return options


def token_available() -> bool:
    """Whether Ray would find an authentication token: ``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH``'s file or
    ``~/.ray/auth_token`` (the order Ray reads them in)."""
    return _token() is not None


def use_token_when_available() -> bool:
    """Before joining a cluster at an explicit address: Ray sends the token only with ``RAY_AUTH_MODE=token``
    (it turns that on by itself for ``address="auto"`` alone). A mode the user set is kept; otherwise token mode
    is turned on when a token is available. Returns whether token mode is on."""
    mode = os.environ.get(AUTH_MODE_ENV)
    if mode is not None:
        return mode.strip().lower() == "token"
    if not token_available():
        return False
    os.environ[AUTH_MODE_ENV] = "token"  # read by ray when it is imported / initialised, and by its children
    return True


def _token() -> str | None:
    """The token Ray would send (same sources, same order), or ``None``."""
    value = os.environ.get(AUTH_TOKEN_ENV, "").strip()
    if value:
        return value
    path = Path(os.environ.get(AUTH_TOKEN_PATH_ENV) or DEFAULT_TOKEN_PATH.expanduser())
    try:
        return path.read_text().strip() or None if path.is_file() else None
    except OSError:
        return None


def probe_cluster(address: str, timeout_s: float = 5.0) -> None:
    """Ask the GCS at ``address`` (``host:port``) for its cluster id once, as Ray's driver would (with the token
    in token mode), so that a refused token or an unreachable head is one :class:`RayJoinError` line instead of
    Ray's minute of retries. ``auto``, ``ray://`` (Ray Client) and TLS clusters are left to Ray."""
    if address == "auto" or "://" in address or os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # another Ray layout: ray.init reports what it finds
        return
    token = _token() if os.environ.get(AUTH_MODE_ENV, "").strip().lower() == "token" else None
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                refused = "refused the token it was sent" if token else "requires a token"
                raise RayJoinError(f"the Ray cluster at {address} {refused}: {AUTH_HINT}") from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise RayJoinError(
                    f"cannot reach the Ray cluster at {address} within {timeout_s:g} s ({code.name.lower()})"
                ) from None


def _is_loopback_address(address: str) -> bool:
    """Whether a cluster address (``host:port``, ``ray://host:port``) names this machine's loopback."""
    from zerank_integrations.hosts import is_loopback

    return is_loopback(address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]"))


@contextlib.contextmanager
def ray_cluster(
    feature: str,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    reachable: bool | None = None,
    log_to_driver: bool = False,
    runtime_env: dict[str, Any] | None = None,
) -> Iterator[ModuleType]:
    """``ray``, initialised for the duration (the one start-up path): a Ray already initialised in this process
    is used as it is; else ``address`` (or ``$RAY_ADDRESS``) is joined, or a local cluster (``num_cpus`` CPUs,
    default all) is started on loopback and shut down afterwards.

    Ray's own log lines at INFO and below stay out of the terminal unless ``log_to_driver`` is asked for.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        prepare_local_cluster(reachable_head_requested(reachable))  # before ray is imported
        # Ray turns token authentication on for a new cluster and warns that it did: the library says nothing
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    else:
        if _is_loopback_address(address):  # Ray would turn 127.0.0.1 into the network address otherwise
            prepare_local_cluster()
        use_token_when_available()
    ray = require_ray(feature)
    if ray.is_initialized():
        yield ray
        return
    reach = reachable_head_requested(reachable)
    options: dict[str, Any] = {"address": address} if address else local_cluster_options(reach)
    if address is None and num_cpus is not None:
        options["num_cpus"] = num_cpus
    if runtime_env:
        options["runtime_env"] = runtime_env
    if address is not None:
        probe_cluster(address)
    ray.init(logging_level=logging.WARNING, log_to_driver=log_to_driver, **options)
    try:
        yield ray
    finally:
        ray.shutdown()


def keep_replica_grpc_on_loopback() -> bool:
    """In a Ray Serve replica of a loopback cluster, bind Serve's inter-deployment gRPC server to 127.0.0.1.

    Ray Serve 2.60 binds it to ``[::]:0`` whatever the node address (``replica.py``: ``_on_initialized``) and
    has no setting for it, so a cluster kept on loopback would still listen on every interface there. Serve
    builds the user's class before it starts that server, so the class's constructor calls this: on a node whose
    address is 127.0.0.1 (where peers can only connect over loopback anyway) the address becomes
    ``127.0.0.1:0``; on any other node, or a Serve without that hook, nothing changes. Returns whether it applied.
    """
    import ray

    if ray.util.get_node_ip_address() != LOOPBACK:
        return False
    try:
        from ray.serve._private import replica as serve_replica
    except ImportError:
        return False
    bind = getattr(serve_replica, "add_port_to_grpc_server", None)
    if bind is None:
        logger.debug("this Ray Serve has no add_port_to_grpc_server: its replica gRPC address is left as it is")
        return False
    if getattr(bind, "keeps_loopback", False):
        return True

    def on_loopback(server: Any, address: str) -> int:
        if address.startswith("[::]:"):
            address = f"{LOOPBACK}:{address.removeprefix('[::]:')}"
        return bind(server, address)

    on_loopback.keeps_loopback = True  # type: ignore[attr-defined]
    serve_replica.add_port_to_grpc_server = on_loopback
    return True
