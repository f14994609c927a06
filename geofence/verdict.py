"""Arrival verdicts: where was the technician when they tapped "arrived"? (rule ``arrival-v2``)

One vectorized pass over all arrivals (no loop over rows). Tiers (``TIERS``):

* ``AT_DOOR``: within ``radius_m`` (5 m) proven by the rule below (``VERIFIED`` in v1);
* ``ON_SITE``: ``P(on site) >= on_site_min_p`` (within ``site_radius_m``), 5 m not provable;
* ``INCONCLUSIVE``: the evidence cannot place them (a reason says why);
* ``REJECTED``: ``P(on site) <= reject_max_p``, confidently elsewhere.

Every verdict carries ``p_within_radius`` and ``p_on_site`` under the stated error model
(``geofence.arrival_model``, parameters in ``thresholds.model``) and the evidence they rest on
(``model_evidence``: uwb, stop, gps_fix or prior). Evidence, in order of trust:

1. **UWB** (indoors): the nearest UWB position of the technician at the arrival's ``site_id``
   within ``±max_fix_gap`` with ``error_m <= uwb_max_error_m`` decides alone: AT_DOOR if
   ``d + accuracy_k·error <= radius``, else REJECTED / ON_SITE / INCONCLUSIVE
   ``straddles_radius`` by its probabilities.
2. **Spoofing**: a flagged fix of the technician within ``±max_fix_gap`` (the fixes the GPS
   evidence rests on) makes the verdict INCONCLUSIVE with the rule's name:
   ``mock_location``, ``future_fix`` (fix ``ts`` after ``now`` or after its own
   ``ingested_ts``), ``spoof_speed`` (reaching the fix needed more than ``max_speed_mps``),
   ``spoof_repeated_coords`` (the fix is in a run of >= ``repeat_coord_run`` identical
   coordinates).
3. **GPS fix**: the decisive fix is the nearest in time of the technician's last fix at or
   before the arrival and first fix after it, both within ``max_fix_gap``, preferring one with
   ``accuracy_m <= max_accuracy_m``. AT_DOOR if ``d + accuracy_k·accuracy <= radius``.
4. **Stop**: the latest stop starting before ``ts + max_fix_gap`` that has not ended before
   ``ts - max_fix_gap``, with ``>= stop_min_fixes`` fixes: AT_DOOR if
   ``d + stop_se_k·se <= radius``.
5. With a stop or an acceptable fix: REJECTED when ``P(on site) <= reject_max_p`` and, if there
   is an acceptable fix, every usable fix within ±reject_window says ``d -
   reject_margin_k·accuracy > site_radius_m``; ON_SITE when ``P(on site) >= on_site_min_p``.
6. Otherwise INCONCLUSIVE: ``gps_blind_no_uwb`` (no acceptable fix or stop and the arrival is
   at a UWB site), ``no_fix_within_window``, ``poor_accuracy`` or ``straddles_radius``.

Stored v1 verdicts are mapped on read (``read_verdict``): VERIFIED is AT_DOOR.
Distances are ``local_distance_m`` (m); times are UTC.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from geofence.arrival_model import (
    R68_PER_SIGMA,
    ErrorModel,
    hermite_misjudgement,
    position_probabilities,
    stop_sigma_m,
)
from geofence.distance import WGS84_A_M, WGS84_E2, local_distance_m
from geofence.errors import ThresholdError, require_columns
from geofence.verdict_terms import (  # the rule's words, importable without its machinery
    DECIDED_BY,
    LEGACY_VERDICTS,
    REASONS,
    RULE_VERSION,
    SPOOFS,
    TIERS,
    read_verdict,
)

__all__ = [
    "DECIDED_BY",
    "LEGACY_VERDICTS",
    "REASONS",
    "RULE_VERSION",
    "TIERS",
    "ArrivalThresholds",
    "read_verdict",
    "verify_arrivals",
]


ARRIVAL_COLUMNS = ("ticket_id", "event_id", "technician_id", "ts", "customer_lat", "customer_lon")
FIX_COLUMNS = ("technician_id", "ts", "lat", "lon", "accuracy_m")
STOP_COLUMNS = (
    "technician_id",
    "start_ts",
    "end_ts",
    "n_fixes",
    "centroid_lat",
    "centroid_lon",
    "centroid_se_m",
)
UWB_COLUMNS = ("technician_id", "site_id", "ts", "lat", "lon", "error_m")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ArrivalThresholds:
    """Named thresholds of the arrival rule; units are in the names or the types."""

    radius_m: float = 5.0
    accuracy_k: float = 1.0
    max_fix_gap: timedelta = timedelta(minutes=2)
    max_accuracy_m: float = 25.0
    stop_min_fixes: int = 3
    stop_max_diameter_m: float = 15.0
    stop_min_duration: timedelta = timedelta(minutes=2)
    stop_se_k: float = 2.0
    reject_margin_k: float = 2.0
    max_speed_mps: float = 70.0
    repeat_coord_run: int = 5
    uwb_max_error_m: float = 0.5
    arrival_lookback: timedelta = field(default=timedelta(minutes=30))
    reject_window: timedelta = timedelta(seconds=30)
    site_radius_m: float = 25.0
    on_site_min_p: float = 0.95
    reject_max_p: float = 0.01
    model: ErrorModel = field(default_factory=ErrorModel)
    rule_version: str = RULE_VERSION

    def __post_init__(self) -> None:
        bad = {
            k: v
            for k, v in asdict(self).items()
            if isinstance(v, int | float | timedelta)
            and not isinstance(v, bool)
            and (v < timedelta(0) if isinstance(v, timedelta) else v < 0)
        }
        if bad or self.radius_m <= 0:
            raise ThresholdError(
                f"ArrivalThresholds: {bad or {'radius_m': self.radius_m}}; "
                "expected non-negative values and radius_m > 0"
            )
        if self.site_radius_m < self.radius_m:
            raise ThresholdError(
                f"ArrivalThresholds: site_radius_m={self.site_radius_m} is below "
                f"radius_m={self.radius_m}; expected site_radius_m >= radius_m"
            )
        if not 0.0 <= self.reject_max_p < self.on_site_min_p <= 1.0:
            raise ThresholdError(
                f"ArrivalThresholds: reject_max_p={self.reject_max_p}, "
                f"on_site_min_p={self.on_site_min_p}; expected 0 <= reject_max_p < "
                "on_site_min_p <= 1"
            )

    def to_json(self) -> str:
        """Thresholds and the error model as JSON (timedeltas in seconds), stored beside
        every verdict."""
        values: dict[str, object] = {
            k: v.total_seconds() if isinstance(v, timedelta) else v for k, v in asdict(self).items()
        }
        values["model"] = self.model.to_dict()
        return json.dumps(values, sort_keys=True)


_US: Final = 1_000_000
_KEY_LIMIT: Final = 1 << 62
# Metres per degree bounds on WGS84 (meridional radius at the equator / at the poles): a
# cheap |Δlat|·min bound never exceeds the local distance, |Δ|·max never falls below it.
_M_PER_DEG_MIN: Final = float(np.radians(WGS84_A_M * (1.0 - WGS84_E2))) * (1.0 - 1e-9)
_M_PER_DEG_MAX: Final = float(np.radians(WGS84_A_M / np.sqrt(1.0 - WGS84_E2))) * (1.0 + 1e-9)


def _dist(lat1: str, lon1: str, lat2: str, lon2: str) -> pl.Expr:
    """``local_distance_m`` as a pure polars expression (m); NaN/null give null."""
    la1, la2 = pl.col(lat1), pl.col(lat2)
    mid = ((la1 + la2) * 0.5).radians()
    w2 = 1.0 - WGS84_E2 * mid.sin() ** 2
    north = WGS84_A_M * (1.0 - WGS84_E2) / (w2 * w2.sqrt()) * (la2 - la1).radians()
    d_lon = pl.col(lon2) - pl.col(lon1)
    d_lon = d_lon - 360.0 * ((d_lon + 180.0) / 360.0).floor()
    east = WGS84_A_M / w2.sqrt() * mid.cos() * d_lon.radians()
    return (east * east + north * north).sqrt().fill_nan(None)


def _ranges(lo: IntArray, hi: IntArray) -> tuple[IntArray, IntArray]:
    """(owner, position) for every position in the ranges ``[lo, hi)``, owner by owner."""
    size = np.maximum(hi - lo, 0)
    owner = np.repeat(np.arange(len(lo), dtype=np.int64), size)
    pos = np.arange(int(size.sum()), dtype=np.int64) + np.repeat(
        lo - (np.cumsum(size) - size), size
    )
    return owner, pos


def _null_nan(values: FloatArray) -> pl.Series:
    return pl.Series(values, dtype=pl.Float64).fill_nan(None)


def _take(series: pl.Series, idx: IntArray, valid: BoolArray) -> pl.Series:
    """``series[idx]`` with null where not ``valid``."""
    return series.gather(pl.Series(idx, dtype=pl.Int64).scatter(np.flatnonzero(~valid), None))


class _Keys:
    """Rows sorted by (code, µs), searched like ``np.searchsorted`` on that pair.

    One composite int64 key ``code·span + (t - t0)`` when it fits (times clipped into the
    span, which every query lies inside); else one search per code.
    """

    def __init__(self, code: IntArray, t_us: IntArray, t0: int, span: int, n_codes: int):
        self.code, self.t_us, self.t0, self.span = code, t_us, t0, span
        fits = (n_codes + 2) * span < _KEY_LIMIT
        self.key = self.composite(code, t_us) if fits else None

    @classmethod
    def in_span(cls, code: IntArray, t_us: IntArray, t0: int, span: int, n_codes: int) -> _Keys:
        """Like the constructor for times known to lie in ``[t0, t0 + span)`` (no clipping)."""
        keys = cls(code[:0], t_us[:0], t0, span, n_codes)
        keys.code, keys.t_us = code, t_us
        if keys.key is not None:
            key = code * span
            key += t_us
            key -= t0
            keys.key = key
        return keys

    def composite(self, code: IntArray, t_us: IntArray) -> IntArray:
        return code * self.span + np.clip(t_us - self.t0, 0, self.span - 1)

    def search(self, code: IntArray, t_us: IntArray, side: Literal["left", "right"]) -> IntArray:
        if self.key is not None:
            return np.searchsorted(self.key, self.composite(code, t_us), side).astype(np.int64)
        out = np.empty(len(code), dtype=np.int64)
        for c in np.unique(code).tolist():
            sel = code == c
            b0, b1 = np.searchsorted(self.code, [c, c + 1], side="left").tolist()
            out[sel] = b0 + np.searchsorted(self.t_us[b0:b1], t_us[sel], side)
        return out


class _Track:
    """Fixes in technician/time order as numpy arrays, searched per technician.

    Technicians get integer codes (those with fixes first, in order, then arrival
    technicians without fixes; -1: unknown). Arrays are views of the frame's buffers where
    polars allows it; positions that may be out of range go through ``clip``.
    """

    def __init__(self, fixes: pl.DataFrame, arrival_tech: pl.Series, t_a: IntArray, margin_us: int):
        cols = [c for c in (*FIX_COLUMNS, "mock_location", "ingested_ts") if c in fixes.columns]
        fx = fixes.select(cols).drop_nulls(["technician_id", "ts"])
        tech = fx["technician_id"]
        t_us = fx["ts"].dt.epoch("us").to_numpy().astype(np.int64)
        ordered = tech.is_sorted()
        if ordered and len(t_us) > 1:
            new_tech = (tech != tech.shift(1)).fill_null(True).to_numpy()[1:]
            ordered = bool(np.all((t_us[1:] >= t_us[:-1]) | new_tech))
        if not ordered:  # the runner loads fixes in this order already: the rare path
            fx = fx.sort("technician_id", "ts", maintain_order=True)
            tech, t_us = fx["technician_id"], fx["ts"].dt.epoch("us").to_numpy().astype(np.int64)
        self.frame, self.n = fx, fx.height
        code = tech.rle_id().to_numpy().astype(np.int64)
        names = tech.gather(np.flatnonzero(np.diff(code, prepend=-1)))
        extra = arrival_tech.filter(~arrival_tech.is_in(names.implode())).drop_nulls().unique()
        self.names = pl.concat([names, extra.cast(names.dtype)])

        def col(name: str) -> FloatArray:  # one NaN row when there are no fixes: clip-safe
            values = fx[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
            return values if len(values) else np.full(1, np.nan)

        self.lat, self.lon, self.acc = col("lat"), col("lon"), col("accuracy_m")
        self.t_us = t_us if len(t_us) else np.zeros(1, dtype=np.int64)
        self.code = code if len(code) else np.full(1, -2, dtype=np.int64)
        self.mock = (
            fx["mock_location"].fill_null(False).cast(pl.Boolean).to_numpy()
            if "mock_location" in fx.columns
            else None
        )
        never = np.iinfo(np.int64).max
        self.ingested_us = (
            fx["ingested_ts"].dt.epoch("us").fill_null(never).to_numpy()
            if "ingested_ts" in fx.columns
            else None
        )
        ends = [t_us.min(), t_us.max()] if len(t_us) else []
        t_all = np.concatenate([ends, t_a, [0] if not (len(t_us) or len(t_a)) else []])
        t0 = int(t_all.min()) - margin_us - 1
        span = int(t_all.max()) - t0 + margin_us + 2
        self.keys = _Keys.in_span(code, t_us, t0, span, len(self.names))

    def codes(self, tech: pl.Series) -> IntArray:
        """Codes of technician ids (-1: unknown or null)."""
        lookup = pl.Series(np.arange(len(self.names), dtype=np.int64))
        coded = tech.replace_strict(self.names, lookup, default=-1, return_dtype=pl.Int64)
        return coded.fill_null(-1).to_numpy().astype(np.int64)

    def search(self, code: IntArray, t_us: IntArray, side: Literal["left", "right"]) -> IntArray:
        return self.keys.search(code, t_us, side)

    def clip(self, idx: IntArray) -> IntArray:
        """Positions made safe to index with (validity is the caller's mask)."""
        return np.clip(idx, 0, len(self.code) - 1)

    def flag_spans(self, th: ArrivalThresholds, now_us: int | None) -> dict[str, _Spans]:
        """Where each named spoofing flag is set, as sorted disjoint position spans.

        One contiguous pass over the fixes; the speed rule tests the exact distance only
        where a cheap upper bound (``(|Δlat| + |Δlon|)·max metres per degree``) is too fast.
        """
        n, t = self.n, self.t_us[: self.n]
        same = self.code[1:n] == self.code[: n - 1]
        future = np.zeros(n, dtype=bool)
        if now_us is not None:
            future |= t > now_us
        if self.ingested_us is not None:
            future |= t > self.ingested_us[:n]
        mock = self.mock[:n] if self.mock is not None else np.zeros(n, dtype=bool)
        return {
            "mock_location": _Spans.of(np.flatnonzero(mock)),
            "future_fix": _Spans.of(np.flatnonzero(future)),
            "spoof_speed": _Spans.of(self._too_fast(same, th.max_speed_mps)),
            "spoof_repeated_coords": self._repeated(same, th.repeat_coord_run),
        }

    def duplicates(self) -> _Spans:
        """Fixes with the technician and time of the previous fix (they count once)."""
        n = self.n
        dup = (self.t_us[1:n] == self.t_us[: n - 1]) & (self.code[1:n] == self.code[: n - 1])
        return _Spans.of(np.flatnonzero(dup) + 1)

    def _too_fast(self, same: BoolArray, max_speed_mps: float) -> IntArray:
        """Positions whose fix needed more than ``max_speed_mps`` from the previous one."""
        n = self.n
        limit_m = np.diff(self.t_us[:n]) * (0.999e-6 * max_speed_mps)
        bound_m = np.abs(np.diff(self.lat[:n]))
        bound_m += np.abs(np.diff(self.lon[:n]))
        bound_m *= _M_PER_DEG_MAX  # >= the local distance
        doubt = np.flatnonzero(~(bound_m <= limit_m))
        doubt = doubt[same[doubt]] + 1
        p = doubt - 1
        step = local_distance_m(self.lat[p], self.lon[p], self.lat[doubt], self.lon[doubt])
        dt = (self.t_us[doubt] - self.t_us[p]) / 1e6
        with np.errstate(divide="ignore", invalid="ignore"):
            speed = np.where(dt > 0, step / dt, np.where(step > 0, np.inf, 0.0))
        return doubt[speed > max_speed_mps]

    def _repeated(self, same: BoolArray, run: int) -> _Spans:
        """Runs of >= ``run`` identical coordinates of one technician."""
        n = self.n
        link = same & (self.lat[1:n] == self.lat[: n - 1]) & (self.lon[1:n] == self.lon[: n - 1])
        starts = np.flatnonzero(np.concatenate([[n > 0], ~link]))
        ends = np.append(starts[1:], n)
        long = ends - starts >= run
        return _Spans(starts[long], ends[long])


@dataclass(frozen=True)
class _Spans:
    """Sorted, disjoint position spans ``[start, end)``."""

    start: IntArray
    end: IntArray

    @classmethod
    def of(cls, positions: IntArray) -> _Spans:
        return cls(positions, positions + 1)

    def count_in(self, lo: IntArray, hi: IntArray) -> IntArray:
        """Positions covered in each ``[lo, hi)`` (single-position spans only)."""
        return np.searchsorted(self.start, hi, "left") - np.searchsorted(self.start, lo, "left")

    def any_in(self, lo: IntArray, hi: IntArray) -> BoolArray:
        """Whether any span meets ``[lo, hi)``."""
        if not len(self.start):
            return np.zeros(len(lo), dtype=bool)
        k = np.minimum(np.searchsorted(self.end, lo, side="right"), len(self.start) - 1)
        return (self.end[k] > lo) & (self.start[k] < hi) & (hi > lo)


def _nearest_fix(
    tr: _Track, code: IntArray, t: IntArray, at: IntArray, right: IntArray, th: ArrivalThresholds
) -> tuple[IntArray, IntArray, IntArray, BoolArray]:
    """Last fix at/before and first fix at/after each arrival within ``max_fix_gap``, and the
    decisive one: the acceptable one if only one is, else the nearer in time (before on a
    tie). ``at``/``right``: left/right search positions of the arrivals. Returns positions
    ``before, after, pick`` (-1: none) and whether ``pick`` is acceptable."""
    gap = th.max_fix_gap // timedelta(microseconds=1)
    b, f = tr.clip(right - 1), tr.clip(at)
    has_b = (right > 0) & (tr.code[b] == code) & (t - tr.t_us[b] <= gap)
    has_f = (at < tr.n) & (tr.code[f] == code) & (tr.t_us[f] - t <= gap)
    ok_b = has_b & (tr.acc[b] <= th.max_accuracy_m)
    ok_f = has_f & (tr.acc[f] <= th.max_accuracy_m)
    b_gap, f_gap = t - tr.t_us[b], tr.t_us[f] - t
    b, f = np.where(has_b, b, -1), np.where(has_f, f, -1)
    b_first = (ok_b & ~ok_f) | ((ok_b == ok_f) & has_b & has_f & (b_gap <= f_gap)) | ~has_f
    return b, f, np.where(b_first, b, f), np.where(b_first, ok_b, ok_f)


def _window(
    tr: _Track, code: IntArray, t: IntArray, at: IntArray, right: IntArray,
    c_lat: FloatArray, c_lon: FloatArray, th: ArrivalThresholds, flags: dict[str, _Spans],
) -> dict[str, pl.Series]:  # fmt: skip
    """Per arrival (sorted by code, time): the fixes that are its evidence, aggregated.

    A fix is evidence for the next arrival of its technician within ``arrival_lookback`` and
    for the previous one within ``max_fix_gap`` (never more), so each arrival's fixes are one
    contiguous run of positions. Over them: the fixes within ±max_fix_gap (count and spoof
    flags), the closest any usable fix within ±reject_window could be
    (``distance - reject_margin_k·accuracy``) and the first fix inside the radius. A fix with
    the same technician and time as the previous one counts once.
    """
    us = timedelta(microseconds=1)
    lookback, gap = th.arrival_lookback // us, th.max_fix_gap // us
    near = min(th.reject_window, th.max_fix_gap) // us
    n = len(code)
    plus_gap = tr.search(code, t + gap, "right")
    prev_right = np.concatenate([[0], right[:-1]])  # fixes after the previous arrival
    next_left = np.append(at[1:], tr.n)  # fixes before the next arrival
    f_lo, f_hi = np.maximum(tr.search(code, t - lookback, "left"), prev_right), right
    b_lo, b_hi = at, np.minimum(plus_gap, next_left)
    f_none, b_none = f_lo >= f_hi, b_lo >= b_hi
    lo = np.where(f_none, b_lo, np.where(b_none, f_lo, np.minimum(f_lo, b_lo)))
    hi = np.where(f_none, b_hi, np.where(b_none, f_hi, np.maximum(f_hi, b_hi)))
    g_lo = np.maximum(lo, tr.search(code, t - gap, "left"))  # within ±max_fix_gap
    g_hi = np.maximum(np.minimum(hi, plus_gap), g_lo)
    dups = tr.duplicates()
    out: dict[str, pl.Series] = {
        "n_fixes_in_window": pl.Series(g_hi - g_lo - dups.count_in(g_lo, g_hi), dtype=pl.Int64)
    }
    for name, spans in flags.items():
        out[f"_w_{name}"] = pl.Series(spans.any_in(g_lo, g_hi))

    u_lo = np.maximum(lo, tr.search(code, t - near, "left"))  # within ±reject_window
    u_hi = np.minimum(hi, tr.search(code, t + near, "right"))
    ev, pos = _ranges(u_lo, u_hi)
    usable = (tr.acc[pos] <= th.max_accuracy_m) & (dups.count_in(pos, pos + 1) == 0)
    ev, pos = ev[usable], pos[usable]
    lower = local_distance_m(tr.lat[pos], tr.lon[pos], c_lat[ev], c_lon[ev])
    lower -= th.reject_margin_k * tr.acc[pos]
    w_min = np.full(n, np.nan)
    if len(ev):
        first = np.flatnonzero(np.diff(ev, prepend=-1))
        w_min[ev[first]] = np.fmin.reduceat(lower, first)
    out["_w_min_lower_m"] = _null_nan(w_min)
    out["_first_in_radius_ts"] = _first_inside(tr, lo, hi, c_lat, c_lon, th)
    return out


def _first_inside(
    tr: _Track, lo: IntArray, hi: IntArray, c_lat: FloatArray, c_lon: FloatArray,
    th: ArrivalThresholds,
) -> pl.Series:  # fmt: skip
    """Time of the first fix in ``[lo, hi)`` with ``distance + accuracy_k·accuracy <= radius``.

    Two cheap filters first: the accuracy alone must fit in the radius (per fix, one pass),
    then the latitude offset alone (``|Δlat|·min metres per degree`` never exceeds the
    distance); the exact distance runs on what is left.
    """
    acc = tr.acc[: tr.n]
    eps = 1e-9 * (1.0 + th.radius_m)
    k = th.accuracy_k
    # positions that could ever qualify (a null accuracy never does: it counts as infinite)
    fits = np.flatnonzero(acc <= (th.radius_m + eps) / k if k > 0 else ~np.isnan(acc))
    ev, j = _ranges(np.searchsorted(fits, lo), np.searchsorted(fits, hi))
    pos = fits[j]
    k_acc = k * tr.acc[pos]
    near = np.abs(tr.lat[pos] - c_lat[ev]) * _M_PER_DEG_MIN <= th.radius_m - k_acc + eps
    ev, pos, k_acc = ev[near], pos[near], k_acc[near]
    d = local_distance_m(tr.lat[pos], tr.lon[pos], c_lat[ev], c_lon[ev])
    inside = d + k_acc <= th.radius_m
    ev, pos = ev[inside], pos[inside]
    first = np.flatnonzero(np.diff(ev, prepend=-1))
    first_pos = np.full(len(lo), -1, dtype=np.int64)
    first_pos[ev[first]] = pos[first]
    return _take(tr.frame["ts"], first_pos, first_pos >= 0)


def _stop_columns(
    tr: _Track, stops: pl.DataFrame, code: IntArray, t: IntArray, c_lat: FloatArray,
    c_lon: FloatArray, th: ArrivalThresholds,
) -> dict[str, pl.Series]:  # fmt: skip
    """The latest stop (enough fixes) starting before ``ts + max_fix_gap`` and not ended
    before ``ts - max_fix_gap``, with its distance to the customer."""
    gap = th.max_fix_gap // timedelta(microseconds=1)
    st = stops.filter(pl.col("n_fixes") >= th.stop_min_fixes).drop_nulls(["start_ts"])
    s_code = tr.codes(st["technician_id"])
    s_start = st["start_ts"].dt.epoch("us").to_numpy().astype(np.int64)
    order = np.lexsort((s_start, s_code))
    keys = _Keys(s_code[order], s_start[order], tr.keys.t0, tr.keys.span, len(tr.names))
    k = keys.search(code, t + gap, "right") - 1
    row = order[np.maximum(k, 0)] if len(order) else np.zeros(len(code), dtype=np.int64)
    live = (k >= 0) & (code >= 0)
    if len(order):
        live &= s_code[row] == code
        end = st["end_ts"].dt.epoch("us").fill_null(np.iinfo(np.int64).min).to_numpy()
        live &= end[row] >= t - gap
    cols = {
        "start_ts": "start_ts",
        "_stop_end_ts": "end_ts",
        "stop_n_fixes": "n_fixes",
        "stop_centroid_lat": "centroid_lat",
        "stop_centroid_lon": "centroid_lon",
        "stop_se_m": "centroid_se_m",
    }
    out = {name: _take(st[src], row, live).alias(name) for name, src in cols.items()}
    s_lat = out["stop_centroid_lat"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    s_lon = out["stop_centroid_lon"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    out["stop_distance_m"] = _null_nan(local_distance_m(s_lat, s_lon, c_lat, c_lon))
    return out


def verify_arrivals(
    arrivals: pl.DataFrame,
    fixes: pl.DataFrame,
    stops: pl.DataFrame,
    uwb: pl.DataFrame | None,
    thresholds: ArrivalThresholds = ArrivalThresholds(),
    *,
    now: datetime | None = None,
) -> pl.DataFrame:
    """One verdict row per arrival (see the module docstring for the rule).

    Output: the arrival columns plus ``verdict`` (one of ``TIERS``),
    ``reason``, ``decided_by`` ('gps_fix' | 'stop' | 'uwb' | null), ``fix_before_ts``,
    ``fix_after_ts``, ``fix_ts``, ``fix_lat``, ``fix_lon``, ``distance_m``, ``accuracy_m``,
    ``n_fixes_in_window``, ``stop_centroid_lat``, ``stop_centroid_lon``, ``stop_distance_m``,
    ``stop_se_m``, ``stop_n_fixes``, ``uwb_lat``, ``uwb_lon``, ``uwb_distance_m``,
    ``physical_arrival_ts`` (stop start, else first fix within the radius in the lookback),
    ``status_lag_s`` (arrival ts minus physical arrival, s), ``p_within_radius``,
    ``p_on_site``, ``model_evidence``, ``thresholds`` (JSON, with the model) and
    ``rule_version``.

    Speed: fixes already in technician/time order (as the runner loads them) are not
    re-sorted; every as-of lookup is a ``searchsorted`` on a composite (technician, µs) key
    and only the fixes that are some arrival's evidence are touched after that.
    """
    th = thresholds
    require_columns(arrivals.columns, ARRIVAL_COLUMNS, "arrivals")
    require_columns(fixes.columns, FIX_COLUMNS, "fixes")
    require_columns(stops.columns, STOP_COLUMNS, "stops")
    a = arrivals.with_columns(
        pl.col("site_id")
        if "site_id" in arrivals.columns
        else pl.lit(None, pl.String).alias("site_id")
    )
    us = timedelta(microseconds=1)
    margin = max(th.arrival_lookback, th.max_fix_gap, th.reject_window) // us
    a_t = a["ts"].dt.epoch("us").fill_null(0).to_numpy().astype(np.int64)
    tr = _Track(fixes, a["technician_id"], a_t, margin)
    code = tr.codes(a["technician_id"])
    code[a["ts"].is_null().to_numpy()] = -1
    order = np.lexsort((a_t, code))
    a = a[pl.Series(order)]
    code, t = code[order], a_t[order]
    c_lat = a["customer_lat"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    c_lon = a["customer_lon"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    now_us = None
    if now is not None:
        now_us = int(pl.Series([now]).dt.convert_time_zone("UTC").dt.epoch("us")[0])

    at, right = tr.search(code, t, "left"), tr.search(code, t, "right")
    b, f, pick, pick_ok = _nearest_fix(tr, code, t, at, right, th)
    has_pick = pick >= 0
    p = tr.clip(pick)
    fx = tr.frame
    cols: dict[str, pl.Series] = {
        "b_ts": _take(fx["ts"], b, b >= 0),
        "f_ts": _take(fx["ts"], f, f >= 0),
        "fix_ts": _take(fx["ts"], pick, has_pick),
        "fix_lat": _take(fx["lat"], pick, has_pick),
        "fix_lon": _take(fx["lon"], pick, has_pick),
        "fix_accuracy_m": _take(fx["accuracy_m"], pick, has_pick),
        "fix_d": _null_nan(
            np.where(has_pick, local_distance_m(tr.lat[p], tr.lon[p], c_lat, c_lon), np.nan)
        ),
        "fix_ok": pl.Series(pick_ok),
    }
    flags = tr.flag_spans(th, now_us)
    for name, spans in flags.items():
        cols[f"fix_{name}"] = pl.Series(spans.any_in(pick, pick + 1) & has_pick)
    cols.update(_window(tr, code, t, at, right, c_lat, c_lon, th, flags))
    cols.update(_stop_columns(tr, stops, code, t, c_lat, c_lon, th))
    a = a.with_columns(s.alias(name) for name, s in cols.items())
    a = _join_uwb(a, uwb, th)
    return _decide(a, th)


def _join_uwb(a: pl.DataFrame, uwb: pl.DataFrame | None, th: ArrivalThresholds) -> pl.DataFrame:
    if uwb is not None:
        require_columns(uwb.columns, UWB_COLUMNS, "uwb")
    a = a.with_columns(pl.col("site_id").cast(pl.String))
    if uwb is None or uwb.height == 0:  # no UWB evidence: the columns, all null
        return a.with_columns(
            pl.lit(None, a.schema["ts"]).alias("uwb_ts"),
            *(pl.lit(None, pl.Float64).alias(c) for c in ("uwb_lat", "uwb_lon", "uwb_error_m")),
            pl.lit(None, pl.Float64).alias("uwb_distance_m"),
        )
    u = uwb.select(*UWB_COLUMNS).filter(pl.col("error_m") <= th.uwb_max_error_m)
    u = u.with_columns(pl.col("site_id").cast(pl.String)).sort("technician_id", "site_id", "ts")
    u = u.rename({"ts": "uwb_ts", "lat": "uwb_lat", "lon": "uwb_lon", "error_m": "uwb_error_m"})
    a = a.sort("technician_id", "site_id", "ts").with_columns(pl.col("site_id").cast(pl.String))
    a = a.join_asof(
        u,
        left_on="ts",
        right_on="uwb_ts",
        by=["technician_id", "site_id"],
        strategy="nearest",
        check_sortedness=False,
        tolerance=th.max_fix_gap,
    )
    return a.with_columns(
        _dist("uwb_lat", "uwb_lon", "customer_lat", "customer_lon").alias("uwb_distance_m")
    )


def _probabilities(a: pl.DataFrame, th: ArrivalThresholds) -> pl.DataFrame:
    """``p_within_radius``, ``p_on_site`` and the evidence they rest on (``model_evidence``:
    uwb, stop, gps_fix or prior), under ``th.model`` (see ``geofence.arrival_model``).

    Evidence, first present: a UWB position; the stop centroid if the stop lasts until the
    arrival; the decisive fix if its accuracy is acceptable; the stop (one that ended before
    the arrival); the decisive fix of poor accuracy. A stop that ended before the tap is where
    the technician was, not where they are, when a usable fix says otherwise."""

    def arr(name: str) -> FloatArray:
        return a[name].cast(pl.Float64).fill_null(np.nan).to_numpy()

    factors, weights = hermite_misjudgement(th.model)
    uwb_d, stop_d, fix_d = arr("uwb_distance_m"), arr("stop_distance_m"), arr("fix_d")
    uwb_s = arr("uwb_error_m") / np.sqrt(2.0)
    stop_s = stop_sigma_m(arr("stop_se_m"), arr("stop_n_fixes"), th.model)
    fix_acc = arr("fix_accuracy_m")
    has_uwb = ~np.isnan(uwb_d) & ~np.isnan(uwb_s)
    has_stop = ~np.isnan(stop_d) & ~np.isnan(stop_s)
    has_fix = ~np.isnan(fix_d) & ~np.isnan(fix_acc)
    fix_ok = has_fix & a["fix_ok"].fill_null(False).to_numpy()
    ts_us = a["ts"].dt.epoch("us").to_numpy()
    stop_end_us = a["_stop_end_ts"].dt.epoch("us").fill_null(np.iinfo(np.int64).max).to_numpy()
    by_stop = has_stop & ((stop_end_us >= ts_us) | ~fix_ok)
    by_fix = has_fix & ~by_stop
    kind = np.select([has_uwb, by_stop, by_fix], ["uwb", "stop", "gps_fix"], "prior")
    d = np.select([has_uwb, by_stop, by_fix], [uwb_d, stop_d, fix_d], np.nan)
    single = np.select([has_uwb, by_stop], [uwb_s, stop_s], np.nan)
    # one σ per row, except a fix's: a mixture over how much its accuracy was misjudged
    fixed = by_fix & ~has_uwb
    p_in, p_site = np.empty(len(d)), np.empty(len(d))
    for rows, sigma, w in (
        (~fixed, single[~fixed], None),
        (fixed, fix_acc[fixed, None] * factors[None, :] / R68_PER_SIGMA, weights),
    ):
        p_in[rows], p_site[rows] = position_probabilities(
            d[rows],
            sigma,
            radius_m=th.radius_m,
            site_radius_m=th.site_radius_m,
            model=th.model,
            weights=w,
        )
    return a.with_columns(
        pl.Series("model_evidence", kind, dtype=pl.String),
        pl.Series("p_within_radius", np.round(p_in, 6), dtype=pl.Float64),
        pl.Series("p_on_site", np.round(p_site, 6), dtype=pl.Float64),
    )


def _decide(a: pl.DataFrame, th: ArrivalThresholds) -> pl.DataFrame:
    r = th.radius_m
    a = _probabilities(a, th)
    has_uwb = pl.col("uwb_lat").is_not_null()
    uwb_in = pl.col("uwb_distance_m") + th.accuracy_k * pl.col("uwb_error_m") <= r
    has_fix = pl.col("fix_ts").is_not_null()
    fix_ok = has_fix & pl.col("fix_ok")
    has_stop = pl.col("stop_distance_m").is_not_null()
    fix_in = fix_ok & (pl.col("fix_d") + th.accuracy_k * pl.col("fix_accuracy_m") <= r)
    stop_in = (pl.col("stop_distance_m") + th.stop_se_k * pl.col("stop_se_m") <= r).fill_null(False)
    on_site = pl.col("p_on_site") >= th.on_site_min_p
    elsewhere = pl.col("p_on_site") <= th.reject_max_p
    by_stop = pl.col("model_evidence") == "stop"
    # A single fix's accuracy understates its error about a third of the time: reject on GPS
    # fixes only when every usable fix within ±reject_window is also confidently off site (a
    # window shorter than max_fix_gap: a technician driving on after a false tap must not be
    # excused by where they were two minutes later).
    # The same guard holds when the probabilities rest on a stop: an acceptable fix near the
    # customer within ±reject_window vetoes a rejection.
    fixes_off_site = (pl.col("_w_min_lower_m") > th.site_radius_m).fill_null(False)
    reject = elsewhere & pl.when(fix_ok).then(fixes_off_site).otherwise(by_stop & has_stop)
    evidence = fix_ok | has_stop
    decided = pl.col("model_evidence")
    spoof: pl.Expr = pl.lit(None, pl.String)
    for name in reversed(SPOOFS):  # first name in SPOOFS wins
        flagged = pl.col(f"fix_{name}").fill_null(False) | pl.col(f"_w_{name}").fill_null(False)
        spoof = pl.when(has_fix & flagged).then(pl.lit(name)).otherwise(spoof)
    at_site = pl.col("site_id").is_not_null()
    # (condition, verdict, reason, decided_by), first match wins; reason None on the spoof
    # branch: the spoof rule's name; decided_by None on the model branches: the evidence
    # the probabilities rest on
    branches: list[tuple[pl.Expr, str, str | None, str | None]] = [
        (has_uwb & uwb_in, "AT_DOOR", None, "uwb"),
        (has_uwb & elsewhere, "REJECTED", None, "uwb"),
        (has_uwb & on_site, "ON_SITE", None, "uwb"),
        (has_uwb, "INCONCLUSIVE", "straddles_radius", "uwb"),
        (spoof.is_not_null(), "INCONCLUSIVE", None, None),
        (fix_in, "AT_DOOR", None, "gps_fix"),
        (stop_in, "AT_DOOR", None, "stop"),
        (evidence & reject, "REJECTED", None, None),
        (evidence & on_site, "ON_SITE", None, None),
        (~fix_ok & ~has_stop & at_site, "INCONCLUSIVE", "gps_blind_no_uwb", None),
        (~has_fix & ~has_stop, "INCONCLUSIVE", "no_fix_within_window", None),
        (~evidence, "INCONCLUSIVE", "poor_accuracy", None),
    ]
    fallback = ("INCONCLUSIVE", "straddles_radius", None)
    branch: pl.Expr = pl.lit(len(branches), pl.Int8)
    for k in reversed(range(len(branches))):
        branch = pl.when(branches[k][0]).then(pl.lit(k, pl.Int8)).otherwise(branch)
    table = [b[1:] for b in branches] + [fallback]
    model_branch = pl.col("_branch").is_in([7, 8])

    def pick(field: int) -> pl.Expr:
        values = pl.Series([row[field] for row in table], dtype=pl.String)
        return pl.col("_branch").replace_strict(list(range(len(table))), values)

    spoof_branch = pl.col("_branch") == 4
    physical = (
        pl.when(pl.col("stop_distance_m") + th.stop_se_k * pl.col("stop_se_m") <= r)
        .then(pl.col("start_ts"))
        .otherwise(pl.col("_first_in_radius_ts"))
    )
    return (
        a.with_columns(branch.alias("_branch"), spoof.alias("_spoof"))
        .with_columns(physical.alias("physical_arrival_ts"))
        .select(
            *[
                c
                for c in a.columns
                if not c.startswith(("b_", "f_", "fix_", "_", "stop_", "uwb_", "p_"))
                and c not in ("start_ts", "n_fixes_in_window", "model_evidence")
            ],
            pick(0).alias("verdict"),
            pl.when(spoof_branch).then(pl.col("_spoof")).otherwise(pick(1)).alias("reason"),
            pl.when(model_branch).then(decided).otherwise(pick(2)).alias("decided_by"),
            pl.col("b_ts").alias("fix_before_ts"),
            pl.col("f_ts").alias("fix_after_ts"),
            "fix_ts",
            "fix_lat",
            "fix_lon",
            pl.col("fix_d").alias("distance_m"),
            pl.col("fix_accuracy_m").alias("accuracy_m"),
            pl.col("n_fixes_in_window").fill_null(0),
            "stop_centroid_lat",
            "stop_centroid_lon",
            "stop_distance_m",
            "stop_se_m",
            "stop_n_fixes",
            "uwb_lat",
            "uwb_lon",
            "uwb_distance_m",
            "physical_arrival_ts",
            (pl.col("ts") - pl.col("physical_arrival_ts"))
            .dt.total_microseconds()
            .truediv(1e6)
            .alias("status_lag_s"),
            "p_within_radius",
            "p_on_site",
            "model_evidence",
            pl.lit(th.to_json()).alias("thresholds"),
            pl.lit(th.rule_version).alias("rule_version"),
        )
        .sort("technician_id", "ts", "event_id")
    )
