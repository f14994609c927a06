"""Tickets onto H3 cells, ring geometry and rolling k-ring counts over many times at once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import numpy as np
import polars as pl
import polars_h3 as plh3
from scipy import sparse

from geofence.clusters.rules import ClusterInputError
from geofence.clusters.types import (
    EPOCH,
    MAX_BLOCK,
    SKIP_INVALID_LOCATION,
    SKIP_MISSING_LOCATION,
    SKIP_MISSING_TAG,
    SKIP_REASONS,
    TICKET_COLUMNS,
    CellArray,
    IntArray,
)

# --------------------------------------------------------------------------- tickets


def cell_column(resolution: int) -> str:
    """Name of the H3 cell column (UInt64) that ``prepare_tickets`` adds per resolution."""
    return f"h3_r{resolution}"


def _require_columns(frame: pl.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ClusterInputError(f"{where}: missing column(s) {missing}; got {frame.columns}")


def prepare_tickets(
    tickets: pl.DataFrame, resolutions: Sequence[int]
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Add ``h3_r{res}`` cells and split off tickets that cannot be clustered.

    Named predicates, first failing one wins: ``missing_location`` (lat or lon null/NaN),
    ``invalid_location`` (outside [-90, 90] x [-180, 180]), ``missing_tag`` (null or empty).
    Returns ``(usable, skipped_counts)``; ``skipped_counts`` has every reason, zeros included.
    """
    _require_columns(tickets, TICKET_COLUMNS, "prepare_tickets(tickets)")
    lat, lon = pl.col("lat"), pl.col("lon")
    reason = (
        pl.when(lat.is_null() | lon.is_null() | lat.is_nan() | lon.is_nan())
        .then(pl.lit(SKIP_MISSING_LOCATION))
        .when(~lat.is_between(-90.0, 90.0) | ~lon.is_between(-180.0, 180.0))
        .then(pl.lit(SKIP_INVALID_LOCATION))
        .when(pl.col("tag").is_null() | (pl.col("tag").str.len_bytes() == 0))
        .then(pl.lit(SKIP_MISSING_TAG))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    stamped = tickets.with_columns(_skip_reason=reason)
    counts = stamped.group_by("_skip_reason").len().drop_nulls("_skip_reason")
    found = dict(zip(counts["_skip_reason"].to_list(), counts["len"].to_list(), strict=True))
    skipped = {r: int(found.get(r, 0)) for r in SKIP_REASONS}
    usable = (
        stamped.filter(pl.col("_skip_reason").is_null())
        .drop("_skip_reason")
        .with_columns(
            plh3.latlng_to_cell("lat", "lon", res).alias(cell_column(res))
            for res in sorted(set(resolutions))
        )
    )
    return usable, skipped


def _with_cells(tickets: pl.DataFrame, resolution: int) -> pl.DataFrame:
    """Tickets with a usable location and their cell at ``resolution`` (reuses the column)."""
    name = cell_column(resolution)
    if name in tickets.columns:
        return tickets.filter(pl.col(name).is_not_null())
    _require_columns(tickets, ("lat", "lon"), "tickets")
    located = tickets.filter(
        pl.col("lat").is_between(-90.0, 90.0) & pl.col("lon").is_between(-180.0, 180.0)
    )
    return located.with_columns(plh3.latlng_to_cell("lat", "lon", resolution).alias(name))


def _to_us(moment: datetime, what: str) -> int:
    if moment.tzinfo is None:
        raise ClusterInputError(f"{what}={moment.isoformat()} is naive; give a UTC-aware time")
    return (moment - EPOCH) // timedelta(microseconds=1)


def _window_us(window: timedelta) -> int:
    return window // timedelta(microseconds=1)


def _us_to_datetime_series(values: IntArray, name: str) -> pl.Series:
    return pl.Series(name, values, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))


# --------------------------------------------------------------------------- ring geometry


@dataclass(frozen=True, slots=True, eq=False)
class _Ring:
    """Sparse incidence between distinct source cells and the centres whose ring holds them."""

    sources: CellArray  # sorted unique
    centres: CellArray  # sorted unique
    incidence: sparse.csr_matrix  # centres x sources, ones


def _ring(source_cells: CellArray, k_ring: int, only_centres: CellArray | None) -> _Ring:
    pairs = (
        pl.DataFrame({"source": pl.Series(source_cells, dtype=pl.UInt64)})
        .with_row_index("source_idx")
        .with_columns(centre=plh3.grid_disk("source", k_ring))
        .explode("centre")
    )
    if only_centres is not None:
        pairs = pairs.filter(
            pl.col("centre").is_in(pl.Series(only_centres, dtype=pl.UInt64).implode())
        )
    pairs = pairs.with_columns(centre_idx=pl.col("centre").rank("dense").cast(pl.Int64) - 1)
    centres = pairs["centre"].unique().sort().to_numpy().astype(np.uint64)
    rows = pairs["centre_idx"].to_numpy()
    cols = pairs["source_idx"].to_numpy().astype(np.int64)
    incidence = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int64), (rows, cols)),
        shape=(len(centres), len(source_cells)),
    )
    return _Ring(sources=source_cells, centres=centres, incidence=incidence)


def ring_cells(cells: pl.Series | Sequence[int], k_ring: int) -> CellArray:
    """Sorted distinct cells within ``k_ring`` of any of ``cells``."""
    series = pl.Series("cell", cells, dtype=pl.UInt64)
    disk = pl.select(plh3.grid_disk(series, k_ring).explode().unique().sort())
    return disk.to_series().to_numpy().astype(np.uint64)


# --------------------------------------------------------------------------- rolling counts


@dataclass(frozen=True, slots=True, eq=False)
class _CountBlock:
    centres: CellArray
    eval_us: IntArray
    counts: IntArray  # centres x eval times


def _tag_events(
    tickets: pl.DataFrame,
    *,
    tag: str,
    resolution: int,
    start_us: int,
    end_us: int,
    source_filter: CellArray | None,
) -> pl.DataFrame:
    """``(cell, ts_us)`` of tickets with ``tag`` and ``start_us < ts <= end_us``."""
    _require_columns(tickets, ("created_ts", "tag"), "tickets")
    located = _with_cells(tickets, resolution)
    name = cell_column(resolution)
    ts = pl.col("created_ts").dt.epoch("us")
    predicate = (ts > start_us) & (ts <= end_us) & (pl.col("tag") == tag)
    if source_filter is not None:
        predicate = predicate & pl.col(name).is_in(
            pl.Series(source_filter, dtype=pl.UInt64).implode()
        )
    return located.lazy().filter(predicate).select(cell=pl.col(name), ts_us=ts).collect()


def _count_blocks(
    tickets: pl.DataFrame,
    *,
    tag: str,
    resolution: int,
    k_ring: int,
    window: timedelta,
    eval_us: IntArray,
    cells: CellArray | None,
) -> Iterator[_CountBlock]:
    """Yield dense ring counts, chunked over evaluation times to bound memory."""
    if len(eval_us) == 0:
        return
    w_us = _window_us(window)
    sources_needed = None if cells is None else ring_cells(pl.Series(cells), k_ring)
    events = _tag_events(
        tickets,
        tag=tag,
        resolution=resolution,
        start_us=int(eval_us[0]) - w_us,
        end_us=int(eval_us[-1]),
        source_filter=sources_needed,
    )
    if events.height == 0:
        return
    sources = events["cell"].unique().sort().to_numpy().astype(np.uint64)
    ring = _ring(sources, k_ring, cells)
    if len(ring.centres) == 0:
        return
    order = np.argsort(events["ts_us"].to_numpy(), kind="stable")
    ts_sorted = events["ts_us"].to_numpy()[order]
    src_sorted = np.searchsorted(sources, events["cell"].to_numpy().astype(np.uint64))[order]
    evals_per_block = max(1, MAX_BLOCK // (2 * max(len(sources), len(ring.centres))))
    for lo in range(0, len(eval_us), evals_per_block):
        chunk = eval_us[lo : lo + evals_per_block]
        starts = chunk - w_us
        bounds = np.union1d(chunk, starts)
        first = np.searchsorted(ts_sorted, bounds[0], side="right")
        last = np.searchsorted(ts_sorted, bounds[-1], side="right")
        # ticket i falls in bin j when bounds[j-1] < ts <= bounds[j]
        bins = np.searchsorted(bounds, ts_sorted[first:last], side="left")
        flat = src_sorted[first:last] * len(bounds) + bins
        hist = np.bincount(flat, minlength=len(sources) * len(bounds)).reshape(
            len(sources), len(bounds)
        )
        cumulative = np.cumsum(ring.incidence @ hist, axis=1)
        counts = (
            cumulative[:, np.searchsorted(bounds, chunk)]
            - cumulative[:, np.searchsorted(bounds, starts)]
        )
        yield _CountBlock(centres=ring.centres, eval_us=chunk, counts=counts)


def _eval_array(eval_times: Sequence[datetime] | pl.Series) -> IntArray:
    if isinstance(eval_times, pl.Series):
        if not isinstance(eval_times.dtype, pl.Datetime) or eval_times.dtype.time_zone is None:
            raise ClusterInputError(
                f"eval_times has dtype {eval_times.dtype}; expected a tz-aware Datetime"
            )
        values = eval_times.dt.epoch("us").to_numpy()
    else:
        values = np.array([_to_us(t, "eval_times[]") for t in eval_times], dtype=np.int64)
    return np.unique(values.astype(np.int64))


def rolling_ring_counts(
    tickets: pl.DataFrame,
    *,
    tag: str,
    resolution: int,
    k_ring: int,
    window: timedelta,
    eval_times: Sequence[datetime] | pl.Series,
    cells: pl.Series | Sequence[int] | None = None,
    min_count: int = 1,
) -> pl.DataFrame:
    """Tickets tagged ``tag`` in each cell and its ``k_ring`` within ``(t - window, t]``.

    Returns ``cell`` (UInt64), ``eval_ts`` (Datetime[us, UTC]), ``count`` (Int64) for every
    pair with ``count >= min_count`` (sorted by cell, eval_ts). ``cells`` restricts the
    centres that are evaluated (the incremental path); only tickets that can reach them are
    read. ``tickets`` may be raw or come from ``prepare_tickets`` (its cell column is reused).
    """
    wanted = None if cells is None else np.unique(np.asarray(cells, dtype=np.uint64))
    parts: list[pl.DataFrame] = []
    for block in _count_blocks(
        tickets,
        tag=tag,
        resolution=resolution,
        k_ring=k_ring,
        window=window,
        eval_us=_eval_array(eval_times),
        cells=wanted,
    ):
        rows, cols = np.nonzero(block.counts >= min_count)
        parts.append(
            pl.DataFrame(
                {
                    "cell": pl.Series(block.centres[rows], dtype=pl.UInt64),
                    "eval_ts": _us_to_datetime_series(block.eval_us[cols], "eval_ts"),
                    "count": pl.Series(block.counts[rows, cols], dtype=pl.Int64),
                }
            )
        )
    if not parts:
        return pl.DataFrame(schema=_COUNT_SCHEMA)
    return pl.concat(parts).sort("cell", "eval_ts")


_COUNT_SCHEMA: Final = pl.Schema(
    {
        "cell": pl.UInt64(),
        "eval_ts": pl.Datetime("us", "UTC"),
        "count": pl.Int64(),
    }
)
