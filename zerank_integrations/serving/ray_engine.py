"""``serve --engine ray``: start or join a cluster, make sure the replicas can be placed, serve until a signal.

* The cluster comes from :func:`~zerank_integrations.ray_support.ray_cluster` (a local one on 127.0.0.1, or
  the ``--ray-address`` one joined with the user's token).
* Before Serve deploys anything, a placement group asks the cluster for every replica's CPUs and GPUs (so an
  autoscaler sees the demand) and waits at most ``--placement-timeout`` seconds; a local cluster that can
  never hold them is refused at once. Either way one line names what is missing and what the cluster has, and
  the process exits with :data:`EXIT_UNPLACEABLE`. Meanwhile ``--host:--port`` answers ``/health`` (200,
  starting) and ``/ready`` (503, with ``Retry-After``) itself, so probes never hang.
* The first SIGINT or SIGTERM, at any point, stops Serve and the cluster started here (or only this
  application on a joined cluster) and exits 0 — the same code for both signals; a second signal ends the
  process at once.

Exit codes: 0 stopped on request, 2 a usage, model, Ray or join error, 3 the replicas cannot be placed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from zerank_integrations.hosts import url_host
from zerank_integrations.ray_support import (
    RayJoinError,
    RayNotInstalledError,
    ray_cluster,
    reachable_head_requested,
    require_ray,
)
from zerank_integrations.serving.ray_proxy import PROXY_CALLBACK, PROXY_CALLBACK_ENV

logger = logging.getLogger("zerank_integrations.serving")

EXIT_STOPPED = 0
EXIT_FAILED = 2
EXIT_UNPLACEABLE = 3
DEFAULT_PLACEMENT_TIMEOUT_S = 20.0
_FEATURE = "serve --engine ray"
_POLL_S = 0.25
CLUSTER_STOP_S = 5.0  # of --shutdown-timeout, kept for ray.shutdown() after the application is gone


def run_ray(args: argparse.Namespace, api_key: str | None) -> int:
    """Run ``serve --engine ray`` to the end; returns the exit code (see the module docstring)."""
    from zerank_integrations.options import scorer_options

    stop = threading.Event()
    reachable = reachable_head_requested(getattr(args, "ray_reachable_head", None))
    if reachable and not args.ray_address:
        logger.warning(
            "the Ray head listens on this machine's network address (--ray-reachable-head): keep it on a trusted "
            "network; Ray runs any code a connected driver sends"
        )
    if not args.ray_address:  # the proxies of a cluster started here answer their own 5xx in the dialects
        os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
    probes = _StartingResponder(args.host, args.port)  # /health and /ready answer while Ray starts
    _stop_on_signals(stop)  # a signal during ray.init is acted on once it returns
    try:
        with ray_cluster(_FEATURE, address=args.ray_address, reachable=reachable, log_to_driver=args.verbose) as ray:
            if stop.is_set():
                return EXIT_STOPPED
            _stop_on_signals(stop)  # again: ray.init installs its own handlers
            serve = require_ray(_FEATURE, "ray.serve")
            if not args.verbose:
                logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's start-up chatter
            from zerank_integrations.serving.ray_serve import APP_NAME, APP_SETTINGS, application, replica_resources

            options = scorer_options(args)
            app = application(
                args.model,
                scorer_options=options,
                app_settings={key: getattr(args, key) for key in APP_SETTINGS},
                replicas=args.replicas,
                min_replicas=args.min_replicas,
                max_replicas=args.max_replicas,
                replica_cpus=args.replica_cpus,
                api_key=api_key,
                ledger_llm=args.ledger_llm,
                log_format=args.log_format,
                log_level=args.log_level,
                otlp_endpoint=args.otlp_endpoint,
            )
            per_replica = replica_resources(options, args.replica_cpus)
            count = _replicas_to_place(args)
            started_here = not args.ray_address
            problem = placement_problem(_node_resources(ray), per_replica, count)
            if problem and started_here:  # a local cluster never grows: no point in waiting
                return _fail(problem, EXIT_UNPLACEABLE)
            if not _wait_for_placement(ray, per_replica, count, args.placement_timeout, stop):
                if stop.is_set():
                    return EXIT_STOPPED
                late = placement_problem(_node_resources(ray), per_replica, count, waited=args.placement_timeout)
                return _fail(str(late), EXIT_UNPLACEABLE)
            probes.close()  # Serve's proxy takes the port from here
            serve.start(http_options={"host": args.host, "port": args.port})
            serve.run_many(
                [serve.RunTarget(target=app, name=APP_NAME, route_prefix="/")],
                wait_for_ingress_deployment_creation=False,
                wait_for_applications_running=False,
            )
            print(
                f"serving {args.model} on Ray Serve at http://{url_host(args.host)}:{args.port} "
                f"({_replica_summary(args)}, auth {'on' if api_key else 'off'}; /ready once loaded)",
                file=sys.stderr,
                flush=True,
            )
            failure = _watch(serve, APP_NAME, stop)
            logger.info("stopping: replicas finish their requests (at most %s s)", args.shutdown_timeout)
            _take_down(serve, APP_NAME, args.shutdown_timeout)
            return _fail(failure, EXIT_FAILED) if failure else EXIT_STOPPED
    except (RayNotInstalledError, RayJoinError) as error:
        return _fail(str(error), EXIT_FAILED)
    except (ValueError, RuntimeError, ConnectionError) as error:
        return _fail(_one_line(error), EXIT_FAILED)
    finally:
        probes.close()


def _fail(message: str, code: int) -> int:
    print(f"zerank-integrations serve: {message}", file=sys.stderr, flush=True)
    return code


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else "") or type(error).__name__


def _stop_on_signals(stop: threading.Event) -> None:
    def on_signal(sig: int, _frame: Any) -> None:
        signal.signal(sig, signal.SIG_DFL)  # a second signal ends the process at once
        logger.info("%s: stopping", signal.Signals(sig).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)


def _replica_summary(args: argparse.Namespace) -> str:
    if args.min_replicas is not None or args.max_replicas is not None:
        low = args.min_replicas if args.min_replicas is not None else 1
        return f"{low} to {args.max_replicas if args.max_replicas is not None else max(low, 1)} replicas, autoscaled"
    return f"{args.replicas or 1} replica{'s' if (args.replicas or 1) != 1 else ''}"


def _replicas_to_place(args: argparse.Namespace) -> int:
    """The replicas that must fit before serving: the fixed count, or the autoscaling lower bound (at least 1)."""
    if args.replicas is not None:
        return args.replicas
    if args.min_replicas is not None or args.max_replicas is not None:
        return max(args.min_replicas or 0, 1)
    return 1


# -- placement --------------------------------------------------------------------------------------------------


def _node_resources(ray: Any) -> list[dict[str, float]]:
    return [dict(node.get("Resources") or {}) for node in ray.nodes() if node.get("Alive")]


def placement_problem(
    nodes: list[Mapping[str, float]], per_replica: Mapping[str, float], count: int, waited: float | None = None
) -> str | None:
    """``None`` when ``count`` replicas of ``per_replica`` fit on ``nodes`` (each replica on one node), else one
    line naming what is missing and what the cluster has."""
    needs = {name: amount for name, amount in per_replica.items() if amount > 0}
    fits = 0
    for node in nodes:
        if not needs:
            fits = count
            break
        fits += min(math.floor(node.get(name, 0.0) / amount + 1e-9) for name, amount in needs.items())
    if fits >= count and waited is None:
        return None
    totals = {name: sum(node.get(name, 0.0) for node in nodes) for name in ("GPU", "CPU")}
    missing = {name: count * amount - totals.get(name, 0.0) for name, amount in needs.items()}
    short = ", ".join(f"{_amount(v)} {k}" for k, v in sorted(missing.items()) if v > 0) or "room on one node"
    each = ", ".join(f"{_amount(v)} {k}" for k, v in sorted(needs.items()))
    has = ", ".join(f"{_amount(v)} {k}" for k, v in totals.items())
    after = f" within {waited:g} s (--placement-timeout)" if waited is not None else ""
    return (
        f"cannot place {count} replica{'s' if count != 1 else ''} ({each} each){after}: missing {short}; "
        f"the cluster has {has} on {len(nodes)} node{'s' if len(nodes) != 1 else ''}"
    )


def _amount(value: float) -> str:
    return f"{value:g}"


def _wait_for_placement(
    ray: Any, per_replica: Mapping[str, float], count: int, timeout: float, stop: threading.Event
) -> bool:
    """Reserve ``count`` bundles for at most ``timeout`` seconds (an autoscaler sees the demand), then free them
    for Serve. ``True`` when they were placed."""
    bundle = {name: amount for name, amount in per_replica.items() if amount > 0}
    if not bundle or count < 1:
        return True
    from ray.util import placement_group, remove_placement_group

    group = placement_group([dict(bundle) for _ in range(count)], strategy="SPREAD")
    deadline = time.monotonic() + timeout
    try:
        while not stop.is_set():
            ready, _ = ray.wait([group.ready()], timeout=_POLL_S)
            if ready:
                return True
            if time.monotonic() >= deadline:
                return False
        return False
    finally:
        remove_placement_group(group)


# -- serving ----------------------------------------------------------------------------------------------------


def _watch(serve: Any, app_name: str, stop: threading.Event) -> str | None:
    """Wait for a signal; a deployment that fails for good (a replica that cannot start) ends the wait with its
    one-line reason."""
    while not stop.wait(1.0):
        try:
            status = serve.status().applications.get(app_name)
        except Exception as error:  # the controller restarting: ask again
            logger.debug("serve.status() failed: %s", error)
            continue
        if status is not None and str(status.status).endswith("DEPLOY_FAILED"):
            return f"the application failed to deploy: {_one_line(RuntimeError(status.message))}"
    return None


def _take_down(serve: Any, app_name: str, timeout: float) -> None:
    """Delete the application within ``timeout`` seconds (replicas get their graceful shutdown); the local
    cluster, Serve included, stops when ``ray_cluster`` exits; a shared cluster loses only this application."""
    done = threading.Event()

    def down() -> None:
        try:
            # the application only, on either cluster: its replicas drain gracefully; a cluster started here then
            # goes with Serve's controller and proxies (serve.shutdown() would kill the controller mid-call, and
            # Ray prints that error in the terminal)
            serve.delete(app_name)
        except Exception as error:
            logger.warning("Serve did not shut down cleanly: %s", _one_line(error))
        finally:
            done.set()

    threading.Thread(target=down, name="zerank-serve-shutdown", daemon=True).start()
    budget = max(timeout - CLUSTER_STOP_S, 1.0)  # what is left is for stopping the cluster itself
    if not done.wait(budget):
        logger.warning("the application did not stop within %g s; stopping the cluster anyway", budget)


# -- while the replicas are being placed: probes answer at once ----------------------------------------------------


class _StartingResponder:
    """A tiny server on ``--host:--port`` until Serve's proxy takes the port (in a thread): ``/health`` 200
    (starting), everything else 503 with ``Retry-After``, so probes and clients never wait on a pending cluster."""

    def __init__(self, host: str, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(_starting_app, host=host, port=port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)  # off the main thread, uvicorn leaves the signal handlers alone
        self.thread = threading.Thread(target=self._run, name="zerank-starting", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def close(self) -> None:
        """Stop answering and free the port (idempotent)."""
        self.server.should_exit = True
        self.thread.join(timeout=10)


async def _starting_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope.get("path") == "/health":
        status, body = 200, {"status": "starting", "engine": "ray", "ready": "placing replicas"}
    else:
        status, body = 503, {"message": "the Ray cluster is placing the replicas; retry shortly"}
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if status == 503:
        headers.append((b"retry-after", b"5"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
