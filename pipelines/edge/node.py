"""The edge node of one site: a leaf nats-server, intake, local rules, a small store.

Stages, each a task of ``EdgeNode.run``:

1. **leaf**      – a child nats-server, JetStream domain ``edge-<site>``, store under the data
   dir, a leaf connection to the hub, and an MQTT listener (devices publish QoS 1 to
   ``<prefix>/intake/<site>/{iot,gps,vib}``; JetStream keeps it, so a crash loses nothing).
2. **http**      – ``POST /api/v1/intake/{iot,gps,vib}``: parsed (4xx naming the field), then
   published to the same intake subjects; 202 only after the leaf's JetStream acked it.
3. **intake**    – a durable consumer turns intake messages into CloudEvents on ``EDGE_<S>``
   (readings, fixes) and runs the local bearing rule on vibration records: a crossed band is
   a ``ticket.created`` with the edge as source. Ids come from content, so a replay after a
   kill -9 de-duplicates (``Nats-Msg-Id``).
4. **store**     – a durable consumer writes ``EDGE_<S>`` and the dispatch mirror into the
   site's own DuckDB file (what the site knows, including who is coming).
5. **register**  – until the hub answers, retry creating the hub's ``SITE_<S>`` stream that
   sources ``EDGE_<S>`` (the hub then pulls whenever the link is up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from cloudevents.core.v1.event import CloudEvent
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from geofence.bearing import DEFAULT_RULE, BandRule, evaluate_bearing
from geofence.errors import GeofenceError
from geofence.spectrum import SKF_6205_2RS, BearingGeometry
from pipelines.edge.events import (
    HUB_SOURCE,
    INTAKE_KINDS,
    EventError,
    IntakeError,
    Names,
    content_id,
    fixes_event,
    parse_fixes,
    parse_readings,
    parse_vibration,
    readings_event,
    ticket_event,
)
from pipelines.edge.natsd import EdgeError, NatsServer, ServerSpec, check_domain, free_port
from pipelines.edge.streams import (
    BUS_ERRORS,
    connect,
    drain_batch,
    durable_pull,
    ensure_edge_streams,
    ensure_hub_site_stream,
    publish_event,
)
from pipelines.edge.writer import write_events
from pipelines.store.gateway import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EdgeConfig:
    """Everything one site's node needs; ports default to free loopback ports."""

    site: str
    hub_leaf_url: str
    data_dir: Path
    hub_domain: str = "hub"
    prefix: str = "fieldtrace"
    client_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    geometry: BearingGeometry = SKF_6205_2RS
    rule: BandRule = DEFAULT_RULE

    @property
    def names(self) -> Names:
        return Names(self.prefix, self.site, check_domain(self.hub_domain))

    @property
    def store_path(self) -> Path:
        return self.data_dir / "edge.duckdb"

    def server_spec(self) -> ServerSpec:
        return ServerSpec(
            name=f"edge-{self.site}",
            domain=self.names.domain,
            store_dir=self.data_dir / "jetstream",
            client_port=self.client_port,
            monitor_port=self.monitor_port,
            hub_leaf_url=self.hub_leaf_url,
            mqtt_port=self.mqtt_port,
        )


@dataclass
class EdgeCounters:
    intake_messages: int = 0
    intake_rejected: int = 0
    readings: int = 0
    fixes: int = 0
    tickets: int = 0
    hub_registered: bool = False


class EdgeNode:
    """One site's node; ``run()`` until ``stop()`` (or the process is killed)."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.names = config.names
        self.server = NatsServer(
            config.server_spec(), config.data_dir / "run", die_with_parent=True
        )
        self.counters = EdgeCounters()
        self._stopping = asyncio.Event()
        self._nc: Client | None = None
        self._store: Store | None = None

    # -- stage 1 + wiring ------------------------------------------------------------------
    async def run(self) -> None:
        self.server.start()
        self._store = Store(self.config.store_path)
        self._nc = await connect(self.server.spec.client_url, name=f"edge-{self.config.site}")
        js = self._nc.jetstream()
        await ensure_edge_streams(js, self.names)
        http = uvicorn.Server(
            uvicorn.Config(
                self.http_app(js),
                host="127.0.0.1",
                port=self.config.http_port,
                log_level="warning",
                lifespan="off",
            )
        )
        register = asyncio.create_task(self._register_loop(), name="register")
        serving = [  # these run for ever: one that ends has failed
            asyncio.create_task(self._intake_loop(js), name="intake"),
            asyncio.create_task(self._store_loop(js), name="store"),
            asyncio.create_task(http.serve(), name="http"),
        ]
        stopping = asyncio.create_task(self._stopping.wait(), name="stopping")
        failed: str | None = None
        try:
            done, _ = await asyncio.wait([stopping, *serving], return_when=asyncio.FIRST_COMPLETED)
            # stop the node loudly (a supervisor restarts it; JetStream kept the unacked)
            ended = [t for t in done if t is not stopping]
            if ended:
                failed = f"{ended[0].get_name()} ended: {ended[0].exception()!r}"
        finally:
            http.should_exit = True
            for task in [stopping, register, *serving[:2]]:
                task.cancel()
            await asyncio.gather(register, *serving, return_exceptions=True)
            with contextlib.suppress(*BUS_ERRORS):
                await self._nc.close()
            self._store.close()
            self.server.stop()
        if failed is not None:
            raise EdgeError(f"edge {self.config.site}: stage {failed}")

    def stop(self) -> None:
        self._stopping.set()

    # -- stage 2: HTTP intake ----------------------------------------------------------------
    def http_app(self, js: JetStreamContext) -> Starlette:
        names = self.names

        async def intake(request: Request) -> JSONResponse:
            kind = request.path_params["kind"]
            if kind not in INTAKE_KINDS:
                return JSONResponse(
                    {"error": f"kind={kind!r}, expected one of {list(INTAKE_KINDS)}"}, 404
                )
            body = await request.body()
            try:
                count = _validate(kind, body, f"POST /api/v1/intake/{kind}")
            except IntakeError as exc:
                return JSONResponse({"error": str(exc)}, 400)
            try:
                ack = await js.publish(
                    names.intake(kind),
                    body,
                    headers={"Nats-Msg-Id": content_id(kind, body)},
                    timeout=2,
                )
            except BUS_ERRORS as exc:
                return JSONResponse({"error": f"edge bus unavailable: {exc!r}"}, 503)
            return JSONResponse({"accepted": count, "duplicate": bool(ack.duplicate)}, 202)

        async def status(_: Request) -> JSONResponse:
            """This process's counters, and what the site holds (survives restarts)."""
            held: dict[str, int] = {}
            if self._store is not None:
                held = await asyncio.to_thread(self._held)
            try:
                intake = await js.consumer_info(names.intake_stream, "edge_intake")
                pending = int(intake.num_pending or 0) + int(intake.num_ack_pending or 0)
            except BUS_ERRORS:
                pending = -1
            return JSONResponse(
                {"site": names.site, **self.counters.__dict__, "intake_pending": pending, **held}
            )

        async def dispatch(_: Request) -> JSONResponse:
            return JSONResponse({"site": names.site, "dispatch": await self._dispatch_rows()})

        return Starlette(
            routes=[
                Route("/api/v1/intake/{kind}", intake, methods=["POST"]),
                Route("/api/v1/status", status, methods=["GET"]),
                Route("/api/v1/dispatch", dispatch, methods=["GET"]),
            ]
        )

    def _held(self) -> dict[str, int]:
        store = self._store
        assert store is not None
        return {
            "held_tickets": store.count("edge_tickets"),
            "held_readings": store.count("iot_readings"),
            "held_fixes": store.count("gps_fixes"),
            "held_quarantined": store.count("quarantine"),
        }

    async def _dispatch_rows(self) -> list[dict[str, Any]]:
        """Who is coming: the hub's dispatch decisions as the site's own store holds them."""
        store = self._store
        if store is None:
            return []
        frame = await asyncio.to_thread(
            store.query,
            "SELECT e.ticket_id, e.event_type, e.actor AS technician_id, "
            "strftime(e.ts, '%Y-%m-%dT%H:%M:%SZ') AS ts FROM ticket_events e "
            "WHERE e.source = ? ORDER BY e.ts, e.ticket_id",
            [HUB_SOURCE],
        )
        return frame.to_dicts()

    # -- stage 3: intake -> events + local rules --------------------------------------------
    async def _intake_loop(self, js: JetStreamContext) -> None:
        sub = await durable_pull(js, self.names.intake_stream, "edge_intake")
        while True:
            try:
                msgs = await sub.fetch(64, timeout=0.5)
                for msg in msgs:
                    await self._intake_one(js, msg)
                    await msg.ack()
            except BUS_ERRORS:
                # unacked messages come back after the ack wait: nothing is lost
                await asyncio.sleep(0.2)

    async def _intake_one(self, js: JetStreamContext, msg: Msg) -> None:
        kind = msg.subject.rsplit(".", 1)[-1]
        where = f"{msg.subject} seq {msg.metadata.sequence.stream}"
        self.counters.intake_messages += 1
        try:
            event = await asyncio.to_thread(self._to_event, kind, msg.data, where)
        except (IntakeError, GeofenceError) as exc:  # a bad record never stops the intake
            self.counters.intake_rejected += 1
            await asyncio.to_thread(self._quarantine, kind, msg, str(exc))
            return
        if event is None:
            return
        await publish_event(js, self.names.edge(_edge_subject(event)), event)

    def _to_event(self, kind: str, body: bytes, where: str) -> CloudEvent | None:
        if kind not in INTAKE_KINDS:
            raise IntakeError(f"{where}: kind={kind!r}, expected one of {list(INTAKE_KINDS)}")
        if kind == "iot":
            readings = parse_readings(body, where)
            self.counters.readings += readings.height
            return readings_event(self.names, readings, content_id(kind, body))
        if kind == "gps":
            fixes = parse_fixes(body, where)
            self.counters.fixes += fixes.height
            return fixes_event(self.names, fixes, content_id(kind, body))
        record = parse_vibration(body, where)
        verdict = evaluate_bearing(
            record.samples,
            sample_rate_hz=record.sample_rate_hz,
            rpm=record.rpm,
            geometry=self.config.geometry,
            rule=self.config.rule,
        )
        if verdict.band is None:
            return None
        self.counters.tickets += 1
        return ticket_event(self.names, record, verdict.evidence(), verdict.band)

    def _quarantine(self, kind: str, msg: Msg, reason: str) -> None:
        assert self._store is not None
        self._store.execute(
            "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?)",
            [
                f"edge-intake-{self.names.site}",
                kind,
                msg.subject,
                msg.metadata.sequence.stream,
                "edge_intake",
                reason,
                msg.data[:2000].decode("utf-8", "replace"),
                datetime.now(UTC),
            ],
        )

    # -- stage 4: the site's own store -------------------------------------------------------
    async def _store_loop(self, js: JetStreamContext) -> None:
        subs = [
            await durable_pull(js, self.names.edge_stream, "edge_store"),
            await durable_pull(js, self.names.dispatch_mirror, "edge_store"),
        ]
        store = self._store
        assert store is not None

        async def write(events: list[CloudEvent]) -> None:
            await asyncio.to_thread(write_events, store, events, received_at=datetime.now(UTC))

        async def bad(msg: Msg, exc: EventError) -> None:
            log.warning("edge store: %s", exc)

        while True:
            moved = 0
            for sub in subs:
                try:
                    moved += await drain_batch(sub, write, batch=256, on_bad=bad, timeout_s=0.05)
                except BUS_ERRORS:
                    await asyncio.sleep(0.2)
            if not moved:
                await asyncio.sleep(0.2)

    # -- stage 5: the hub's stream of this site ---------------------------------------------
    async def _register_loop(self) -> None:
        assert self._nc is not None
        hub_js = self._nc.jetstream(domain=self.names.hub_domain, timeout=2)
        while True:
            try:
                await ensure_hub_site_stream(hub_js, self.names)
            except BUS_ERRORS as exc:
                log.info("hub not reachable yet (%r); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            self.counters.hub_registered = True
            return


def _validate(kind: str, body: bytes, where: str) -> int:
    if kind == "iot":
        return parse_readings(body, where).height
    if kind == "gps":
        return parse_fixes(body, where).height
    parse_vibration(body, where)
    return 1


def _edge_subject(event: CloudEvent) -> str:
    return event.get_type().removeprefix("fieldtrace.")


async def run_edge(config: EdgeConfig) -> None:
    """Run a site's node until cancelled (SIGINT / SIGTERM stop it cleanly)."""
    import signal

    node = EdgeNode(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, node.stop)
    await node.run()


def describe(config: EdgeConfig) -> dict[str, Any]:
    """What an operator needs to point devices at this node."""
    return {
        "site": config.site,
        "domain": config.names.domain,
        "nats": config.server_spec().client_url,
        "mqtt": f"mqtt://127.0.0.1:{config.mqtt_port} topics "
        f"{config.prefix}/intake/{config.site}/{{iot,gps,vib}}",
        "http": f"http://127.0.0.1:{config.http_port}/api/v1/intake/{{iot,gps,vib}}",
        "store": str(config.store_path),
        "hub_leaf_url": config.hub_leaf_url,
    }
