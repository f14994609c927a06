"""JetStream streams of a site and of the hub, and the small bus helpers both sides share.

Sourcing and mirroring across domains follow ``live-protocols.md`` §3: on nats-server 2.9 only
Limits-retention streams can be sourced, so every stream here is Limits-retention with a long
de-duplication window (a site may be cut off for hours; the window covers re-sends).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final

import nats
from cloudevents.core.v1.event import CloudEvent
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    ExternalStream,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamSource,
)
from nats.js.errors import Error as JsError
from nats.js.errors import NotFoundError

from pipelines.edge.events import (
    DISPATCH_STREAM,
    VERDICT_STREAM,
    EventError,
    Names,
    decode,
    encode,
    verdict_subject,
)

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_S: Final = 24 * 3600.0
FETCH_TIMEOUT_S: Final = 0.5
ACK_WAIT_S: Final = 10.0  # an unacked message (a killed consumer) comes back after this
BUS_ERRORS: Final = (NatsError, JsError, asyncio.TimeoutError, OSError)


async def connect(url: str, *, name: str) -> Client:
    """A client that reconnects for ever (a site lives with its link going up and down)."""

    async def quiet(exc: Exception) -> None:  # a link that comes and goes is normal here
        log.info("bus %s: %r", name, exc)

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        connect_timeout=2,
        allow_reconnect=True,
        error_cb=quiet,
    )


def _limits(name: str, subjects: list[str] | None = None) -> StreamConfig:
    return StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.stream_info(str(config.name))
    except NotFoundError:
        await js.add_stream(config)


async def ensure_edge_streams(js: JetStreamContext, names: Names) -> None:
    """On the leaf: intake, the edge's own events, and the mirror of its dispatch decisions."""
    await ensure_stream(js, _limits(names.intake_stream, [names.intake(">")]))
    await ensure_stream(js, _limits(names.edge_stream, [names.edge(">")]))
    mirror = _limits(names.dispatch_mirror)
    mirror.mirror = StreamSource(
        name=DISPATCH_STREAM,
        filter_subject=names.dispatch(">"),
        external=ExternalStream(api=names.hub_api),
    )
    await ensure_stream(js, mirror)


async def ensure_hub_site_stream(hub_js: JetStreamContext, names: Names) -> None:
    """On the hub: ``SITE_<S>`` sourcing the edge's stream through the edge's domain API."""
    config = _limits(names.hub_stream)
    config.sources = [
        StreamSource(name=names.edge_stream, external=ExternalStream(api=names.edge_api))
    ]
    await ensure_stream(hub_js, config)


async def ensure_hub_streams(js: JetStreamContext, prefix: str) -> None:
    await ensure_stream(js, _limits(DISPATCH_STREAM, [f"{prefix}.dispatch.>"]))
    await ensure_stream(js, _limits(VERDICT_STREAM, [verdict_subject(prefix)]))


async def publish_event(js: JetStreamContext, subject: str, event: CloudEvent) -> bool:
    """Publish with ``Nats-Msg-Id`` and wait for the ack; True when the bus had it already."""
    payload, headers = encode(event)
    ack = await js.publish(subject, payload, headers=headers, timeout=5)
    return bool(ack.duplicate)


async def durable_pull(
    js: JetStreamContext, stream: str, durable: str
) -> JetStreamContext.PullSubscription:
    """A pull subscription on a durable consumer (created once; it keeps its position)."""
    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
        await js.add_consumer(
            stream, ConsumerConfig(durable_name=durable, ack_wait=ACK_WAIT_S, max_ack_pending=-1)
        )
    return await js.pull_subscribe_bind(durable=durable, stream=stream)


Handler = Callable[[list[CloudEvent]], Awaitable[None]]


async def drain_batch(
    sub: JetStreamContext.PullSubscription,
    handler: Handler,
    *,
    batch: int,
    on_bad: Callable[[Msg, EventError], Awaitable[None]],
    timeout_s: float = FETCH_TIMEOUT_S,
) -> int:
    """Fetch up to ``batch`` messages, hand the good events to ``handler``, ack after it.

    A message that is not a CloudEvent goes to ``on_bad`` and is acked (it would never get
    better). Returns how many messages were fetched (0 on an empty fetch)."""
    try:
        msgs = await sub.fetch(batch, timeout=timeout_s)
    except (TimeoutError, nats.errors.TimeoutError):
        return 0
    pairs: list[tuple[Msg, CloudEvent]] = []
    for msg in msgs:
        try:
            pairs.append((msg, decode(msg.data, _where(msg))))
        except EventError as exc:
            await on_bad(msg, exc)
    if pairs:
        try:
            await handler([event for _, event in pairs])
        except (KeyError, TypeError, ValueError):
            # one malformed event poisons its batch: write one by one, set aside the bad ones
            for msg, event in pairs:
                try:
                    await handler([event])
                except (KeyError, TypeError, ValueError) as exc:
                    await on_bad(msg, EventError(f"{_where(msg)}: data unusable ({exc!r})"))
    for msg in msgs:
        await msg.ack()
    return len(msgs)


def _where(msg: Msg) -> str:
    return f"{msg.subject} seq {msg.metadata.sequence.stream}"


def utcnow() -> datetime:
    return datetime.now(UTC)
