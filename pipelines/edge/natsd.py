"""A child ``nats-server`` with JetStream in its own domain: the hub, or a site's leaf node.

``hub_config`` and ``leaf_config`` are pure (settings in, config text out); ``NatsServer``
starts the process with its store under a data directory, waits until it answers, and stops it
by its own process id. Loopback only: every listener binds 127.0.0.1.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pipelines.errors import FieldTraceError

NATS_SERVER: Final = os.environ.get("FIELDTRACE_NATS_SERVER", "/usr/sbin/nats-server")
_DOMAIN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LOOPBACK: Final = "127.0.0.1"
_PR_SET_PDEATHSIG: Final = 1


class EdgeError(FieldTraceError):
    """Base of the edge package's errors."""


class EdgeConfigError(EdgeError, ValueError):
    """An edge or hub setting is malformed (names the setting and the value)."""


class NatsServerError(EdgeError, RuntimeError):
    """A child nats-server failed to start or to answer."""


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def check_domain(domain: str) -> str:
    if not _DOMAIN.match(domain):
        raise EdgeConfigError(f"JetStream domain {domain!r}: expected 1-64 of [A-Za-z0-9_-]")
    return domain


@dataclass(frozen=True)
class ServerSpec:
    """What one nats-server needs: ports, its JetStream domain and store directory."""

    name: str
    domain: str
    store_dir: Path
    client_port: int
    monitor_port: int
    leaf_listen_port: int | None = None  # the hub accepts leaf nodes here
    hub_leaf_url: str | None = None  # a leaf node connects to the hub here
    mqtt_port: int | None = None

    @property
    def client_url(self) -> str:
        return f"nats://{LOOPBACK}:{self.client_port}"


def server_config(spec: ServerSpec) -> str:
    """The nats-server configuration text for ``spec`` (quoted strings, loopback listeners)."""
    check_domain(spec.domain)
    lines = [
        f'server_name: "{spec.name}"',
        f'listen: "{LOOPBACK}:{spec.client_port}"',
        f'http: "{LOOPBACK}:{spec.monitor_port}"',
        "max_payload: 4MB",
        "jetstream {",
        f'  store_dir: "{spec.store_dir}"',
        f'  domain: "{spec.domain}"',
        "}",
    ]
    if spec.leaf_listen_port is not None:
        lines += ["leafnodes {", f'  listen: "{LOOPBACK}:{spec.leaf_listen_port}"', "}"]
    if spec.hub_leaf_url is not None:
        lines += [
            "leafnodes {",
            "  reconnect: 1",
            f'  remotes: [ {{ url: "{spec.hub_leaf_url}" }} ]',
            "}",
        ]
    if spec.mqtt_port is not None:
        lines += ["mqtt {", f'  listen: "{LOOPBACK}:{spec.mqtt_port}"', "}"]
    return "\n".join(lines) + "\n"


def _die_with_parent() -> None:
    """In the child: SIGKILL when the parent dies (a kill -9 of the edge takes its leaf)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NatsServerError(
                f"nats-server exited with {proc.returncode}: {log.read_text()[-800:]}"
            )
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise NatsServerError(f"nats-server did not listen on {LOOPBACK}:{port} in {timeout_s} s")


class NatsServer:
    """One child nats-server process; ``start``/``stop``/``kill`` act on its own pid only."""

    def __init__(self, spec: ServerSpec, run_dir: Path, *, die_with_parent: bool = False) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.run_dir / f"{self.spec.name}.conf"

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.spec.name}.log"

    def start(self, *, timeout_s: float = 10.0) -> NatsServer:
        if shutil.which(NATS_SERVER) is None:
            raise NatsServerError(
                f"{NATS_SERVER} not found; install Debian's nats-server (make services)"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.spec.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(server_config(self.spec))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        log.close()
        _wait_port(self.spec.client_port, timeout_s, self.proc, self.log_path)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after ``timeout_s``)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        """kill -9 of this server's own process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
