"""Edge link restore: ``python -m bench.bench_edge [--readings N] [--per-message K]``.

* A hub nats-server (domain ``hub``, leaf listener) with ``HubSync`` writing a fresh store, and
  one ``fieldtrace edge`` process (site ``b1``) as a leaf, all on free loopback ports.
* The hub is stopped; ``--readings`` IoT readings (default 100,000) are posted to the edge's
  HTTP intake, ``--per-message`` per request (default 1,000, a gateway's batch), and the test
  waits until the edge's own store holds them all (buffered).
* The hub is started again. Measured from that moment: hub listening, the hub's ``SITE_B1``
  stream holding every edge message (replication), and the hub store holding every reading
  (caught up). Goal: caught up in ≤ 10 s.

Prints a table and writes ``bench/results/edge.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import show, write_results  # noqa: E402
from pipelines.edge.hub import HubConfig, HubSync  # noqa: E402
from pipelines.edge.natsd import NatsServer, free_port  # noqa: E402
from pipelines.edge.streams import connect  # noqa: E402
from pipelines.settings import load_settings  # noqa: E402
from pipelines.store.gateway import Store  # noqa: E402

GOAL_S = 10.0


def _wait(predicate: Any, timeout_s: float, what: str) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if predicate():
            return time.perf_counter() - t0
        time.sleep(0.02)
    raise TimeoutError(f"bench_edge: {what} not reached in {timeout_s} s")


def _readings(start: datetime, n: int) -> list[dict[str, Any]]:
    return [
        {
            "device_id": f"dev-{i % 50:02d}",
            "ts": (start + timedelta(milliseconds=100 * i)).isoformat(),
            "metric": "temperature",
            "value": 20.0 + (i % 97) / 10,
            "unit": "C",
        }
        for i in range(n)
    ]


class Hub:
    """The hub sync on its own event loop in a thread (the bench's main thread polls)."""

    def __init__(self, store: Store, url: str) -> None:
        import threading

        self.sync = HubSync(store, load_settings())
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def body() -> None:
            nc = await connect(self.url, name="bench-hub-sync")
            try:
                await self.sync.run(nc)
            finally:
                await nc.close()

        self.loop.run_until_complete(body())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.sync.stop)
        self.thread.join(timeout=15)


def site_stream_messages(url: str) -> int:
    async def read() -> int:
        nc = await connect(url, name="bench-probe")
        try:
            return int((await nc.jetstream().stream_info("SITE_B1")).state.messages)
        finally:
            await nc.close()

    try:
        return asyncio.run(read())
    except Exception:  # the hub may still be starting: not yet
        return -1


def run(n_readings: int, per_message: int, root: Path) -> dict[str, Any]:
    config = HubConfig(data_dir=root / "hub")
    hub = NatsServer(config.server_spec(), root / "hub" / "run").start()
    store = Store(root / "hub.duckdb")
    sync = Hub(store, hub.spec.client_url)
    sync.thread.start()
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    log = (root / "edge.log").open("ab")
    edge = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "fieldtrace"),
            "edge",
            "--site",
            "b1",
            "--hub",
            config.leaf_url,
            "--data-dir",
            str(root / "edge"),
            "--http-port",
            str(http_port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "160"},
    )

    def status() -> dict[str, Any]:
        try:
            return dict(httpx.get(f"{base}/api/v1/status", timeout=2).json())
        except httpx.HTTPError:
            return {}

    try:
        _wait(lambda: status().get("hub_registered"), 60, "edge registered at the hub")
        hub.stop()
        readings = _readings(datetime.now(UTC) - timedelta(days=1), n_readings)
        t_post = time.perf_counter()
        with httpx.Client(timeout=30) as client:
            for i in range(0, n_readings, per_message):
                body = json.dumps(readings[i : i + per_message]).encode()
                response = client.post(f"{base}/api/v1/intake/iot", content=body)
                response.raise_for_status()
        post_s = time.perf_counter() - t_post
        buffer_s = _wait(
            lambda: status().get("held_readings") == n_readings, 300, "edge buffered every reading"
        )
        messages = -(-n_readings // per_message)
        t0 = time.perf_counter()
        hub.start()
        listening_s = time.perf_counter() - t0
        replicated_s = (
            _wait(lambda: site_stream_messages(hub.spec.client_url) >= messages, 120, "hub stream")
            + listening_s
        )
        caught_up_s = (
            _wait(lambda: store.count("iot_readings") >= n_readings, 120, "hub store")
            + replicated_s
        )
        count = store.count("iot_readings")
        ordered = bool(
            store.scalar(
                "SELECT bool_and(ok) FROM (SELECT ts >= lag(ts, 1, ts) OVER "
                "(PARTITION BY device_id ORDER BY rowid) AS ok FROM iot_readings)"
            )
        )
    finally:
        edge.send_signal(signal.SIGTERM)
        edge.wait(timeout=30)
        sync.stop()
        hub.stop()
        store.close()
    return {
        "readings": n_readings,
        "per_message": per_message,
        "edge_messages": messages,
        "post_s": round(post_s, 2),
        "edge_buffered_after_post_s": round(buffer_s, 2),
        "hub_listening_s": round(listening_s, 2),
        "hub_stream_replicated_s": round(replicated_s, 2),
        "hub_store_caught_up_s": round(caught_up_s, 2),
        "hub_readings": count,
        "event_time_order_per_device": ordered,
        "goal_s": GOAL_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--per-message", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        result = run(args.readings, args.per_message, Path(tmp))
    path = write_results("edge", result)
    show(
        f"Edge link restore, {result['readings']:,} readings ({result['per_message']} per message)",
        [
            ("hub listening", f"{result['hub_listening_s']} s", "restart of nats-server"),
            ("hub stream has all", f"{result['hub_stream_replicated_s']} s", "source catch-up"),
            (
                "hub store caught up",
                f"{result['hub_store_caught_up_s']} s",
                f"goal ≤ {GOAL_S:.0f} s",
            ),
            ("readings at hub", f"{result['hub_readings']:,}", "exactly the posted count"),
            ("event-time order", str(result["event_time_order_per_device"]), "per device"),
        ],
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
