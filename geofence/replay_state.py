"""Replay state: what every panel shows when the analyst seeks to time ``t``.

Like Foxglove's playback, each stream shows its latest message at or before ``t`` (inclusive),
per key (``technician_id`` for GPS, ``device_id`` + ``metric`` for IoT, ...), with how old it is
and whether that age exceeds the stream's staleness limit, plus an optional trail of the
samples in ``[t - trail, t]``.

* ``state_at`` answers one seek; ``states_at`` answers many at once with one ``join_asof`` per
  stream, so the dashboard can precompute a playback table and scrub on the client.
* Input order does not matter (streams are sorted by time first). When several samples of one
  key share a timestamp, the one that comes last in the input wins.
* Pure: frames in, frames out. A stream's time column (``ts_col``, default ``"ts"``) must be a
  polars ``Datetime``; ``t`` must be time-zone aware exactly when that column is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

import polars as pl

from geofence.errors import GeofenceError

StreamStatus = Literal["ok", "partly_stale", "stale", "no_sample_yet"]

STALENESS_COL: Final = "staleness_s"
STALE_COL: Final = "stale"
REPLAY_TS_COL: Final = "replay_ts"


class ReplayStateError(GeofenceError, ValueError):
    """A replay input is malformed: missing column, wrong dtype, or a time-zone mismatch."""


@dataclass(frozen=True, slots=True)
class StreamState:
    """One stream at one replay time.

    ``latest`` has one row per key (the stream's columns plus ``staleness_s`` and ``stale``),
    sorted by key; ``trail`` holds the samples in ``[t - trail, t]`` sorted by time (empty when
    no trail was asked for). ``status`` is ``no_sample_yet`` (nothing at or before ``t``),
    ``stale`` (every key stale), ``partly_stale`` (some) or ``ok``.
    """

    stream: str
    status: StreamStatus
    latest: pl.DataFrame
    trail: pl.DataFrame


def _check_stream(name: str, frame: pl.DataFrame, ts_col: str, keys: Sequence[str]) -> pl.Datetime:
    missing = [c for c in (ts_col, *keys) if c not in frame.columns]
    if missing:
        raise ReplayStateError(
            f"stream {name!r}: column(s) {missing} missing; columns are {frame.columns}"
        )
    dtype = frame.schema[ts_col]
    if not isinstance(dtype, pl.Datetime):
        raise ReplayStateError(f"stream {name!r}: column {ts_col!r} is {dtype}, expected Datetime")
    n_null = frame.get_column(ts_col).null_count()
    if n_null:
        first = frame.with_row_index("_row").filter(pl.col(ts_col).is_null())["_row"][0]
        raise ReplayStateError(
            f"stream {name!r} row {first}: {ts_col}=null ({n_null} such rows); a sample "
            "without a time cannot be replayed"
        )
    return dtype


def _time_literal(name: str, t: datetime, dtype: pl.Datetime) -> pl.Expr:
    column_aware = dtype.time_zone is not None
    if column_aware != (t.tzinfo is not None):
        raise ReplayStateError(
            f"stream {name!r}: replay time {t.isoformat()} is "
            f"{'aware' if t.tzinfo else 'naive'} but the time column is "
            f"{dtype} ({'aware' if column_aware else 'naive'}); use the same kind"
        )
    return pl.lit(t).cast(dtype)


def _check_options(
    streams: Mapping[str, pl.DataFrame],
    max_staleness: Mapping[str, timedelta] | None,
    key_cols: Mapping[str, Sequence[str]] | None,
) -> None:
    for option, mapping in (("max_staleness", max_staleness), ("key_cols", key_cols)):
        unknown = sorted(set(mapping or {}) - set(streams))
        if unknown:
            raise ReplayStateError(
                f"{option} names stream(s) {unknown} that are not among {sorted(streams)}"
            )


def _ordered(frame: pl.DataFrame, ts_col: str) -> pl.DataFrame:
    """Sorted by time, stable: equal timestamps keep their input order."""
    return frame.sort(ts_col, maintain_order=True)


def _with_staleness(
    frame: pl.DataFrame, now: pl.Expr, ts_col: str, limit: timedelta | None
) -> pl.DataFrame:
    staleness = (now - pl.col(ts_col)).dt.total_microseconds() / 1e6
    stale = pl.lit(False) if limit is None else staleness > limit.total_seconds()
    return frame.with_columns(staleness.alias(STALENESS_COL), stale.alias(STALE_COL))


def _status(latest: pl.DataFrame) -> StreamStatus:
    if latest.is_empty():
        return "no_sample_yet"
    n_stale = int(latest.get_column(STALE_COL).sum())
    if n_stale == 0:
        return "ok"
    return "stale" if n_stale == latest.height else "partly_stale"


def state_at(
    streams: Mapping[str, pl.DataFrame],
    t: datetime,
    *,
    trail: timedelta | None = None,
    max_staleness: Mapping[str, timedelta] | None = None,
    key_cols: Mapping[str, Sequence[str]] | None = None,
    ts_col: str = "ts",
) -> dict[str, StreamState]:
    """Every stream's state at replay time ``t`` (latest per key at or before ``t``).

    ``max_staleness[name]`` is the age above which a sample is flagged stale (no limit when
    absent); ``key_cols[name]`` the columns that identify one source (one latest row for the
    whole stream when absent).
    """
    _check_options(streams, max_staleness, key_cols)
    if trail is not None and trail < timedelta(0):
        raise ReplayStateError(f"trail={trail} is negative")
    states: dict[str, StreamState] = {}
    for name, frame in streams.items():
        keys = list((key_cols or {}).get(name, ()))
        dtype = _check_stream(name, frame, ts_col, keys)
        now = _time_literal(name, t, dtype)
        seen = _ordered(frame.filter(pl.col(ts_col) <= now), ts_col)
        if keys:
            latest = seen.unique(subset=keys, keep="last", maintain_order=True).sort(
                keys, nulls_last=True, maintain_order=True
            )
        else:
            latest = seen.tail(1)
        latest = _with_staleness(latest, now, ts_col, (max_staleness or {}).get(name))
        if trail is None:
            trail_frame = seen.clear()
        else:
            trail_frame = seen.filter(pl.col(ts_col) >= now - pl.lit(trail))
        states[name] = StreamState(
            stream=name, status=_status(latest), latest=latest, trail=trail_frame
        )
    return states


def states_at(
    streams: Mapping[str, pl.DataFrame],
    ts_list: Sequence[datetime],
    *,
    max_staleness: Mapping[str, timedelta] | None = None,
    key_cols: Mapping[str, Sequence[str]] | None = None,
    ts_col: str = "ts",
) -> dict[str, pl.DataFrame]:
    """``state_at``'s ``latest`` for many replay times at once, one ``join_asof`` per stream.

    Each result frame has ``replay_ts`` first, then the stream's columns, ``staleness_s`` and
    ``stale``; one row per (replay time, key) that has a sample at or before that time, sorted
    by ``replay_ts`` then key. Filtering it to ``replay_ts == t`` gives exactly
    ``state_at(...)[name].latest``. Trails are left to the client: it holds the stream anyway.
    """
    _check_options(streams, max_staleness, key_cols)
    result: dict[str, pl.DataFrame] = {}
    for name, frame in streams.items():
        keys = list((key_cols or {}).get(name, ()))
        dtype = _check_stream(name, frame, ts_col, keys)
        grid = pl.select(
            pl.concat_list([_time_literal(name, t, dtype) for t in ts_list]).alias(REPLAY_TS_COL)
            if ts_list
            else pl.lit([], dtype=pl.List(dtype)).alias(REPLAY_TS_COL)
        ).explode(REPLAY_TS_COL)
        grid = grid.drop_nulls().unique().sort(REPLAY_TS_COL)
        # Equal timestamps per key: keep the last in input order, then a plain time sort.
        right = _ordered(
            _ordered(frame, ts_col).unique(
                subset=[*keys, ts_col], keep="last", maintain_order=True
            ),
            ts_col,
        )
        if keys:
            grid = grid.join(right.select(keys).unique(), how="cross").sort(REPLAY_TS_COL)
        joined = grid.join_asof(
            right,
            left_on=REPLAY_TS_COL,
            right_on=ts_col,
            by=keys or None,
            strategy="backward",
            coalesce=False,
            check_sortedness=False,
        )
        joined = joined.filter(pl.col(ts_col).is_not_null()).select(REPLAY_TS_COL, *frame.columns)
        joined = _with_staleness(
            joined, pl.col(REPLAY_TS_COL), ts_col, (max_staleness or {}).get(name)
        )
        result[name] = joined.sort([REPLAY_TS_COL, *keys], nulls_last=True, maintain_order=True)
    return result
