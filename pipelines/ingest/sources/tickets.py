"""311-style ticket feeds: Open311 GeoReport v2 JSON and Socrata CSV/JSON exports.

One feed file holds both tickets and their lifecycle, so each format is registered for two
kinds: ``tickets`` (one row per request) and ``events`` (``created`` and, when the request is
closed, ``closed``). ``ingest_ticket_feed`` ingests one file as both, in order:

1. the ``tickets`` batch (its own transaction; projected or out-of-range points are
   quarantined there by the named rules, never silently used);
2. the ``events`` batch of the same file, told which of its tickets are in the store: events of
   a ticket that was quarantined are quarantined too (rule ``unknown_ticket``), so no event
   points at a missing ticket.

Both batches are keyed by the file's hash, so re-ingesting the same file adds nothing.

Ids: ``ticket_id = "<source>:<request id>"`` where source is ``--source-name`` or the format;
``event_id = "<ticket_id>:<event_type>"``. The Open311 closing time is the ``closed`` note's
time when the request has notes (Chicago's ``updated_datetime`` is often touched a year after
closure), else ``updated_datetime`` for a ``closed`` status. A Socrata channel field
(NYC's ``open_data_channel_type``) becomes the ticket's ``channel``; neither format has a
report time separate from the creation, so ``reported_ts`` stays empty. Socrata times like
``06/26/2018 10:58:54 AM`` are rewritten to ISO; they carry no zone, so pass ``--tz``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.errors import SourceFormatError
from pipelines.ingest.contract import QUARANTINE_SCHEMA, IngestOptions, ParsedBatch
from pipelines.ingest.kinds import KindSpec, kind_spec
from pipelines.ingest.machine import IngestResult, ingest_file
from pipelines.ingest.sources import register
from pipelines.ingest.sources.text import load_json, read_delimited
from pipelines.settings import Settings
from pipelines.store.gateway import Store

SOCRATA_FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("unique_key", "service_request_id", "ticket_id", "case_id", "request_id", "id"),
    "created": (
        "created_date",
        "requested_datetime",
        "ticket_created_date_time",
        "created_datetime",
        "open_date",
    ),
    "closed": ("closed_date", "ticket_closed_date_time", "closed_datetime", "close_date"),
    "type": ("complaint_type", "service_name", "issue_type", "request_type", "type"),
    "address": ("incident_address", "street_address", "address"),
    "region": ("borough", "neighborhood_district", "district"),
    "lat": ("latitude", "lat"),
    "lon": ("longitude", "long", "lon", "lng"),
    "status": ("status", "ticket_status"),
    "agency": ("agency", "agency_responsible"),
    # NYC 311's channel (PHONE, ONLINE, MOBILE, ...): kept lower-cased as the ticket's channel.
    "channel": ("open_data_channel_type", "channel_type", "channel", "method_received"),
}
_US_TIME = "%m/%d/%Y %I:%M:%S %p"


class TicketIdSet(frozenset[str]):
    """Ticket ids known to the store; prints short in the batch's options record."""

    def __str__(self) -> str:
        return f"<{len(self)} ticket ids>"


def slugify(text: str | None) -> str | None:
    if text is None:
        return None
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def _records(payload: Any, path: Path, what: str) -> list[Any]:
    if isinstance(payload, dict):
        for key in ("requests", "service_requests", "data", "records"):
            if isinstance(payload.get(key), list):
                return list(payload[key])
    if not isinstance(payload, list):
        raise SourceFormatError(
            f"{path}: expected {what} (a JSON list of requests), "
            f"found a JSON {type(payload).__name__}"
        )
    return payload


# -- uniform records ---------------------------------------------------------------------
@dataclass
class Feed:
    """Per-record text fields in feed order; ``bad`` maps record number → parse problem."""

    rows: list[dict[str, str | None]]
    numbers: list[int]
    bad: dict[int, tuple[str, str]]
    rows_read: int


def _open311_feed(path: Path) -> Feed:
    records = _records(load_json(path, "Open311 GeoReport v2 JSON"), path, "Open311 JSON")
    rows, numbers, bad = [], [], {}
    for n, rec in enumerate(records, start=1):
        if not isinstance(rec, dict):
            bad[n] = ("request is not a JSON object", _text(rec) or "null")
            continue
        closed = None
        notes = rec.get("notes")
        if isinstance(notes, list):
            closed = next(
                (
                    n_.get("datetime")
                    for n_ in notes
                    if isinstance(n_, dict) and n_.get("type") == "closed"
                ),
                None,
            )
        status = str(rec.get("status") or "").lower()
        if closed is None and status == "closed":
            closed = rec.get("updated_datetime")
        rows.append(
            {
                "id": _text(rec.get("service_request_id")),
                "created": _text(rec.get("requested_datetime")),
                "closed": _text(closed),
                "type": _text(rec.get("service_name")),
                "address": _text(rec.get("address")),
                "region": None,
                "lat": _text(rec.get("lat")),
                "lon": _text(rec.get("long")),
                "status": _text(rec.get("status")),
                "agency": _text(rec.get("agency_responsible")),
                "note": _text(rec.get("status_notes")),
            }
        )
        numbers.append(n)
    return Feed(rows, numbers, bad, len(records))


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def _pick(keys: Iterable[str]) -> dict[str, str]:
    present = list(keys)
    return {
        canon: next(a for a in aliases if a in present)
        for canon, aliases in SOCRATA_FIELDS.items()
        if any(a in present for a in aliases)
    }


def _socrata_feed(path: Path) -> Feed:
    with path.open("rb") as fh:
        head = fh.read(64).lstrip()
    if head[:1] in (b"[", b"{"):
        records = _records(load_json(path, "Socrata JSON"), path, "Socrata JSON")
        rows, numbers, bad = [], [], {}
        for n, rec in enumerate(records, start=1):
            if not isinstance(rec, dict):
                bad[n] = ("record is not a JSON object", _text(rec) or "null")
                continue
            snake = {_snake(k): v for k, v in rec.items()}
            pick = _pick(snake)
            rows.append({canon: _text(snake.get(src)) for canon, src in pick.items()})
            numbers.append(n)
        return Feed(rows, numbers, bad, len(records))
    table = read_delimited(path)
    frame = table.frame.rename({c: _snake(c) for c in table.frame.columns if c != "_row"})
    pick = _pick(frame.columns)
    rows = frame.select([pl.col(src).alias(canon) for canon, src in pick.items()]).to_dicts()
    bad = {r["_row"]: (r["reason"], r["raw"]) for r in table.rejected.iter_rows(named=True)}
    return Feed(rows, frame["_row"].to_list(), bad, table.rows_read)


def _feed(path: Path, fmt: str) -> Feed:
    feed = _open311_feed(path) if fmt == "open311" else _socrata_feed(path)
    if feed.rows and not any(r.get("id") for r in feed.rows):
        raise SourceFormatError(
            f"{path}: no request id field found; expected one of {', '.join(SOCRATA_FIELDS['id'])}"
        )
    return feed


def _iso(col: str) -> pl.Expr:
    text = pl.col(col).str.strip_chars()
    us = text.str.strptime(pl.Datetime("us"), _US_TIME, strict=False).dt.strftime(
        "%Y-%m-%dT%H:%M:%S"
    )
    return pl.coalesce(us, text).alias(col)


def _frame(feed: Feed) -> pl.DataFrame:
    cols = (
        "id",
        "created",
        "closed",
        "type",
        "address",
        "region",
        "lat",
        "lon",
        "status",
        "agency",
        "note",
        "channel",
    )
    frame = pl.DataFrame(
        [{c: r.get(c) for c in cols} for r in feed.rows], schema=dict.fromkeys(cols, pl.String)
    )
    return frame.with_columns(
        pl.Series("_rec", feed.numbers, dtype=pl.Int64), _iso("created"), _iso("closed")
    )


def _rejects(feed: Feed, path: Path, numbers: Mapping[int, int]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "_row": numbers[n],
                "rule": "parse",
                "field": None,
                "reason": f"{path.name} record {n}: {reason}",
                "raw": raw[:2000],
            }
            for n, (reason, raw) in sorted(feed.bad.items())
        ],
        schema=QUARANTINE_SCHEMA,
    )


# -- parsers -----------------------------------------------------------------------------
def _source(opts: IngestOptions, fmt: str) -> str:
    return opts.source_name or fmt


def parse_tickets(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    fmt = opts.fmt or "socrata"
    feed = _feed(path, fmt)
    src = _source(opts, fmt)
    frame = _frame(feed).select(
        pl.col("_rec").alias("_row"),
        pl.when(pl.col("id").is_not_null())
        .then(pl.format("{}:{}", pl.lit(src), pl.col("id")))
        .alias("ticket_id"),
        pl.lit(src).alias("source"),
        pl.col("id").alias("external_id"),
        pl.col("address").str.replace_all(r"\s+", " "),
        pl.col("lat"),
        pl.col("lon"),
        pl.col("type").map_elements(slugify, return_dtype=pl.String).alias("tag"),
        pl.col("type").alias("category"),
        pl.col("region"),
        pl.col("created").alias("created_ts"),
        pl.col("channel").str.strip_chars().str.to_lowercase(),
    )
    return ParsedBatch(frame, _rejects(feed, path, {n: n for n in feed.bad}), feed.rows_read, fmt)


def parse_events(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    """``created`` per request, ``closed`` when it has a closing time; see the module doc."""
    fmt = opts.fmt or "socrata"
    feed = _feed(path, fmt)
    src = _source(opts, fmt)
    base = _frame(feed).with_columns(
        pl.when(pl.col("id").is_not_null())
        .then(pl.format("{}:{}", pl.lit(src), pl.col("id")))
        .alias("ticket_id")
    )
    created = base.select(
        "_rec",
        "ticket_id",
        pl.lit("created").alias("event_type"),
        pl.col("created").alias("ts"),
        pl.col("agency").alias("actor"),
        pl.lit(None, pl.String).alias("note"),
    )
    closed = base.filter(pl.col("closed").is_not_null() & (pl.col("closed") != "")).select(
        "_rec",
        "ticket_id",
        pl.lit("closed").alias("event_type"),
        pl.col("closed").alias("ts"),
        pl.col("agency").alias("actor"),
        pl.col("note"),
    )
    events = pl.concat([created, closed]).sort("_rec", "event_type", descending=[False, True])
    events = events.with_columns(
        pl.format("{}:{}", pl.col("ticket_id"), pl.col("event_type")).alias("event_id"),
        pl.lit(src).alias("source"),
    )
    # Rows: the events in record order, then one row per record that could not be read.
    events = events.with_row_index("_row", offset=1).with_columns(pl.col("_row").cast(pl.Int64))
    numbers = {n: events.height + i for i, n in enumerate(sorted(feed.bad), start=1)}
    rejects = _rejects(feed, path, numbers)
    known = opts.extra.get("known_tickets")
    if known is not None:
        orphan = events.filter(
            pl.col("ticket_id").is_not_null() & ~pl.col("ticket_id").is_in(sorted(known))
        )
        rejects = pl.concat(
            [
                rejects,
                orphan.select(
                    "_row",
                    pl.lit("unknown_ticket").alias("rule"),
                    pl.lit("ticket_id").alias("field"),
                    pl.format(
                        "{} record {}: ticket_id={} is not in the store (its ticket row was "
                        "quarantined)",
                        pl.lit(path.name),
                        pl.col("_rec"),
                        pl.col("ticket_id"),
                    ).alias("reason"),
                    pl.struct("ticket_id", "event_type", "ts").struct.json_encode().alias("raw"),
                ),
            ]
        )
        events = events.filter(~pl.col("_row").is_in(orphan["_row"].implode()))
    return ParsedBatch(events.drop("_rec"), rejects, events.height + rejects.height, fmt)


# -- one file, both kinds ----------------------------------------------------------------
@dataclass
class TicketFeedResult:
    tickets: IngestResult
    events: IngestResult


def ingest_ticket_feed(
    store: Store, path: Path, settings: Settings, opts: IngestOptions, *, replace: bool = False
) -> TicketFeedResult:
    """Ingest a feed file as tickets, then as their events (see the module docstring);
    ``replace`` swaps the earlier tickets and events batches of the file."""
    if opts.fmt not in ("open311", "socrata"):
        raise SourceFormatError(f"{path}: ticket feeds are open311 or socrata, got {opts.fmt!r}")
    tickets = ingest_file(store, "tickets", path, settings, opts, replace=replace)
    ids = parse_tickets(path, kind_spec("tickets"), opts).frame["ticket_id"].drop_nulls().to_list()
    known = store.query(
        "SELECT ticket_id FROM tickets WHERE ticket_id IN (SELECT unnest(?))", [ids]
    )["ticket_id"].to_list()
    ev_opts = dataclasses.replace(opts, extra={**opts.extra, "known_tickets": TicketIdSet(known)})
    events = ingest_file(store, "events", path, settings, ev_opts, replace=replace)
    return TicketFeedResult(tickets, events)


for _fmt in ("open311", "socrata"):
    register("tickets", _fmt, parse_tickets)
    register("events", _fmt, parse_events)
