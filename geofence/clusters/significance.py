"""Expected counts (hour-of-week, empirical-Bayes baseline), Poisson tails, firing cells."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy.stats import poisson

from geofence.clusters.counts import (
    _count_blocks,
    _eval_array,
    _ring,
    _tag_events,
    _to_us,
    _us_to_datetime_series,
    _window_us,
    _with_cells,
    cell_column,
    ring_cells,
)
from geofence.clusters.rules import ClusterInputError, ClusterRule
from geofence.clusters.types import (
    EPOCH,
    EPOCH_HOUR_OF_WEEK,
    HOUR_OF_WEEK_PSEUDO_COUNT,
    HOURS_PER_WEEK,
    MAX_PRIOR_WEIGHT,
    US_PER_HOUR,
    BoolArray,
    CellArray,
    FloatArray,
    IntArray,
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
            hours = t_us / US_PER_HOUR + EPOCH_HOUR_OF_WEEK
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
    return np.asarray((t_us // US_PER_HOUR + EPOCH_HOUR_OF_WEEK) % HOURS_PER_WEEK)


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
    span_h = (end_us - start_us) / US_PER_HOUR
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
        MAX_PRIOR_WEIGHT * span_h
        if between <= 0
        else min(mean / between, MAX_PRIOR_WEIGHT * span_h)
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
    first_hour, last_hour = start_us // US_PER_HOUR, (end_us - 1) // US_PER_HOUR
    exposure = np.bincount(
        _hour_of_week(np.arange(first_hour, last_hour + 1, dtype=np.int64) * US_PER_HOUR),
        minlength=HOURS_PER_WEEK,
    ).astype(np.float64)
    observed = np.bincount(_hour_of_week(ts_us), minlength=HOURS_PER_WEEK).astype(np.float64)
    flat = observed.sum() * exposure / exposure.sum()
    raw = (observed + HOUR_OF_WEEK_PSEUDO_COUNT) / (flat + HOUR_OF_WEEK_PSEUDO_COUNT)
    return np.asarray(raw * exposure.sum() / (raw * exposure).sum(), dtype=np.float64)


def fit_baselines(
    tickets: pl.DataFrame,
    rules: Sequence[ClusterRule],
    *,
    history_start: datetime,
    history_end: datetime,
) -> dict[ClusterRule, Baseline]:
    """``fit_baseline`` for each rule (keyed by the rule), over one history span."""
    return {rule: _fit_rule(tickets, rule, history_start, history_end) for rule in rules}


def fit_rule_baselines(
    tickets: pl.DataFrame, rules: Sequence[ClusterRule], *, at: datetime, history: timedelta
) -> dict[ClusterRule, Baseline]:
    """Each rule's baseline for an evaluation at ``at``: ``fit_baseline`` over the
    ``history`` that ends where the rule's window begins (``at - rule.window``)."""
    return {
        rule: _fit_rule(tickets, rule, at - rule.window - history, at - rule.window)
        for rule in rules
    }


def _fit_rule(
    tickets: pl.DataFrame, rule: ClusterRule, history_start: datetime, history_end: datetime
) -> Baseline:
    return fit_baseline(
        tickets,
        tag=rule.tag,
        resolution=rule.resolution,
        k_ring=rule.k_ring,
        history_start=history_start,
        history_end=history_end,
    )


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
            history_end = EPOCH + timedelta(microseconds=int(eval_us.min())) - rule.window
            baseline = _fit_rule(tickets, rule, history_start, history_end)
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
