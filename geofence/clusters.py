"""Space-time clusters of tagged tickets on H3 rings, with a Poisson significance check.

The pipeline, one pure stage per function (polars frames and numpy arrays in and out):

1. ``load_rules``          validate rule mappings; an unknown tag fails at load time.
2. ``prepare_tickets``     stamp an H3 cell per resolution; unusable tickets are skipped and
                           counted by reason, never dropped silently.
3. ``fit_baseline``        expected tickets per cell ring and hour of week (empirical Bayes).
4. ``rolling_ring_counts`` tickets of one tag in a cell and its k-ring within
                           ``(t - window, t]``, for many cells and many evaluation times at once.
5. ``evaluate``            counts + baseline -> firing cells (threshold and/or significance).
6. ``merge_adjacent``      neighbouring firing cells -> one cluster with a stable key.
7. ``classify``            new | growing | steady | fading against the previous count.
8. ``explain``             the alert payload: cells, WKT, ticket ids, hourly counts, statistics.

Counting method
---------------
A ticket in cell ``s`` counts for every centre cell ``c`` whose k-ring contains ``s``; the
relation is symmetric, so the centres are ``grid_disk(s, k)``. Instead of exploding every
ticket (7x rows for k=1), only the *distinct* source cells are exploded into a sparse
centre x source incidence matrix ``A``. Tickets are binned into the intervals between the
sorted boundaries ``{t} U {t - window}`` (``searchsorted``), a dense source x bin histogram is
built with ``bincount``, multiplied by ``A`` and cumulated along time. The count at ``t`` is
then ``C[t] - C[t - window]`` - exact for any set of evaluation times, with cost
``O(tickets log bins + centres x bins)``.

Significance
------------
The expected count of a centre over a window is ``mu = rate_per_h(cell) * effective_hours``
where ``effective_hours`` sums a 168-value hour-of-week factor (UTC, mean 1) over the window,
and ``rate_per_h`` is an empirical-Bayes (Gamma-Poisson) posterior mean: the prior is fitted
by the method of moments to the history rates of all cells of the tag, and each cell's rate
is shrunk toward it by ``(n_c + a) / (T + b)``. Cells with no history get the prior mean, so
``mu`` is never 0; ``prior_floor_per_h`` bounds it from below when the tag has no history at
all. ``p = P(X >= observed) = poisson.sf(observed - 1, mu)`` and the recurrence interval is
``window / p`` reported in days.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, TypedDict, get_args

import h3
import numpy as np
import numpy.typing as npt
import polars as pl
import polars_h3 as plh3
import shapely.geometry
from scipy import sparse
from scipy.sparse import csgraph
from scipy.stats import poisson

from geofence.errors import GeofenceError

FireOn = Literal["rule", "significance", "both", "either"]
Trend = Literal["new", "growing", "steady", "fading"]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
CellArray = npt.NDArray[np.uint64]
BoolArray = npt.NDArray[np.bool_]

TICKET_COLUMNS: Final = ("ticket_id", "created_ts", "lat", "lon", "tag", "region")
SKIP_MISSING_LOCATION: Final = "missing_location"
SKIP_INVALID_LOCATION: Final = "invalid_location"
SKIP_MISSING_TAG: Final = "missing_tag"
SKIP_REASONS: Final = (SKIP_MISSING_LOCATION, SKIP_INVALID_LOCATION, SKIP_MISSING_TAG)

HOURS_PER_WEEK: Final = 168
_US_PER_HOUR: Final = 3_600_000_000
_US_PER_DAY: Final = 24 * _US_PER_HOUR
# 1970-01-01 was a Thursday: hour 0 of the epoch is hour 72 of a Monday-based week.
_EPOCH_HOUR_OF_WEEK: Final = 72
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Pseudo-count pulling a sparse hour-of-week bucket toward the flat profile.
_HOUR_OF_WEEK_PSEUDO_COUNT: Final = 5.0
# The empirical-Bayes prior may weigh at most this many history lengths.
_MAX_PRIOR_WEIGHT: Final = 10.0
# Largest dense centre x bin block materialised at once (int64 elements).
_MAX_BLOCK: Final = 1 << 23


class ClusterRuleError(GeofenceError, ValueError):
    """A cluster rule is malformed or names an unknown tag."""


class ClusterInputError(GeofenceError, ValueError):
    """A frame or value handed to the cluster pipeline is not usable."""


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class ClusterRule:
    """Raise a cluster when more than ``more_than`` tickets tagged ``tag`` fall in a cell and
    its ``k_ring`` within ``window`` (and/or when that count is improbable, see ``fire_on``).

    ``more_than=19`` fires at 20 tickets. ``p_value_max`` is inclusive: fires when
    ``p <= p_value_max``.
    """

    tag: str
    more_than: int
    version: str
    resolution: int = 7
    k_ring: int = 1
    window: timedelta = timedelta(hours=72)
    fire_on: FireOn = "rule"
    p_value_max: float = 0.001

    def __post_init__(self) -> None:
        problems = _rule_problems(self)
        if problems:
            raise ClusterRuleError(f"rule for tag {self.tag!r}: " + "; ".join(problems))

    @property
    def min_count_to_fire(self) -> int:
        """The smallest ring count that passes the threshold (``more_than + 1``)."""
        return self.more_than + 1


def _rule_problems(rule: ClusterRule) -> list[str]:
    problems: list[str] = []
    if not rule.tag:
        problems.append("tag is empty")
    if not rule.version:
        problems.append("version is empty")
    if not 0 <= rule.resolution <= 15:
        problems.append(f"resolution={rule.resolution} is outside [0, 15]")
    if rule.k_ring < 0:
        problems.append(f"k_ring={rule.k_ring} is negative")
    if rule.window <= timedelta(0):
        problems.append(f"window={rule.window} is not positive")
    if rule.more_than < 0:
        problems.append(f"more_than={rule.more_than} is negative")
    if rule.fire_on not in get_args(FireOn):
        problems.append(f"fire_on={rule.fire_on!r} is not one of {get_args(FireOn)}")
    if not 0.0 < rule.p_value_max < 1.0:
        problems.append(f"p_value_max={rule.p_value_max} is outside (0, 1)")
    return problems


_RULE_FIELDS: Final = frozenset(f.name for f in fields(ClusterRule))


def load_rules(mapping: Sequence[Mapping[str, object]], known_tags: set[str]) -> list[ClusterRule]:
    """Build and validate rules from plain mappings (e.g. parsed YAML).

    ``window`` may be a ``timedelta`` or given as ``window_h`` (hours). Every error names the
    rule index. An unknown tag fails here, not when the first ticket arrives.
    """
    rules: list[ClusterRule] = []
    seen: dict[tuple[str, int, int, str], int] = {}
    for index, raw in enumerate(mapping):
        where = f"cluster rule #{index}"
        values = dict(raw)
        if "window_h" in values:
            hours = values.pop("window_h")
            if not isinstance(hours, int | float) or isinstance(hours, bool):
                raise ClusterRuleError(f"{where}: window_h={hours!r} is not a number of hours")
            values["window"] = timedelta(hours=hours)
        unknown = sorted(set(values) - _RULE_FIELDS)
        if unknown:
            raise ClusterRuleError(
                f"{where}: unknown key(s) {unknown}; expected some of {sorted(_RULE_FIELDS)}"
            )
        missing = sorted({"tag", "more_than", "version"} - set(values))
        if missing:
            raise ClusterRuleError(f"{where}: missing required key(s) {missing}")
        tag = values["tag"]
        if tag not in known_tags:
            raise ClusterRuleError(
                f"{where}: tag={tag!r} is not a known tag; known tags are {sorted(known_tags)}"
            )
        try:
            rule = ClusterRule(**values)  # type: ignore[arg-type]
        except (ClusterRuleError, TypeError) as exc:
            raise ClusterRuleError(f"{where}: {exc}") from exc
        key = (rule.tag, rule.resolution, rule.k_ring, rule.version)
        if key in seen:
            raise ClusterRuleError(
                f"{where}: duplicates rule #{seen[key]} (tag, resolution, k_ring, version)={key}"
            )
        seen[key] = index
        rules.append(rule)
    return rules


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
    return (moment - _EPOCH) // timedelta(microseconds=1)


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
    evals_per_block = max(1, _MAX_BLOCK // (2 * max(len(sources), len(ring.centres))))
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


# --------------------------------------------------------------------------- baseline


@dataclass(frozen=True, slots=True, eq=False)
class Baseline:
    """Expected ring counts of one tag: per-cell hourly rate x hour-of-week factor.

    ``cells``/``rate_per_h`` are the empirical-Bayes posterior means of cells that had history;
    any other cell gets ``prior_rate_per_h``. ``hour_of_week_factor`` has 168 values (Monday
    00:00 UTC first) with exposure-weighted mean 1.
    """

    tag: str
    resolution: int
    k_ring: int
    history_start: datetime
    history_end: datetime
    cells: CellArray
    rate_per_h: FloatArray
    prior_rate_per_h: float
    prior_weight_h: float
    hour_of_week_factor: FloatArray = field(repr=False)

    def rates_for(self, cells: CellArray) -> FloatArray:
        """Hourly rate per ring for ``cells`` (prior mean where the cell had no history)."""
        pos = np.searchsorted(self.cells, cells)
        pos_clipped = np.minimum(pos, max(len(self.cells) - 1, 0))
        if len(self.cells) == 0:
            return np.full(len(cells), self.prior_rate_per_h)
        hit = self.cells[pos_clipped] == cells
        return np.where(hit, self.rate_per_h[pos_clipped], self.prior_rate_per_h)

    def effective_hours(self, end_us: IntArray, window: timedelta) -> FloatArray:
        """Sum of the hour-of-week factor over each ``(end - window, end]``, in hours."""
        cumulative = np.concatenate(([0.0], np.cumsum(self.hour_of_week_factor)))
        week_total = cumulative[-1]

        def integral(t_us: IntArray) -> FloatArray:
            hours = t_us / _US_PER_HOUR + _EPOCH_HOUR_OF_WEEK
            weeks = np.floor(hours / HOURS_PER_WEEK)
            into = hours - weeks * HOURS_PER_WEEK
            whole = np.minimum(np.floor(into).astype(np.int64), HOURS_PER_WEEK - 1)
            frac = into - whole
            return np.asarray(
                weeks * week_total + cumulative[whole] + frac * self.hour_of_week_factor[whole],
                dtype=np.float64,
            )

        return integral(end_us) - integral(end_us - _window_us(window))


def _hour_of_week(t_us: IntArray) -> IntArray:
    return np.asarray((t_us // _US_PER_HOUR + _EPOCH_HOUR_OF_WEEK) % HOURS_PER_WEEK)


def fit_baseline(
    tickets: pl.DataFrame,
    *,
    tag: str,
    resolution: int,
    k_ring: int,
    history_start: datetime,
    history_end: datetime,
    prior_floor_per_h: float = 1e-3,
) -> Baseline:
    """Fit expected ring counts of ``tag`` from tickets in ``(history_start, history_end]``.

    Empirical-Bayes shrinkage: with ``n_c`` history tickets in the ring of cell ``c`` over
    ``T`` hours, ``rate_c ~ Gamma(a, b)`` fitted by moments over the cells with history
    (mean ``m``, between-cell variance ``var(n_c/T) - m/T``), posterior mean
    ``(n_c + a) / (T + b)`` with ``b = m / variance`` capped at 10 T (when the spread is pure
    Poisson noise every cell gets ~``m``). The prior mean is over cells *with* history, so it
    errs high for empty cells - fewer false alarms there. ``prior_floor_per_h`` is the lowest
    rate any cell gets (used when the tag has no history at all).
    """
    start_us, end_us = _to_us(history_start, "history_start"), _to_us(history_end, "history_end")
    if end_us <= start_us:
        raise ClusterInputError(
            f"history_end={history_end.isoformat()} is not after "
            f"history_start={history_start.isoformat()}"
        )
    span_h = (end_us - start_us) / _US_PER_HOUR
    events = _tag_events(
        tickets,
        tag=tag,
        resolution=resolution,
        start_us=start_us,
        end_us=end_us,
        source_filter=None,
    )
    factor = _hour_of_week_factor(events["ts_us"].to_numpy(), start_us, end_us)
    if events.height == 0:
        empty = np.array([], dtype=np.uint64)
        return Baseline(
            tag,
            resolution,
            k_ring,
            history_start,
            history_end,
            empty,
            np.array([], dtype=np.float64),
            prior_floor_per_h,
            0.0,
            factor,
        )
    per_source = events.group_by("cell").len().sort("cell")
    sources = per_source["cell"].to_numpy().astype(np.uint64)
    ring = _ring(sources, k_ring, None)
    ring_counts = ring.incidence @ per_source["len"].to_numpy().astype(np.float64)
    rates = ring_counts / span_h
    mean = float(rates.mean())
    spread = float(rates.var(ddof=1)) if len(rates) > 1 else 0.0
    between = spread - mean / span_h
    weight_h = (
        _MAX_PRIOR_WEIGHT * span_h
        if between <= 0
        else min(mean / between, _MAX_PRIOR_WEIGHT * span_h)
    )
    posterior = (ring_counts + mean * weight_h) / (span_h + weight_h)
    return Baseline(
        tag=tag,
        resolution=resolution,
        k_ring=k_ring,
        history_start=history_start,
        history_end=history_end,
        cells=ring.centres,
        rate_per_h=np.maximum(posterior, prior_floor_per_h),
        prior_rate_per_h=max(mean, prior_floor_per_h),
        prior_weight_h=weight_h,
        hour_of_week_factor=factor,
    )


def _hour_of_week_factor(ts_us: IntArray, start_us: int, end_us: int) -> FloatArray:
    first_hour, last_hour = start_us // _US_PER_HOUR, (end_us - 1) // _US_PER_HOUR
    exposure = np.bincount(
        _hour_of_week(np.arange(first_hour, last_hour + 1, dtype=np.int64) * _US_PER_HOUR),
        minlength=HOURS_PER_WEEK,
    ).astype(np.float64)
    observed = np.bincount(_hour_of_week(ts_us), minlength=HOURS_PER_WEEK).astype(np.float64)
    flat = observed.sum() * exposure / exposure.sum()
    raw = (observed + _HOUR_OF_WEEK_PSEUDO_COUNT) / (flat + _HOUR_OF_WEEK_PSEUDO_COUNT)
    return np.asarray(raw * exposure.sum() / (raw * exposure).sum(), dtype=np.float64)


def fit_baselines(
    tickets: pl.DataFrame,
    rules: Sequence[ClusterRule],
    *,
    history_start: datetime,
    history_end: datetime,
) -> dict[ClusterRule, Baseline]:
    """``fit_baseline`` for each rule (keyed by the rule), over one history span."""
    return {
        rule: fit_baseline(
            tickets,
            tag=rule.tag,
            resolution=rule.resolution,
            k_ring=rule.k_ring,
            history_start=history_start,
            history_end=history_end,
        )
        for rule in rules
    }


def poisson_upper_tail(observed: IntArray, expected: FloatArray) -> FloatArray:
    """``P(X >= observed)`` for ``X ~ Poisson(expected)``."""
    return np.asarray(poisson.sf(observed - 1, expected), dtype=np.float64)


# --------------------------------------------------------------------------- evaluate

FIRING_SCHEMA: Final = pl.Schema(
    {
        "tag": pl.String(),
        "rule_version": pl.String(),
        "resolution": pl.Int64(),
        "k_ring": pl.Int64(),
        "cell": pl.UInt64(),
        "window_start": pl.Datetime("us", "UTC"),
        "eval_ts": pl.Datetime("us", "UTC"),
        "count": pl.Int64(),
        "threshold": pl.Int64(),
        "expected": pl.Float64(),
        "p_value": pl.Float64(),
        "recurrence_days": pl.Float64(),
        "over_threshold": pl.Boolean(),
        "significant": pl.Boolean(),
    }
)


# For p <= 0.01, P(X >= k) <= p needs k >= mu + 2.33 sqrt(mu) for every mu (checked on a
# log grid of mu in [1e-6, 3e4]); 2.0 leaves a margin. Used only to skip hopeless cells.
_SIGNIFICANCE_PRUNE_Z: Final = 2.0
_SIGNIFICANCE_PRUNE_MAX_P: Final = 0.01


def _candidates(rule: ClusterRule, counts: IntArray, expected: FloatArray) -> BoolArray:
    """Dense mask of (centre, time) that could fire; p-values are computed only for these."""
    over = counts >= rule.min_count_to_fire
    if rule.fire_on == "rule":
        return over
    if rule.p_value_max <= _SIGNIFICANCE_PRUNE_MAX_P:
        could_be_significant = counts >= np.maximum(
            1.0, expected + _SIGNIFICANCE_PRUNE_Z * np.sqrt(expected)
        )
    else:
        could_be_significant = counts >= 1
    if rule.fire_on == "both":
        return over & could_be_significant
    return over | could_be_significant


def _fires(
    rule: ClusterRule, over: npt.NDArray[np.bool_], significant: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    if rule.fire_on == "rule":
        return over
    if rule.fire_on == "significance":
        return significant
    if rule.fire_on == "both":
        return over & significant
    return over | significant


def _evaluate_rule(
    tickets: pl.DataFrame,
    rule: ClusterRule,
    baseline: Baseline,
    eval_us: IntArray,
    cells: CellArray | None,
) -> pl.DataFrame:
    parts: list[pl.DataFrame] = []
    window_days = rule.window / timedelta(days=1)
    for block in _count_blocks(
        tickets,
        tag=rule.tag,
        resolution=rule.resolution,
        k_ring=rule.k_ring,
        window=rule.window,
        eval_us=eval_us,
        cells=cells,
    ):
        rates = baseline.rates_for(block.centres)
        hours = baseline.effective_hours(block.eval_us, rule.window)
        dense_expected = rates[:, None] * hours[None, :]
        rows, cols = np.nonzero(_candidates(rule, block.counts, dense_expected))
        observed = block.counts[rows, cols]
        expected = dense_expected[rows, cols]
        p_value = poisson_upper_tail(observed, expected)
        over = observed >= rule.min_count_to_fire
        significant = p_value <= rule.p_value_max
        keep = _fires(rule, over, significant)
        with np.errstate(divide="ignore"):
            recurrence = np.where(p_value > 0, window_days / p_value, np.inf)
        ends = block.eval_us[cols][keep]
        n = int(keep.sum())
        parts.append(
            pl.DataFrame(
                {
                    "tag": [rule.tag] * n,
                    "rule_version": [rule.version] * n,
                    "resolution": np.full(n, rule.resolution, dtype=np.int64),
                    "k_ring": np.full(n, rule.k_ring, dtype=np.int64),
                    "cell": pl.Series(block.centres[rows][keep], dtype=pl.UInt64),
                    "window_start": _us_to_datetime_series(ends - _window_us(rule.window), "w"),
                    "eval_ts": _us_to_datetime_series(ends, "eval_ts"),
                    "count": observed[keep].astype(np.int64),
                    "threshold": np.full(n, rule.min_count_to_fire, dtype=np.int64),
                    "expected": expected[keep],
                    "p_value": p_value[keep],
                    "recurrence_days": recurrence[keep],
                    "over_threshold": over[keep],
                    "significant": significant[keep],
                },
                schema=FIRING_SCHEMA,
            )
        )
    return pl.concat(parts) if parts else pl.DataFrame(schema=FIRING_SCHEMA)


def touched_cells(batch: pl.DataFrame, rule: ClusterRule) -> CellArray:
    """Centres whose ring holds at least one ticket of ``batch`` with the rule's tag."""
    located = _with_cells(batch, rule.resolution).filter(pl.col("tag") == rule.tag)
    return ring_cells(located[cell_column(rule.resolution)].unique(), rule.k_ring)


def evaluate_many(
    tickets: pl.DataFrame,
    rules: Sequence[ClusterRule],
    *,
    eval_times: Sequence[datetime] | pl.Series,
    baselines: Mapping[ClusterRule, Baseline] | None = None,
    history_start: datetime | None = None,
    touched_by: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Firing cells of every rule at every evaluation time (see ``FIRING_SCHEMA``).

    A rule without a baseline in ``baselines`` gets one fitted on
    ``(history_start, min(eval_times) - window]``. With ``touched_by`` (a batch of new
    tickets, already included in ``tickets``) only centres whose ring the batch touches are
    evaluated: the incremental path.
    """
    eval_us = _eval_array(eval_times)
    given = dict(baselines or {})
    parts: list[pl.DataFrame] = []
    for rule in rules:
        baseline = given.get(rule)
        if baseline is None:
            if history_start is None:
                raise ClusterInputError(
                    f"rule tag={rule.tag!r} version={rule.version!r}: no baseline given and "
                    "no history_start to fit one"
                )
            history_end = _EPOCH + timedelta(microseconds=int(eval_us.min())) - rule.window
            baseline = fit_baseline(
                tickets,
                tag=rule.tag,
                resolution=rule.resolution,
                k_ring=rule.k_ring,
                history_start=history_start,
                history_end=history_end,
            )
        cells = None if touched_by is None else touched_cells(touched_by, rule)
        if cells is not None and len(cells) == 0:
            continue
        parts.append(_evaluate_rule(tickets, rule, baseline, eval_us, cells))
    if not parts:
        return pl.DataFrame(schema=FIRING_SCHEMA)
    return pl.concat(parts).sort("tag", "rule_version", "eval_ts", "cell")


def evaluate(
    tickets: pl.DataFrame,
    rules: Sequence[ClusterRule],
    *,
    at: datetime,
    history_start: datetime,
    baselines: Mapping[ClusterRule, Baseline] | None = None,
    touched_by: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Firing cells at ``at`` with count, threshold, expected, p_value and recurrence_days.

    The baseline of each rule (unless given) is fitted on ``(history_start, at - window]``,
    so the window under test never inflates its own expectation.
    """
    return evaluate_many(
        tickets,
        rules,
        eval_times=[at],
        baselines=baselines,
        history_start=history_start,
        touched_by=touched_by,
    )


# --------------------------------------------------------------------------- clusters

CLUSTER_GROUP: Final = ("tag", "rule_version", "resolution", "eval_ts")


def merge_adjacent(firing: pl.DataFrame) -> pl.DataFrame:
    """Merge neighbouring firing cells (H3 grid distance 1, same rule and time) into clusters.

    Connected components over the adjacency graph (``scipy.sparse.csgraph``). The key
    ``"{tag}:{smallest cell}"`` is stable while the cluster keeps its smallest cell, so one
    cluster maps to one open alert. Statistics come from the cluster's most significant cell.
    """
    _require_columns(firing, tuple(FIRING_SCHEMA), "merge_adjacent(firing)")
    group = list(CLUSTER_GROUP)
    nodes = firing.with_row_index("node")
    neighbours = (
        nodes.select(*group, "node", neighbour=plh3.grid_disk("cell", 1))
        .explode("neighbour")
        .join(
            nodes.select(*group, neighbour="cell", other="node"),
            on=[*group, "neighbour"],
        )
    )
    n = nodes.height
    graph = sparse.coo_matrix(
        (
            np.ones(neighbours.height, dtype=np.int8),
            (neighbours["node"].to_numpy(), neighbours["other"].to_numpy()),
        ),
        shape=(n, n),
    )
    _, labels = csgraph.connected_components(graph, directed=False)
    return (
        nodes.with_columns(component=pl.Series(labels, dtype=pl.Int64))
        .sort("p_value", "count", descending=[False, True])
        .group_by(*group, "component", maintain_order=True)
        .agg(
            pl.col("cell").sort().alias("cells"),
            pl.col("cell").min().alias("key_cell"),
            pl.len().alias("n_cells"),
            pl.col("count").max().alias("max_count"),
            pl.col(
                "k_ring", "window_start", "threshold", "expected", "p_value", "recurrence_days"
            ).first(),
            pl.col("cell").first().alias("peak_cell"),
            pl.col("count").first().alias("peak_count"),
        )
        .with_columns(
            cluster_key=pl.concat_str(pl.col("tag"), pl.lit(":"), plh3.int_to_str("key_cell")),
        )
        .drop("component", "key_cell")
        .sort("tag", "rule_version", "eval_ts", "cluster_key")
    )


def classify(previous_count: int | None, current_count: int, *, steady_band: float = 0.1) -> Trend:
    """``new`` without a previous count; ``growing``/``fading`` when the count moved by more
    than ``steady_band`` (relative) up/down, else ``steady``. A count of 0 is ``fading``."""
    if steady_band < 0:
        raise ClusterInputError(f"steady_band={steady_band} is negative")
    if previous_count is None:
        return "new"
    if current_count == 0 and previous_count > 0:
        return "fading"
    if current_count > previous_count * (1 + steady_band):
        return "growing"
    if current_count < previous_count * (1 - steady_band):
        return "fading"
    return "steady"


def classify_clusters(
    current: pl.DataFrame,
    previous: pl.DataFrame,
    *,
    count_column: str = "member_count",
    steady_band: float = 0.1,
) -> pl.DataFrame:
    """``classify`` for whole frames keyed by ``cluster_key``; vanished clusters are listed
    as ``fading`` with count 0. Returns ``cluster_key, previous_count, current_count, trend``."""
    for frame, name in ((current, "current"), (previous, "previous")):
        _require_columns(frame, ("cluster_key", count_column), f"classify_clusters({name})")
    joined = (
        current.select("cluster_key", current_count=pl.col(count_column))
        .join(
            previous.select("cluster_key", previous_count=pl.col(count_column)),
            on="cluster_key",
            how="full",
            coalesce=True,
        )
        .with_columns(pl.col("current_count").fill_null(0))
    )
    prev, cur = pl.col("previous_count"), pl.col("current_count")
    trend = (
        pl.when(prev.is_null())
        .then(pl.lit("new"))
        .when((cur == 0) & (prev > 0))
        .then(pl.lit("fading"))
        .when(cur > prev * (1 + steady_band))
        .then(pl.lit("growing"))
        .when(cur < prev * (1 - steady_band))
        .then(pl.lit("fading"))
        .otherwise(pl.lit("steady"))
    )
    return joined.select("cluster_key", "previous_count", "current_count", trend=trend).sort(
        "cluster_key"
    )


class HourCount(TypedDict):
    hour: datetime
    count: int


class ClusterExplanation(TypedDict):
    """Everything an alert needs to say why it fired."""

    cluster_key: str
    tag: str
    rule_version: str
    resolution: int
    k_ring: int
    cells: list[str]
    geometry_wkt: str
    centroid_lat: float
    centroid_lon: float
    ticket_ids: list[str]
    member_count: int
    counts_by_hour: list[HourCount]
    peak_cell: str
    peak_count: int
    threshold: int
    expected: float
    p_value: float
    recurrence_days: float
    window_start: datetime
    window_end: datetime


def member_tickets(clusters: pl.DataFrame, tickets: pl.DataFrame) -> pl.DataFrame:
    """``cluster_key, ticket_id, created_ts``: tickets of the cluster's tag located in one of
    its cells within ``(window_start, eval_ts]`` (not the wider rings around the cells)."""
    parts: list[pl.DataFrame] = []
    for resolution in clusters["resolution"].unique().sort().to_list():
        name = cell_column(resolution)
        cells = (
            clusters.filter(pl.col("resolution") == resolution)
            .select("cluster_key", "tag", "window_start", "eval_ts", cell=pl.col("cells"))
            .explode("cell")
        )
        located = _with_cells(tickets, resolution).select(
            "ticket_id", "created_ts", "tag", cell=pl.col(name)
        )
        parts.append(
            cells.join(located, on=["tag", "cell"])
            .filter(pl.col("created_ts").is_between("window_start", "eval_ts", closed="right"))
            .select("cluster_key", "ticket_id", "created_ts")
        )
    schema = pl.Schema(
        {
            "cluster_key": pl.String(),
            "ticket_id": pl.String(),
            "created_ts": pl.Datetime("us", "UTC"),
        }
    )
    if not parts:
        return pl.DataFrame(schema=schema)
    return pl.concat(parts).sort("cluster_key", "ticket_id")


def cells_wkt(cells: Sequence[str]) -> str:
    """MULTIPOLYGON WKT (lon lat) of the union of H3 cell boundaries."""
    shape = shapely.geometry.shape(h3.cells_to_h3shape(list(cells)).__geo_interface__)
    if isinstance(shape, shapely.geometry.Polygon):
        shape = shapely.geometry.MultiPolygon([shape])
    return str(shape.wkt)


def explain(clusters: pl.DataFrame, tickets: pl.DataFrame) -> list[ClusterExplanation]:
    """One explanation per cluster row of ``merge_adjacent`` (ticket ids sorted)."""
    members = member_tickets(clusters, tickets)
    ids = members.group_by("cluster_key").agg(pl.col("ticket_id").sort())
    hourly = (
        members.group_by("cluster_key", hour=pl.col("created_ts").dt.truncate("1h"))
        .len()
        .sort("cluster_key", "hour")
        .group_by("cluster_key", maintain_order=True)
        .agg(pl.struct("hour", count=pl.col("len")).alias("counts_by_hour"))
    )
    rows = (
        clusters.join(ids, on="cluster_key", how="left")
        .join(hourly, on="cluster_key", how="left")
        .with_columns(
            cells_hex=pl.col("cells").list.eval(plh3.int_to_str(pl.element())),
            peak_hex=plh3.int_to_str("peak_cell"),
            centroid_lat=pl.col("cells").list.eval(plh3.cell_to_lat(pl.element())).list.mean(),
            centroid_lon=pl.col("cells").list.eval(plh3.cell_to_lng(pl.element())).list.mean(),
        )
        .sort("cluster_key")
    )
    explanations: list[ClusterExplanation] = []
    for row in rows.iter_rows(named=True):  # one iteration per cluster, not per ticket
        ticket_ids: list[str] = row["ticket_id"] or []
        explanations.append(
            ClusterExplanation(
                cluster_key=row["cluster_key"],
                tag=row["tag"],
                rule_version=row["rule_version"],
                resolution=row["resolution"],
                k_ring=row["k_ring"],
                cells=row["cells_hex"],
                geometry_wkt=cells_wkt(row["cells_hex"]),
                centroid_lat=row["centroid_lat"],
                centroid_lon=row["centroid_lon"],
                ticket_ids=ticket_ids,
                member_count=len(ticket_ids),
                counts_by_hour=[
                    HourCount(hour=h["hour"], count=h["count"])
                    for h in (row["counts_by_hour"] or [])
                ],
                peak_cell=row["peak_hex"],
                peak_count=row["peak_count"],
                threshold=row["threshold"],
                expected=row["expected"],
                p_value=row["p_value"],
                recurrence_days=row["recurrence_days"],
                window_start=row["window_start"],
                window_end=row["eval_ts"],
            )
        )
    return explanations


def recurrence_days(p_value: float, window: timedelta) -> float:
    """``window / p`` in days: how often a count this extreme happens by chance."""
    return math.inf if p_value <= 0 else (window / timedelta(days=1)) / p_value
