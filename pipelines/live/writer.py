"""The live writer: bus → store in micro-batches, one transaction each, ack after commit.

Stages of one micro-batch (at most ``writer_max_batch_msgs`` messages or
``writer_max_batch_s`` of waiting):

1. ``fetch``    – a durable pull consumer (``<prefix>-writer``) on ``<prefix>.in.>``;
2. ``dedupe``   – drop messages whose ``Nats-Msg-Id`` is already in ``bus_messages``
                  (a redelivery after a crash, a retry past the duplicate window);
3. ``to_rows``  – CloudEvents → canonical rows per kind (``events_to_batches``, pure);
4. ``validate`` – the file-ingest machinery: coerce, normalize, named rules
                  (``pipelines.ingest.machine.validate_parsed``), so a rejected row is quarantined
                  with its reason exactly as from a file;
5. ``write``    – accepted rows, quarantined rows, one ``ingest_batches`` record per kind and
                  the message ids, in one transaction;
6. ``ack``      – only after the commit. A kill -9 before it means redelivery, and step 2
                  makes that add nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl
from cloudevents.core.v1.event import CloudEvent

from pipelines.errors import EventFormatError
from pipelines.ingest.contract import IngestOptions, ParsedBatch, empty_rejects
from pipelines.ingest.kinds import kind_spec
from pipelines.ingest.machine import BATCH_COLUMNS, validate_parsed, write_accepted
from pipelines.live import bus as busmod
from pipelines.live.bus import Bus
from pipelines.settings import Settings
from pipelines.store.gateway import Store

log = logging.getLogger("fieldtrace.live.writer")

# Kinds in write order: a ticket before its events.
KIND_ORDER = ("tickets", "events", "gps", "iot")
TICKET_FIELDS = (
    "external_id",
    "customer_id",
    "customer_name",
    "address",
    "lat",
    "lon",
    "datum",
    "tags",
    "tag",
    "category",
    "priority",
    "region",
    "site_id",
)


@dataclass(frozen=True)
class InMessage:
    """One bus message as the writer sees it."""

    msg_id: str
    stream_seq: int
    subject: str
    event: CloudEvent


@dataclass
class KindRows:
    """Canonical rows of one kind, each remembering the message it came from."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    origin: list[tuple[str, int]] = field(default_factory=list)  # (msg_id, index in message)

    def add(self, row: dict[str, Any], msg_id: str, index: int) -> None:
        self.rows.append(row)
        self.origin.append((msg_id, index))


@dataclass
class WriteResult:
    messages: int
    skipped: int
    accepted: dict[str, int]
    quarantined: dict[str, int]
    seconds: float


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


def events_to_batches(messages: Iterable[InMessage]) -> dict[str, KindRows]:
    """CloudEvents → canonical rows per kind (the columns of ``pipelines.kinds``). Pure."""
    out: dict[str, KindRows] = {k: KindRows() for k in KIND_ORDER}
    for m in messages:
        e = m.event
        etype = e.get_type()
        raw = e.get_data()
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if etype == busmod.POSITION:
            out["gps"].add(dict(data), m.msg_id, 0)
        elif etype == busmod.POSITION_BATCH:
            positions = raw if isinstance(raw, list) else data.get("positions") or []
            for i, pos in enumerate(positions):
                out["gps"].add(dict(pos) if isinstance(pos, dict) else {}, m.msg_id, i)
        elif etype.startswith(busmod.TICKET_PREFIX):
            event_type = etype.removeprefix(busmod.TICKET_PREFIX)
            out["events"].add(
                {
                    "event_id": e.get_id(),
                    "ticket_id": e.get_subject(),
                    "event_type": event_type,
                    "ts": _iso(e.get_time()),
                    "actor": data.get("actor"),
                    "source": e.get_source(),
                    "note": data.get("note"),
                },
                m.msg_id,
                0,
            )
            if event_type == "created" and any(k in data for k in TICKET_FIELDS):
                ticket = {k: data.get(k) for k in TICKET_FIELDS if k in data}
                ticket.update(
                    ticket_id=e.get_subject(), source=e.get_source(), created_ts=_iso(e.get_time())
                )
                out["tickets"].add(ticket, m.msg_id, 0)
        elif etype == busmod.IOT_READING:
            readings = data.get("readings")
            items = readings if isinstance(readings, list) else [data]
            for i, r in enumerate(items):
                r = r if isinstance(r, dict) else {}
                out["iot"].add(
                    {
                        "device_id": e.get_subject(),
                        "ts": r.get("ts") or _iso(e.get_time()),
                        "metric": r.get("metric"),
                        "value": r.get("value"),
                        "unit": r.get("unit"),
                    },
                    m.msg_id,
                    i,
                )
    return out


def _frame(
    rows: list[dict[str, Any]], columns: Iterable[str], required: tuple[str, ...]
) -> pl.DataFrame:
    """Rows → a frame of the kind's columns. Each column keeps its JSON type when it has one
    (numbers stay numbers); a mixed column becomes text, which ``coerce`` then types or
    quarantines row by row, as it does for a CSV file."""
    series = [pl.Series("_row", range(len(rows)), dtype=pl.Int64)]
    for name in columns:
        values = [r.get(name) for r in rows]
        if all(v is None for v in values):
            if name in required:  # present but empty: the rules quarantine each row
                series.append(pl.Series(name, values, dtype=pl.String))
            continue
        try:
            col = pl.Series(name, values, strict=True)
            if col.dtype == pl.Null or isinstance(col.dtype, pl.List | pl.Struct | pl.Object):
                raise TypeError(name)
        except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
            col = pl.Series(name, [_text(v) for v in values], dtype=pl.String)
        series.append(col)
    return pl.DataFrame(series)


def _batch_id(kind: str, msg_ids: list[str]) -> tuple[str, str]:
    digest = hashlib.sha256("\n".join(msg_ids).encode()).hexdigest()
    return f"live-{kind}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{digest[:10]}", digest


def write_messages(
    store: Store,
    settings: Settings,
    messages: list[InMessage],
    *,
    stream: str,
    fault_pause_s: float = 0.0,
) -> WriteResult:
    """Stages dedupe → write of one micro-batch, in one transaction (see module doc)."""
    t0 = time.perf_counter()
    unique: dict[str, InMessage] = {}
    for m in messages:
        unique.setdefault(m.msg_id, m)
    done: set[str] = set()
    if unique:
        ids = pl.DataFrame({"msg_id": list(unique)})
        done = set(
            store.query_frames(
                "SELECT b.msg_id FROM batch_ids b JOIN bus_messages m USING (msg_id)",
                {"batch_ids": ids},
            )["msg_id"].to_list()
        )
    fresh = [m for m in unique.values() if m.msg_id not in done]
    by_kind = events_to_batches(fresh)
    now = datetime.now(UTC)
    prepared = []
    rows_per_msg: dict[str, int] = dict.fromkeys((m.msg_id for m in fresh), 0)
    for kind in KIND_ORDER:
        kr = by_kind[kind]
        if not kr.rows:
            continue
        spec = kind_spec(kind)
        frame = _frame(kr.rows, spec.columns, spec.required)
        parsed = ParsedBatch(frame, empty_rejects(), len(kr.rows), "cloudevents")
        opts = IngestOptions(fmt="cloudevents", source_name="bus")
        accepted, quarantined = validate_parsed(store, spec, parsed, settings, opts)
        msg_ids = sorted({o[0] for o in kr.origin})
        batch_id, digest = _batch_id(kind, msg_ids)
        origin = pl.DataFrame(
            {
                "_row": range(len(kr.origin)),
                "source_path": [f"bus {o[0]}" for o in kr.origin],
                "row_number": [o[1] for o in kr.origin],
            },
            schema={"_row": pl.Int64, "source_path": pl.String, "row_number": pl.Int64},
        )
        qrows = quarantined.join(origin, on="_row", how="left").select(
            pl.lit(batch_id).alias("batch_id"),
            pl.lit(spec.name).alias("kind"),
            pl.col("source_path").fill_null("bus"),
            pl.col("row_number").fill_null(pl.col("_row")),
            "rule",
            "field",
            "reason",
            "raw",
            pl.lit(now).dt.convert_time_zone("UTC").alias("quarantined_at"),
        )
        for msg_id, _ in kr.origin:
            rows_per_msg[msg_id] += 1
        prepared.append((spec, accepted, qrows, batch_id, digest, len(kr.rows), msg_ids))
    result = WriteResult(len(messages), len(messages) - len(fresh), {}, {}, 0.0)
    if not fresh:
        result.seconds = time.perf_counter() - t0
        return result
    batch_of: dict[str, str] = {}
    with store.transaction() as tx:
        for spec, accepted, qrows, batch_id, digest, n_read, msg_ids in prepared:
            write_accepted(tx, spec, accepted, settings, batch_id)
            tx.insert_frame("quarantine", qrows)
            tx.execute(
                f"INSERT INTO ingest_batches ({', '.join(BATCH_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in BATCH_COLUMNS)})",
                (
                    batch_id,
                    spec.name,
                    "cloudevents",
                    f"bus {stream}",
                    digest,
                    digest,  # ingest key: the message ids are the batch's identity
                    n_read,
                    accepted.height,
                    qrows.height,
                    now,
                    datetime.now(UTC),
                    0.0,
                    0.0,
                    0.0,
                    None,
                ),
            )
            for msg_id in msg_ids:
                batch_of[msg_id] = batch_id
            result.accepted[spec.name] = accepted.height
            result.quarantined[spec.name] = qrows.height
        if fault_pause_s:  # fault injection for the kill -9 test: inside the transaction
            print("fault-injection: paused inside write transaction", file=sys.stderr, flush=True)
            time.sleep(fault_pause_s)
        tx.insert_frame(
            "bus_messages",
            pl.DataFrame(
                {
                    "msg_id": [m.msg_id for m in fresh],
                    "stream": [stream] * len(fresh),
                    "stream_seq": [m.stream_seq for m in fresh],
                    "subject": [m.subject for m in fresh],
                    "rows": [rows_per_msg[m.msg_id] for m in fresh],
                    "batch_id": [batch_of.get(m.msg_id, "none") for m in fresh],
                    "committed_at": [now] * len(fresh),
                },
                schema_overrides={"stream_seq": pl.Int64, "rows": pl.Int64},
            ),
        )
    result.seconds = time.perf_counter() - t0
    return result


def to_in_message(msg: Any) -> InMessage | None:
    """A fetched NATS message as an ``InMessage`` (None when it is not a CloudEvent)."""
    try:
        event = busmod.decode(msg)
    except EventFormatError as exc:
        log.warning("%s", exc)
        return None
    headers = msg.headers or {}
    msg_id = headers.get(busmod.MSG_ID_HEADER) or busmod.msg_id(event)
    return InMessage(msg_id, int(msg.metadata.sequence.stream), msg.subject, event)


async def run_writer(
    settings: Settings,
    store: Store,
    *,
    stop: asyncio.Event,
    on_commit: Callable[[WriteResult], None] | None = None,
    fault_pause_s: float = 0.0,
) -> None:
    """Consume ``<prefix>.in.>`` into the store until ``stop`` is set (see module doc)."""
    bus = await Bus.connect(settings)
    try:
        await bus.ensure_streams()
        sub = await bus.pull(
            busmod.IN_ALL,
            durable=f"{settings.bus_prefix}-writer",
            ack_wait_s=settings.writer_ack_wait_s,
        )
        while not stop.is_set():
            try:
                fetched = await sub.fetch(
                    settings.writer_max_batch_msgs, timeout=settings.writer_max_batch_s
                )
            except TimeoutError:
                continue
            except Exception as exc:  # a disconnect while fetching: wait for the reconnect
                log.warning("writer fetch: %r", exc)
                await asyncio.sleep(0.5)
                continue
            messages = [m for m in (to_in_message(f) for f in fetched) if m is not None]
            try:
                result = await asyncio.to_thread(
                    write_messages,
                    store,
                    settings,
                    messages,
                    stream=bus.names.stream_in,
                    fault_pause_s=fault_pause_s,
                )
            except Exception as exc:  # nothing acked: the batch comes back after ack_wait
                log.error("writer: batch of %d not written: %r", len(fetched), exc)
                await asyncio.sleep(1.0)
                continue
            for f in fetched:
                await f.ack()
            if on_commit is not None:
                on_commit(result)
    finally:
        await bus.close()
