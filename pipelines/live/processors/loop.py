"""The processors' consumer loop: fetch → step → publish → ack, and nothing else.

One durable pull consumer (``<prefix>-processors``) on ``<prefix>.in.>``. Each fetched
micro-batch goes through the writer's decoding and the file-ingest rules (the same accepted
rows the store gets: WGS84, named rules), then:

- ``verdicts`` - the pure event-time step of ``pipelines.live.processors.verdicts``; every
  new version is published on ``<prefix>.out.verdicts`` (``Nats-Msg-Id`` = source + event id
  + version) and written to ``arrival_checks`` as the batch runner writes it;
- ``alerts``   - each ticket created with a configured tag, once the writer has committed
  it, runs ``run_alerts`` at its event time; new orders are delivered at once
  (``deliver_due``); ``alert.raised``/``.updated`` and ``restock.ordered``/``.delivered``
  are published on ``<prefix>.out.alerts`` / ``.out.restock``.

Messages are acked after their outputs are published (a crash re-fetches them; the bus drops
re-published outputs by their ``Nats-Msg-Id``). The step's state lives in memory: after a
restart, arrivals whose evidence was fetched before it are decided again only from what
comes after (the batch runner remains the complete answer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import polars as pl

from geofence.stops import compile_kernels
from pipelines.alerts.config import AlertConfig, load_config
from pipelines.alerts.delivery import SecretLookup, deliver_due
from pipelines.alerts.runner import run_alerts
from pipelines.arrivals.runner import thresholds_from, write_checks
from pipelines.credentials import WebhookSecrets
from pipelines.ingest.contract import IngestOptions, ParsedBatch, empty_rejects
from pipelines.ingest.kinds import kind_spec
from pipelines.ingest.machine import validate_parsed
from pipelines.live import bus as busmod
from pipelines.live.bus import Bus, make_event
from pipelines.live.processors.fences import FenceEvent, FenceInputs, FenceRules, FenceState
from pipelines.live.processors.fences import step as fence_step
from pipelines.live.processors.verdicts import (
    ARRIVAL_SCHEMA,
    FIX_SCHEMA,
    Verdict,
    VerdictInputs,
    VerdictState,
    VerdictTiming,
    _json_value,
    step,
)
from pipelines.live.writer import InMessage, _frame, events_to_batches, to_in_message
from pipelines.settings import Settings
from pipelines.store.gateway import Store

log = logging.getLogger("fieldtrace.live.processors")
SOURCE = "/fieldtrace/processors"


@dataclass
class Published:
    """What one loop iteration published (for tests, the bench and the dashboard ticker)."""

    verdicts: list[Verdict] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    delivered: int = 0
    wall: float = 0.0


def _accepted(
    store: Store, settings: Settings, kind: str, rows: list[dict[str, Any]]
) -> pl.DataFrame:
    """Rows of one kind through the file-ingest rules; the accepted ones (as stored). The
    ``duplicate`` rule is left to the writer: it asks the store, which the writer may have
    committed these very rows to already, and the steps ignore a repeated row anyway."""
    spec = kind_spec(kind)
    spec = replace(spec, rules=tuple(r for r in spec.rules if r != "duplicate"))
    frame = _frame(rows, spec.columns, spec.required)
    parsed = ParsedBatch(frame, empty_rejects(), len(rows), "cloudevents")
    opts = IngestOptions(fmt="cloudevents", source_name="bus")
    accepted, _ = validate_parsed(store, spec, parsed, settings, opts)
    return accepted


@dataclass
class Pending:
    """Arrivals whose ticket point is not known yet, and tagged tickets for the alert rules."""

    arrivals: list[dict[str, Any]] = field(default_factory=list)
    tagged: dict[str, datetime] = field(default_factory=dict)  # ticket id -> created ts


def _ticket_points(store: Store, ids: list[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    found = store.query_frames(
        "SELECT t.ticket_id, t.lat AS customer_lat, t.lon AS customer_lon, t.site_id, t.region "
        "FROM tickets t JOIN want w USING (ticket_id) WHERE t.lat IS NOT NULL",
        {"want": pl.DataFrame({"ticket_id": ids}, schema={"ticket_id": pl.String})},
    )
    return {r["ticket_id"]: r for r in found.iter_rows(named=True)}


@dataclass(frozen=True)
class Prepared:
    fixes: pl.DataFrame  # FIX_SCHEMA
    arrivals: pl.DataFrame  # ARRIVAL_SCHEMA, ticket point joined
    events: list[dict[str, Any]]  # ticket events of the batch
    points: dict[str, tuple[float, float]]  # ticket points of those events


def prepare(
    store: Store,
    settings: Settings,
    config: AlertConfig,
    messages: list[InMessage],
    pending: Pending,
) -> Prepared:
    """Fixes and resolvable arrivals of a micro-batch, its ticket events with their tickets'
    points; unresolved arrivals and tagged tickets wait in ``pending``."""
    by_kind = events_to_batches(messages)
    fixes = pl.DataFrame(schema=FIX_SCHEMA)
    if by_kind["gps"].rows:
        got = _accepted(store, settings, "gps", by_kind["gps"].rows)
        fixes = got.select(
            [pl.col(c).cast(t) if c in got.columns else pl.lit(None, t).alias(c)
             for c, t in FIX_SCHEMA.items()]
        )  # fmt: skip
    for e in by_kind["events"].rows:
        if e["event_type"] == "arrived" and e.get("actor") and e.get("ts"):
            pending.arrivals.append(e)
    if by_kind["tickets"].rows:
        tickets = _accepted(store, settings, "tickets", by_kind["tickets"].rows)
        for row in tickets.iter_rows(named=True):
            have = set(row.get("tags") or [])
            if row.get("tag"):
                have.add(row["tag"])
            if have & config.tags and row.get("created_ts") is not None:
                pending.tagged[row["ticket_id"]] = row["created_ts"]
    events = by_kind["events"].rows
    wanted = {a["ticket_id"] for a in pending.arrivals} | {e["ticket_id"] for e in events}
    points = _ticket_points(store, sorted(t for t in wanted if t))
    ready, waiting = [], []
    for a in pending.arrivals:
        p = points.get(a["ticket_id"])
        if p is None:
            waiting.append(a)
            continue
        ready.append(
            {
                "ticket_id": a["ticket_id"],
                "event_id": a["event_id"],
                "technician_id": a["actor"],
                "ts": datetime.fromisoformat(a["ts"]),
                **{k: p[k] for k in ("customer_lat", "customer_lon", "site_id", "region")},
            }
        )
    pending.arrivals = waiting
    return Prepared(
        fixes,
        pl.DataFrame(ready, schema=ARRIVAL_SCHEMA),
        events,
        {t: (p["customer_lat"], p["customer_lon"]) for t, p in points.items()},
    )


FENCE_TYPES = {
    "enter": busmod.GEOFENCE_ENTER,
    "exit": busmod.GEOFENCE_EXIT,
    "dwell": busmod.GEOFENCE_DWELL,
    "arrived_auto": busmod.ARRIVED_AUTO,
}


def fence_event(e: FenceEvent) -> Any:
    return make_event(
        FENCE_TYPES[e.kind],
        source=f"{SOURCE}/geofence",
        id=e.key,
        subject=e.ticket_id,
        time=e.ts,
        data={"technician_id": e.technician_id, "ticket_id": e.ticket_id, **e.data},
    )


def record_outputs(store: Store, events: list[Any], at: datetime) -> None:
    """Published facts into ``live_outputs`` (the ticket timeline and the ticker read them);
    a re-published one (same message id) is kept once."""
    rows = [
        {
            "msg_id": busmod.msg_id(e),
            "type": e.get_type(),
            "ticket_id": e.get_subject(),
            "technician_id": (e.get_data() or {}).get("technician_id"),
            "ts": e.get_time(),
            "data": json.dumps(e.get_data(), default=str),
            "published_at": at,
        }
        for e in events
    ]
    if not rows:
        return
    frame = pl.DataFrame(rows, schema_overrides={"ts": pl.Datetime("us", "UTC")})
    with store.transaction() as tx:
        tx.register("new_outputs", frame.select("msg_id"))
        tx.execute("DELETE FROM live_outputs WHERE msg_id IN (SELECT msg_id FROM new_outputs)")
        tx.unregister("new_outputs")
        tx.insert_frame("live_outputs", frame)


def verdict_event(v: Verdict) -> Any:
    return make_event(
        busmod.ARRIVAL_VERDICT,
        source=f"{SOURCE}/verdicts",
        id=f"{v.event_id}/v{v.version}",
        subject=v.ticket_id,
        time=v.ts,
        data=v.data(),
    )


def run_due_alerts(
    store: Store, config: AlertConfig, secrets: SecretLookup, pending: Pending
) -> tuple[list[dict[str, Any]], int]:
    """Tagged tickets the writer has committed: ``run_alerts`` at each one's event time (in
    order), then deliver what is due. Returns (alert/order facts to publish, delivered)."""
    if not pending.tagged:
        return [], 0
    committed = store.query_frames(
        "SELECT ticket_id FROM tickets JOIN want USING (ticket_id)",
        {
            "want": pl.DataFrame(
                {"ticket_id": list(pending.tagged)}, schema={"ticket_id": pl.String}
            )
        },
    )["ticket_id"].to_list()
    facts: list[dict[str, Any]] = []
    for at in sorted({pending.tagged.pop(t) for t in committed}):
        report = run_alerts(store, config, at=at)
        for kind, ids in (("raised", report.opened), ("updated", report.updated)):
            facts.extend({"kind": kind, "alert_id": a, "at": at} for a in ids)
        facts.extend({"kind": "ordered", "order_id": o, "at": at} for o in report.orders)
    delivered = 0
    ordered = [f for f in facts if f["kind"] == "ordered"]
    if ordered:
        delivered = deliver_due(store, config, secrets).delivered
        done = store.query_frames(
            "SELECT DISTINCT o.order_id FROM outbox o JOIN want USING (order_id) "
            "WHERE o.delivered_at IS NOT NULL",
            {"want": pl.DataFrame({"order_id": [f["order_id"] for f in ordered]})},
        )["order_id"].to_list()
        facts.extend({**f, "kind": "delivered"} for f in ordered if f["order_id"] in done)
    return facts, delivered


def _fact_event(fact: dict[str, Any], store: Store) -> tuple[str, Any]:
    if "order_id" in fact:
        row = store.query(
            "SELECT * FROM restock_orders WHERE order_id = ?", (fact["order_id"],)
        ).to_dicts()
        data = {k: _json_value(v) for k, v in (row[0] if row else {}).items()}
        delivered = fact["kind"] == "delivered"
        return busmod.OUT_RESTOCK, make_event(
            busmod.RESTOCK_DELIVERED if delivered else busmod.RESTOCK_ORDERED,
            source=f"{SOURCE}/alerts", id=f"{fact['order_id']}/{fact['kind']}",
            subject=data.get("alert_id"), time=fact["at"], data=data,
        )  # fmt: skip
    row = store.query(
        "SELECT alert_id, tag, status, trend, member_count FROM cluster_alerts WHERE alert_id = ?",
        (fact["alert_id"],),
    ).to_dicts()
    data = {
        k: _json_value(v) for k, v in (row[0] if row else {"alert_id": fact["alert_id"]}).items()
    }
    type_ = busmod.ALERT_RAISED if fact["kind"] == "raised" else busmod.ALERT_UPDATED
    return busmod.OUT_ALERTS, make_event(
        type_, source=f"{SOURCE}/alerts", id=f"{fact['alert_id']}/{fact['at'].isoformat()}",
        subject=fact["alert_id"], time=fact["at"], data=data,
    )  # fmt: skip


async def run_processors(
    settings: Settings,
    store: Store,
    *,
    stop: asyncio.Event,
    config: AlertConfig | None = None,
    secrets: SecretLookup | None = None,
    max_wait_s: float = 300.0,
    on_publish: Callable[[Published], None] | None = None,
) -> None:
    """Consume ``<prefix>.in.>`` and publish verdicts, alerts and orders until ``stop``."""
    config = config or load_config(None)
    lookup = secrets or WebhookSecrets(settings).lookup
    th = thresholds_from(settings.thresholds)
    timing = VerdictTiming.of(th, max_wait_s=max_wait_s)
    state, pending = VerdictState(), Pending()
    fences = FenceState()
    rules = FenceRules(
        radius_m=settings.thresholds.arrival_radius_m, accuracy_k=settings.thresholds.accuracy_k
    )
    # the compiled stop kernel loads from numba's cache now, not on the first arrival
    warm_kernel = asyncio.create_task(asyncio.to_thread(compile_kernels))
    bus = await Bus.connect(settings)
    try:
        await bus.ensure_streams()
        await warm_kernel
        sub = await bus.pull(busmod.IN_ALL, durable=f"{settings.bus_prefix}-processors")
        while not stop.is_set():
            try:
                fetched = await sub.fetch(settings.writer_max_batch_msgs, timeout=0.2)
            except TimeoutError:
                fetched = []
            except Exception as exc:  # a disconnect while fetching: wait for the reconnect
                log.warning("processors fetch: %r", exc)
                await asyncio.sleep(0.5)
                continue
            t0 = time.perf_counter()
            messages = [m for m in (to_in_message(f) for f in fetched) if m is not None]
            try:
                got = await asyncio.to_thread(prepare, store, settings, config, messages, pending)
                wall = datetime.now(UTC)
                new_state, verdicts = step(
                    state, VerdictInputs(wall, fixes=got.fixes, arrivals=got.arrivals), th, timing
                )
                new_fences, geo = fence_step(
                    fences, FenceInputs(got.fixes, got.events, got.points), rules
                )
                geo_events = [fence_event(e) for e in geo]
                for event in geo_events:
                    await bus.publish(busmod.OUT_GEOFENCE, event)
                if geo_events:
                    await asyncio.to_thread(record_outputs, store, geo_events, wall)
                facts, delivered = await asyncio.to_thread(
                    run_due_alerts, store, config, lookup, pending
                )
                for v in verdicts:
                    await bus.publish(busmod.OUT_VERDICTS, verdict_event(v))
                if verdicts:
                    checks = pl.DataFrame([v.row for v in verdicts])
                    await asyncio.to_thread(write_checks, store, checks, computed_at=wall)
                for fact in facts:
                    subject, event = _fact_event(fact, store)
                    await bus.publish(subject, event)
            except Exception as exc:  # nothing acked: the batch comes back after ack_wait
                log.error("processors: batch of %d not processed: %r", len(fetched), exc)
                await asyncio.sleep(1.0)
                continue
            state, fences = new_state, new_fences
            for f in fetched:
                await f.ack()
            if on_publish is not None and (verdicts or facts or geo):
                on_publish(
                    Published(
                        verdicts,
                        [f["alert_id"] for f in facts if "alert_id" in f],
                        [f["order_id"] for f in facts if f["kind"] == "ordered"],
                        delivered,
                        time.perf_counter() - t0,
                    )
                )
    finally:
        await bus.close()
