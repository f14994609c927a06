"""A small reference warehouse receiver: a real HTTP server on 127.0.0.1.

``POST /hooks/{warehouse_id}`` with a FieldTrace CloudEvent. The receiver checks, in order
(the scheme is in docs/WEBHOOKS.md):

1. ``X-FieldTrace-Timestamp`` is an integer within ``tolerance_s`` of its own clock (replays
   of old captures are refused) -> else 401;
2. the warehouse has a secret -> else 404;
3. ``Idempotency-Key`` is present -> else 400;
4. ``X-FieldTrace-Signature`` is ``v2=HMAC-SHA256`` over timestamp, idempotency key and body
   with the warehouse's secret, compared in constant time -> else 401 (so a captured order
   sent again with a new key, or a new timestamp, is refused);
5. the body is a CloudEvents 1.0 JSON with an ``id`` -> else 400.

It de-duplicates on the two signed fields: an order whose idempotency key *or* CloudEvent id
was accepted before is answered ``200`` with ``X-Idempotent-Replay: true`` and not recorded
again; a new one is recorded and answered ``202`` - so the warehouse sees each order once.
With ``log_path`` the accepted events are appended as JSON lines and reloaded at start, so
deduplication survives a restart of the receiver too. ``fail_first``, ``delay_s`` and ``hold``
make it misbehave on purpose (503 for the first requests; slow answers; answers held until an
event is set) for tests and demos.

Run it: ``python -m pipelines.alerts.receiver --port 8765 [--log F.jsonl]``; the secrets come
from the settings (``pipelines.credentials.WebhookSecrets``).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipelines.alerts.signing import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify,
)

SecretLookup = Callable[[str], str | None]


@dataclass
class Received:
    key: str
    warehouse_id: str
    event: dict[str, Any]
    received_at: float


@dataclass
class ReceiverLog:
    """What the receiver saw; guarded by ``lock``."""

    accepted: dict[str, Received] = field(default_factory=dict)
    event_ids: set[tuple[str, str]] = field(default_factory=set)  # (warehouse, CloudEvent id)
    replays: dict[str, int] = field(default_factory=dict)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class WarehouseReceiver:
    """Start with ``with WarehouseReceiver(secrets) as rx:``; ``rx.url(warehouse_id)``."""

    def __init__(
        self,
        secrets: SecretLookup,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tolerance_s: float = 300.0,
        fail_first: int = 0,
        delay_s: float = 0.0,
        hold: threading.Event | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.secrets = secrets
        self.tolerance_s = tolerance_s
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.hold = hold
        self.log_path = log_path
        self.log = ReceiverLog()
        if log_path is not None and log_path.exists():
            for line in log_path.read_text().splitlines():
                item = Received(**json.loads(line))
                self.log.accepted[item.key] = item
                self.log.event_ids.add((item.warehouse_id, str(item.event.get("id"))))
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, warehouse_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{warehouse_id}"

    def start(self) -> WarehouseReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WarehouseReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def check(self, warehouse_id: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """``(status, reason)`` for a request that is not yet known to be fresh and signed."""
        stamp = headers.get(TIMESTAMP_HEADER.lower(), "")
        if not stamp.isdigit():
            return 401, f"{TIMESTAMP_HEADER}={stamp!r} is not unix seconds"
        skew = abs(time.time() - int(stamp))
        if skew > self.tolerance_s:
            return 401, f"timestamp is {skew:.0f} s from now; at most {self.tolerance_s:.0f} s"
        secret = self.secrets(warehouse_id)
        if secret is None:
            return 404, f"unknown warehouse {warehouse_id!r}"
        key = headers.get(IDEMPOTENCY_HEADER.lower(), "")
        if not key:
            return 400, f"{IDEMPOTENCY_HEADER} is missing"
        given = headers.get(SIGNATURE_HEADER.lower(), "")
        if not verify(secret, int(stamp), key, body, given):
            return 401, (
                f"{SIGNATURE_HEADER} does not match the timestamp, {IDEMPOTENCY_HEADER} and body"
            )
        try:
            event = json.loads(body)
        except ValueError:
            return 400, "body is not JSON"
        if not isinstance(event, dict) or event.get("specversion") != "1.0" or "id" not in event:
            return 400, "body is not a CloudEvents 1.0 event with an id"
        return 0, ""

    def accept(self, warehouse_id: str, key: str, body: bytes) -> bool:
        """Record the order once; False when its key or its event id was accepted before."""
        event = json.loads(body)
        event_id = (warehouse_id, str(event["id"]))
        with self.log.lock:
            if key in self.log.accepted or event_id in self.log.event_ids:
                self.log.replays[key] = self.log.replays.get(key, 0) + 1
                return False
            item = Received(key, warehouse_id, event, time.time())
            self.log.accepted[key] = item
            self.log.event_ids.add(event_id)
            if self.log_path is not None:
                with self.log_path.open("a") as out:
                    out.write(json.dumps(item.__dict__) + "\n")
            return True


def _handler(rx: WarehouseReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the receiver's log is ``rx.log``."""

        def _answer(self, status: int, payload: dict[str, Any], replay: bool = False) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if replay:
                self.send_header("X-Idempotent-Replay", "true")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with rx.log.lock:
                rx.log.requests += 1
                failing = rx.log.requests <= rx.fail_first
            if failing:
                self._answer(503, {"error": "warehouse system is down"})
                return
            parts = self.path.strip("/").split("/")
            if len(parts) != 2 or parts[0] != "hooks":
                self._answer(404, {"error": f"no such endpoint {self.path}"})
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, reason = rx.check(parts[1], headers, body)
            if status:
                with rx.log.lock:
                    rx.log.rejected.append((status, reason))
                self._answer(status, {"error": reason})
                return
            key = headers[IDEMPOTENCY_HEADER.lower()]
            fresh = rx.accept(parts[1], key, body)
            if rx.hold is not None:
                rx.hold.wait(timeout=30)
            time.sleep(rx.delay_s)
            self._answer(202 if fresh else 200, {"key": key, "new": fresh}, replay=not fresh)

    return Handler


def main(argv: list[str] | None = None) -> int:
    from pipelines.credentials import WebhookSecrets
    from pipelines.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m pipelines.alerts.receiver")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--log", type=Path, default=None, help="JSON lines of accepted orders")
    args = parser.parse_args(argv)
    secrets = WebhookSecrets(load_settings())
    rx = WarehouseReceiver(secrets.lookup, port=args.port, log_path=args.log)
    print(f"warehouse receiver on http://127.0.0.1:{rx.port}/hooks/<warehouse_id>", flush=True)
    try:
        rx._server.serve_forever()
    except KeyboardInterrupt:
        rx._server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
