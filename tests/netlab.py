"""Machines for tests: each a network namespace with its own hostname, all on one private bridge.

The bridge lives in a namespace of its own, so nothing is added to this machine's own network: the hosts
reach each other and nothing else. The test process reaches a host by running its client calls on a thread
that has entered the host's namespace (`Host.call`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from orchestrator.cluster.embedded import Process

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
SUBNET = "10.77.0"  # private addresses that exist only inside the namespaces made here


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    probe = f"mkprobe{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns add` fails here: {getattr(exc, 'stderr', None) or exc}"
    ip("netns", "del", probe)
    return None


def _enter(namespace: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{namespace}") as handle:
        if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")


@dataclass
class Host:
    name: str  # its hostname, and its namespace's name
    address: str
    processes: list[Process] = field(default_factory=list)
    _thread: ThreadPoolExecutor | None = None

    def start(self, label: str, argv: list[str], ready: str, env: dict[str, str], timeout: float = 60) -> Process:
        """Start `argv` on this host, under its hostname, and wait for its `ready` line."""
        process = Process(f"{label}@{self.name}", self.command(argv), ready, env)
        self.processes.append(process)
        process.wait_ready(timeout)
        return process

    def command(self, argv: list[str]) -> list[str]:
        """`argv` as run on this host: in its namespace, under its own hostname (each exec keeps the pid)."""
        rename = 'hostname "$0" && exec "$@"'
        return ["ip", "netns", "exec", self.name, "unshare", "--uts", "sh", "-c", rename, self.name, *argv]

    def call(self, work: Callable[[], T]) -> T:
        """Run `work` in this process as if on this host: its sockets are opened in the host's namespace."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, initializer=_enter, initargs=(self.name,))
        return self._thread.submit(work).result()

    def cut(self) -> None:
        """Pull this host's network cable: its processes live on, unreachable."""
        ip("-n", self.name, "link", "set", "eth0", "down")


class Lab:
    """Hosts on one bridge; `close` stops every process started on them and removes every namespace."""

    def __init__(self) -> None:
        self.prefix = f"mk{os.getpid() % 100_000}"
        self.switch = f"{self.prefix}sw"
        self.hosts: list[Host] = []
        ip("netns", "add", self.switch)
        try:
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            ip("-n", self.switch, "link", "set", "br0", "up")
        except subprocess.SubprocessError:
            self.close()
            raise

    def host(self, role: str) -> Host:
        host = Host(f"{self.prefix}{role}", f"{SUBNET}.{len(self.hosts) + 1}")
        self.hosts.append(host)
        port = f"v{host.name}"[:15]
        ip("netns", "add", host.name)
        ip("link", "add", "eth0", "netns", host.name, "type", "veth", "peer", "name", port, "netns", self.switch)
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.name, "link", "set", "eth0", "up")
        ip("-n", host.name, "link", "set", "lo", "up")
        return host

    def close(self) -> None:
        for host in self.hosts:
            for process in reversed(host.processes):
                process.kill()  # a host cut off cannot shut down cleanly; nothing here keeps state
            if host._thread is not None:
                host._thread.shutdown()
        for namespace in [host.name for host in self.hosts] + [self.switch]:
            with contextlib.suppress(subprocess.SubprocessError):
                ip("netns", "del", namespace)
