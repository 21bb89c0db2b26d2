"""One local Ray cluster per test session, shared by every Ray test module (Serve and Data).

``ray.init(num_cpus=2)`` once, bound to 127.0.0.1 (never the machine's network address; conftest calls
``prepare_local_cluster`` before anything imports ray); a cluster another fixture (or module) already started
is used as it is and left running: only what this fixture started is shut down.
Not a test module itself; import the fixture into a test module or conftest.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zerank_integrations.ray_data import RerankBatches

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """The ``ray`` module, initialised on a 2-CPU local cluster whose workers import this checkout."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    if started:
        from zerank_integrations.serving.ray_proxy import PROXY_CALLBACK, PROXY_CALLBACK_ENV

        os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)  # Serve's proxies answer 5xx in the dialects
        path = os.pathsep.join(p for p in (str(REPO_ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
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


# -- what a process tree listens on and connects to, read from /proc (Linux) -----------------------------------


def process_tree(root: int) -> set[int]:
    """``root`` and every live descendant (Ray's GCS, raylet, agents and workers are children of the driver
    that started the cluster, or of its raylet)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in tree or not Path(f"/proc/{pid}").exists():
            continue
        tree.add(pid)
        todo.extend(children.get(pid, []))
    return tree


_TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


def _address(hex_address: str) -> str:
    """``0100007F:1F90`` or a 32-digit IPv6 word dump from /proc/net/tcp{,6}, as text (port dropped)."""
    import ipaddress

    host = hex_address.split(":")[0]
    words = [bytes.fromhex(host[i : i + 8])[::-1] for i in range(0, len(host), 8)]  # each 32-bit word is host order
    packed = b"".join(words)
    address = ipaddress.ip_address(packed)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def tcp_sockets(pids: set[int]) -> list[tuple[int, str, str, str]]:
    """``(pid, state, local address, remote address)`` of every TCP socket the processes hold."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                state = _TCP_STATES.get(fields[3], fields[3])
                found.append((inodes[fields[9]], state, _address(fields[1]), _address(fields[2])))
    return found


def _is_loopback(address: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(address).is_loopback


class SocketWatch:
    """Samples a process tree's TCP sockets every 0.2 s while it runs (``with SocketWatch(pid) as watch``):
    ``watch.outside`` lists every socket seen listening on or connected to a non-loopback address (a listener
    on 0.0.0.0 or :: counts: it is reachable from the network), ``watch.listeners`` the loopback listeners."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.outside: set[tuple[str, str, str, str]] = set()
        self.listeners: set[tuple[str, str]] = set()
        self.processes: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SocketWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def sample(self) -> None:
        pids = process_tree(self.root)
        names = {pid: _name(pid) for pid in pids}
        self.processes.update(names.values())
        for pid, state, local, remote in tcp_sockets(pids):
            if state == "LISTEN":
                if _is_loopback(local):
                    self.listeners.add((names.get(pid, "?"), local))
                else:
                    self.outside.add((names.get(pid, "?"), state, local, remote))
            elif not (_is_loopback(local) and _is_loopback(remote)):
                self.outside.add((names.get(pid, "?"), state, local, remote))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.2)


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").rsplit("/", 1)[-1]
    except OSError:
        return "?"


class RerankBatchesWithPid(RerankBatches):
    """``RerankBatches`` that also writes the worker's process id per row (imported by the workers from this
    folder, which the session cluster puts on their ``PYTHONPATH``): which worker took which row."""

    def __call__(self, batch: Any) -> dict[str, Any]:
        import numpy as np

        out = super().__call__(batch)
        out["worker_pid"] = np.full(len(batch["query"]), os.getpid())
        return out
