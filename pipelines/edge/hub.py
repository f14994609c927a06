"""The hub side of edge sync: pull every site's sourced stream into the store, keep link state,
re-check what late data touches, and publish dispatch decisions and corrected verdicts.

``HubSync.run`` loops over three small steps:

1. ``_source_loop``  – one loop per ``SITE_<S>`` stream (found by name) and one for the
   hub's ``DISPATCH``: fetch a batch on the durable ``hub_store`` consumer, write it
   (``writer.write_events``: event time kept, duplicates absorbed), ack after the commit.
2. ``recheck``       – fixes that arrived now may fall in the evidence window of an "arrived"
   already judged: those arrivals are verified again with the arrivals runner's stages, and
   a verdict that changed is published on ``<prefix>.hub.arrival.verdict`` with its version
   raised (``verdict_publications`` keeps the history).
3. ``refresh_links`` – each site's link state, last sync and backlog into ``edge_links``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import polars as pl
from cloudevents.core.v1.event import CloudEvent
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from pipelines.arrivals.runner import (
    arrival_windows,
    load_arrivals,
    load_evidence,
    thresholds_from,
    verify,
    write_checks,
)
from pipelines.edge.events import (
    DISPATCH_STREAM,
    EventError,
    dispatch_event,
    verdict_event,
    verdict_subject,
)
from pipelines.edge.natsd import NatsServer, ServerSpec, free_port
from pipelines.edge.streams import (
    BUS_ERRORS,
    Handler,
    connect,
    drain_batch,
    durable_pull,
    ensure_hub_streams,
    publish_event,
)
from pipelines.edge.writer import WriteCounts, write_events
from pipelines.settings import Settings
from pipelines.store.gateway import Store

log = logging.getLogger(__name__)
PullSub = JetStreamContext.PullSubscription

DURABLE: Final = "hub_store"
LINK_DOWN_AFTER_S: Final = 5.0  # heartbeats keep `active` near 0.15 s while up
LINKS_EVERY_S: Final = 1.0  # new sites found and link state refreshed this often
SITE_PREFIX: Final = "SITE_"


@dataclass(frozen=True)
class HubConfig:
    data_dir: Path
    prefix: str = "fieldtrace"
    domain: str = "hub"
    client_port: int = field(default_factory=free_port)
    leaf_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)

    def server_spec(self) -> ServerSpec:
        return ServerSpec(
            name="hub",
            domain=self.domain,
            store_dir=self.data_dir / "jetstream",
            client_port=self.client_port,
            monitor_port=self.monitor_port,
            leaf_listen_port=self.leaf_port,
        )

    @property
    def leaf_url(self) -> str:
        return f"nats-leaf://127.0.0.1:{self.leaf_port}"


@dataclass
class SiteState:
    stream: str
    sub: JetStreamContext.PullSubscription
    last_sync_at: datetime | None = None
    last_event_ts: datetime | None = None
    synced: int = 0


class HubSync:
    """Pulls every site into ``store``; one instance per hub store (one writing process)."""

    def __init__(self, store: Store, settings: Settings, *, prefix: str = "fieldtrace") -> None:
        self.store = store
        self.settings = settings
        self.prefix = prefix
        self.sites: dict[str, SiteState] = {}
        self.dispatch_sub: JetStreamContext.PullSubscription | None = None
        self.published: list[CloudEvent] = []
        self._stopping = asyncio.Event()

    # -- loop -------------------------------------------------------------------------------
    async def run(self, nc: Client, *, batch: int = 256) -> None:
        """Every second: find new sites, keep one consumer loop per source, refresh links."""
        js = nc.jetstream(timeout=2)
        loops: dict[str, asyncio.Task[None]] = {}
        try:
            while not self._stopping.is_set():
                try:
                    await ensure_hub_streams(js, self.prefix)
                    await self.discover(js)
                    for name, (sub, write) in self._sources(js).items():
                        if name not in loops or loops[name].done():
                            loops[name] = asyncio.create_task(
                                self._source_loop(sub, write, batch), name=name
                            )
                    await self.refresh_links(js)
                except BUS_ERRORS as exc:
                    log.info("hub bus unavailable (%r); retrying", exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=LINKS_EVERY_S)
        finally:
            for task in loops.values():
                task.cancel()
            await asyncio.gather(*loops.values(), return_exceptions=True)

    def stop(self) -> None:
        self._stopping.set()

    async def discover(self, js: JetStreamContext) -> None:
        for info in await js.streams_info():
            name = str(info.config.name)
            if name.startswith(SITE_PREFIX) and name not in self.sites:
                self.sites[name] = SiteState(name, await durable_pull(js, name, DURABLE))
        if self.dispatch_sub is None:
            self.dispatch_sub = await durable_pull(js, DISPATCH_STREAM, DURABLE)

    def _sources(self, js: JetStreamContext) -> dict[str, tuple[PullSub, Handler]]:
        """Each source's subscription and its write step (a site's also re-checks)."""
        sources: dict[str, tuple[PullSub, Handler]] = {}
        for name, state in self.sites.items():

            async def write(events: list[CloudEvent], state: SiteState = state) -> None:
                counts = await asyncio.to_thread(
                    write_events, self.store, events, received_at=datetime.now(UTC)
                )
                state.last_sync_at = datetime.now(UTC)
                state.synced += len(events)
                if counts.last_event_ts is not None:
                    state.last_event_ts = counts.last_event_ts
                if counts.fixes:
                    await self.recheck(js, counts)

            sources[name] = (state.sub, write)
        if self.dispatch_sub is not None:

            async def write_dispatch(events: list[CloudEvent]) -> None:
                await asyncio.to_thread(
                    write_events, self.store, events, received_at=datetime.now(UTC)
                )

            sources[DISPATCH_STREAM] = (self.dispatch_sub, write_dispatch)
        return sources

    async def _source_loop(self, sub: PullSub, write: Handler, batch: int) -> None:
        """Fetch, write, ack, for ever; an idle source waits on its own fetch only."""
        while True:
            try:
                await drain_batch(sub, write, batch=batch, on_bad=self._bad)
            except BUS_ERRORS as exc:
                log.info("hub source unavailable (%r); retrying", exc)
                await asyncio.sleep(0.5)

    async def _bad(self, msg: Msg, exc: EventError) -> None:
        log.warning("hub sync: %s", exc)

    # -- late data ----------------------------------------------------------------------------
    async def recheck(self, js: JetStreamContext, counts: WriteCounts) -> None:
        events = await asyncio.to_thread(
            recheck_arrivals, self.store, self.settings, counts.fixes_frame, "late_fixes"
        )
        for event in events:
            await publish_event(js, verdict_subject(self.prefix), event)
            self.published.append(event)

    # -- link state ---------------------------------------------------------------------------
    async def refresh_links(self, js: JetStreamContext) -> None:
        rows = []
        now = datetime.now(UTC)
        for name, state in self.sites.items():
            info = await js.stream_info(name)
            source = info.sources[0] if info.sources else None
            consumer = await js.consumer_info(name, DURABLE)
            active_s = None
            if source is not None and source.active is not None and source.active >= 0:
                active_s = source.active / 1e9
            error = None if source is None or source.error is None else str(source.error)
            up = active_s is not None and active_s < LINK_DOWN_AFTER_S and error is None
            lag = 0 if source is None else int(source.lag or 0)
            backlog = lag + int(consumer.num_pending or 0) + int(consumer.num_ack_pending or 0)
            api = source.name if source is not None else ""
            rows.append(
                {
                    "site": name.removeprefix(SITE_PREFIX).lower().replace("_", "-"),
                    "domain": f"edge-{name.removeprefix(SITE_PREFIX).lower().replace('_', '-')}",
                    "stream": f"{name} <- {api}",
                    "link_state": "up" if up else "down",
                    "source_active_s": active_s,
                    "backlog": backlog,
                    "messages_synced": int(info.state.messages),
                    "last_sync_at": state.last_sync_at,
                    "last_event_ts": state.last_event_ts,
                    "error": error,
                    "updated_at": now,
                }
            )
        if rows:
            await asyncio.to_thread(write_links, self.store, pl.DataFrame(rows))


def write_links(store: Store, links: pl.DataFrame) -> None:
    """Upsert link rows; a missing last sync keeps the stored one."""
    with store.transaction() as tx:
        tx.register("_links", links)
        tx.execute(
            "INSERT INTO edge_links SELECT site, domain, stream, link_state, source_active_s, "
            "backlog, messages_synced, last_sync_at, last_event_ts, error, updated_at "
            "FROM _links ON CONFLICT (site) DO UPDATE SET domain = excluded.domain, "
            "stream = excluded.stream, link_state = excluded.link_state, "
            "source_active_s = excluded.source_active_s, backlog = excluded.backlog, "
            "messages_synced = excluded.messages_synced, "
            "last_sync_at = coalesce(excluded.last_sync_at, edge_links.last_sync_at), "
            "last_event_ts = coalesce(excluded.last_event_ts, edge_links.last_event_ts), "
            "error = excluded.error, updated_at = excluded.updated_at"
        )
        tx.unregister("_links")


def touched_arrivals(store: Store, settings: Settings, fixes: pl.DataFrame) -> pl.DataFrame:
    """The "arrived" events whose evidence window holds any of ``fixes`` (late data)."""
    if fixes.height == 0:
        return pl.DataFrame()
    th = thresholds_from(settings.thresholds)
    arrivals = load_arrivals(store)
    technicians = fixes["technician_id"].unique().to_list()
    arrivals = arrivals.filter(pl.col("technician_id").is_in(technicians))
    if arrivals.height == 0:
        return arrivals
    windows = pl.concat(
        [arrivals.select("event_id"), arrival_windows(arrivals, th)], how="horizontal"
    )
    hit = (
        windows.join(fixes.select("technician_id", "ts"), on="technician_id")
        .filter(pl.col("ts").is_between(pl.col("lo"), pl.col("hi")))
        .select("event_id")
        .unique()
    )
    return arrivals.join(hit, on="event_id", how="semi")


def recheck_arrivals(
    store: Store,
    settings: Settings,
    fixes: pl.DataFrame,
    trigger: str,
    *,
    now: datetime | None = None,
) -> list[CloudEvent]:
    """Verify the touched arrivals again; a changed verdict gets the next version."""
    arrivals = touched_arrivals(store, settings, fixes)
    return verify_and_version(store, settings, arrivals, trigger, now=now)


def verify_and_version(
    store: Store,
    settings: Settings,
    arrivals: pl.DataFrame,
    trigger: str,
    *,
    now: datetime | None = None,
) -> list[CloudEvent]:
    """Verify ``arrivals`` (the arrivals runner's stages), store the checks, and return the
    verdict events to publish: version 1 for a first verdict, +1 for one that changed."""
    if arrivals.height == 0:
        return []
    now = now or datetime.now(UTC)
    th = thresholds_from(settings.thresholds)
    fixes, uwb = load_evidence(store, arrivals, th)
    checks = verify(arrivals, fixes, uwb, th, now=now)
    write_checks(store, checks, computed_at=now)
    last = store.query_frames(
        "SELECT p.event_id, p.version, p.verdict, p.reason FROM verdict_publications p "
        "JOIN ids USING (event_id) QUALIFY row_number() OVER "
        "(PARTITION BY p.event_id ORDER BY p.version DESC) = 1",
        {"ids": checks.select("event_id")},
    )
    joined = checks.join(last, on="event_id", how="left", suffix="_last")
    changed = joined.filter(
        pl.col("version").is_null()
        | (pl.col("verdict") != pl.col("verdict_last"))
        | (pl.col("reason").ne_missing(pl.col("reason_last")))
    ).with_columns(new_version=(pl.col("version").fill_null(0) + 1).cast(pl.Int32))
    if changed.height == 0:
        return []
    rows = changed.select(
        "event_id",
        pl.col("new_version").alias("version"),
        "verdict",
        "reason",
        pl.lit(trigger).alias("trigger"),
        pl.lit(now).dt.convert_time_zone("UTC").alias("published_at"),
    )
    with store.transaction() as tx:
        tx.insert_frame("verdict_publications", rows)
    return [
        verdict_event(row, version=int(row["new_version"]), trigger=trigger)
        for row in changed.iter_rows(named=True)
    ]


async def publish_dispatch(
    js: JetStreamContext,
    prefix: str,
    *,
    site: str,
    ticket_id: str,
    technician_id: str,
    status: str = "assigned",
    ts: datetime | None = None,
) -> None:
    """A dispatch decision for a site's ticket, on the hub's ``DISPATCH`` stream."""
    event = dispatch_event(
        site=site,
        ticket_id=ticket_id,
        technician_id=technician_id,
        status=status,
        ts=ts or datetime.now(UTC),
    )
    await publish_event(js, f"{prefix}.dispatch.{site}.{status}", event)


async def run_hub(config: HubConfig, store: Store, settings: Settings) -> None:
    """Run the hub: its nats-server (leaf listener, domain ``hub``) and ``HubSync``."""
    import signal

    server = NatsServer(config.server_spec(), config.data_dir / "run", die_with_parent=True)
    server.start()
    nc = await connect(server.spec.client_url, name="fieldtrace-hub")
    sync = HubSync(store, settings, prefix=config.prefix)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, sync.stop)
    try:
        await sync.run(nc)
    finally:
        await nc.close()
        server.stop()
