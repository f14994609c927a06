"""Running the live parts inside a process: a local NATS when none is configured, and the
receivers and writer on one asyncio loop in a background thread (``fieldtrace serve``).

On the embedded store one process holds the store, so ``serve`` runs the dashboard, the writer
(and the processors) together; the receivers only publish to the bus and may run anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipelines.errors import BusError
from pipelines.settings import Settings
from pipelines.store.gateway import Store

log = logging.getLogger("fieldtrace.live")


def _bus_address(settings: Settings) -> tuple[str, int]:
    url = urlparse(settings.bus_url)
    return url.hostname or "127.0.0.1", url.port or 4222


def bus_reachable(settings: Settings, timeout_s: float = 0.5) -> bool:
    host, port = _bus_address(settings)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def start_local_nats(settings: Settings, *, timeout_s: float = 10.0) -> subprocess.Popen[bytes]:
    """Start ``nats-server -js`` on ``bus_url``'s loopback port, its store under the data dir.

    The caller owns the child (``proc.terminate()`` ends it)."""
    host, port = _bus_address(settings)
    if host not in ("127.0.0.1", "localhost"):
        raise BusError(f"bus_url={settings.bus_url} is unreachable and not local to start")
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if binary is None:
        raise BusError("nats-server is not installed (run `make services`)")
    store_dir = settings.data_dir / "nats"
    store_dir.mkdir(parents=True, exist_ok=True)
    log_file = (store_dir / "nats-server.log").open("ab")
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if bus_reachable(settings, 0.2):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.terminate()
    raise BusError(f"local nats-server did not start; see {store_dir / 'nats-server.log'}")


class LiveThread:
    """An asyncio loop in a daemon thread running coroutines until ``stop()``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="fieldtrace-live", daemon=True)
        self._tasks: list[Callable[[asyncio.Event], Coroutine[Any, Any, Any]]] = []
        self._started = threading.Event()
        self.errors: list[BaseException] = []

    def add(self, task: Callable[[asyncio.Event], Coroutine[Any, Any, Any]]) -> None:
        self._tasks.append(task)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self.stop_event = asyncio.Event()
        self._started.set()
        await asyncio.gather(*(self._guard(t, self.stop_event) for t in self._tasks))

    async def _guard(
        self, task: Callable[[asyncio.Event], Coroutine[Any, Any, Any]], stop: asyncio.Event
    ) -> None:
        try:
            await task(stop)
        except Exception as exc:  # recorded for the host process, which decides
            log.error("live task ended: %r", exc)
            self.errors.append(exc)

    def start(self) -> None:
        self.thread.start()
        self._started.wait(10)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout_s)


def start_live(
    settings: Settings,
    store: Store | None,
    *,
    receivers: bool = True,
    writer: bool = True,
    mqtt_enabled: bool = True,
    processors: bool = False,
) -> LiveThread:
    """Receivers and/or the writer (with the processors) in a background thread (returns once
    receivers listen)."""
    from pipelines.live.receivers import run_receivers
    from pipelines.live.writer import run_writer

    live = LiveThread()
    ready = threading.Event()
    if receivers:
        live.add(
            lambda stop: run_receivers(
                settings, stop=stop, mqtt_enabled=mqtt_enabled, ready=ready.set
            )
        )
    else:
        ready.set()
    if writer:
        if store is None:
            raise BusError("the live writer needs the store")
        live.add(lambda stop: run_writer(settings, store, stop=stop))
        if processors:  # they read the store the writer commits (pipelines/live/processors)
            from pipelines.live.processors.loop import run_processors

            live.add(lambda stop: run_processors(settings, store, stop=stop))
    live.start()
    deadline = time.monotonic() + 15
    while not ready.wait(0.05):
        if live.errors or not live.thread.is_alive() or time.monotonic() > deadline:
            live.stop()
            raise BusError(f"live receivers did not start: {live.errors}")
    return live


@contextmanager
def live_services(
    settings: Settings, *, receivers: bool = True, writer: bool = True, mqtt_enabled: bool = True
) -> Iterator[LiveThread]:
    """The configured NATS (else a local ``nats-server -js`` child, its store under the data
    dir), then the receivers, the writer and the processors in a background thread; all
    stopped on exit."""
    child = None if bus_reachable(settings) else start_local_nats(settings)
    store = Store(settings.store_location) if writer else None
    try:
        live = start_live(
            settings, store, receivers=receivers, writer=writer, mqtt_enabled=mqtt_enabled,
            processors=writer,
        )  # fmt: skip
        try:
            yield live
        finally:
            live.stop()
    finally:
        if store is not None:
            store.close()
        if child is not None:
            child.terminate()
            child.wait(10)
