"""UWB positioning: site frame ↔ WGS84, multilateration, tag fusion and track smoothing.

Pure numpy/pyproj code: arrays in, arrays out, no I/O.

Conventions
-----------
* Site frame: right-handed, metres, ``z`` up. ``SiteFrame.rotation_deg`` is the bearing of the
  site's ``+y`` axis, clockwise from true north; ``0`` means ``+x`` east and ``+y`` north,
  ``90`` means ``+y`` east and ``+x`` south.
* ``multilaterate`` works on one tag: ``ranges_m`` is ``(n_epochs, n_anchors)`` with NaN for a
  missing range. Each epoch gets a ``reason``: ``ok``, ``high_residual`` (a position is given,
  but a range still disagrees by more than the outlier threshold), ``too_few_ranges`` or
  ``degenerate_geometry`` (both NaN).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl
from pyproj import Transformer

from geofence.errors import GeofenceError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

REASON_OK: Final = "ok"
REASON_HIGH_RESIDUAL: Final = "high_residual"
REASON_TOO_FEW_RANGES: Final = "too_few_ranges"
REASON_DEGENERATE: Final = "degenerate_geometry"

_MAX_CONDITION: Final = 1e10
_STEP_TOL_M: Final = 1e-6


class UwbSolveError(GeofenceError, ValueError):
    """Inputs to a UWB computation have the wrong shape or an impossible value."""


# --------------------------------------------------------------------------- site frame


@dataclass(frozen=True, slots=True)
class SiteFrame:
    """A local metric frame anchored at a WGS84 point.

    ``rotation_deg`` is the bearing of the site's ``+y`` axis, clockwise from true north
    (0 → x east / y north). The local plane is mapped with an azimuthal-equidistant
    projection centred on the origin, which is exact in distance from the origin and good to
    well under a millimetre over a building-sized site. Altitude is ``origin_alt_m + z_m``.
    """

    origin_lat: float
    origin_lon: float
    origin_alt_m: float = 0.0
    rotation_deg: float = 0.0

    def __post_init__(self) -> None:
        if not -90.0 <= self.origin_lat <= 90.0:
            raise UwbSolveError(f"SiteFrame: origin_lat={self.origin_lat} is outside [-90, 90]")
        if not -180.0 <= self.origin_lon <= 180.0:
            raise UwbSolveError(f"SiteFrame: origin_lon={self.origin_lon} is outside [-180, 180]")


@lru_cache(maxsize=32)
def _transformers(frame: SiteFrame) -> tuple[Transformer, Transformer]:
    aeqd = (
        f"+proj=aeqd +lat_0={frame.origin_lat!r} +lon_0={frame.origin_lon!r} "
        "+datum=WGS84 +units=m +no_defs"
    )
    to_local = Transformer.from_crs("EPSG:4326", aeqd, always_xy=True)
    to_wgs84 = Transformer.from_crs(aeqd, "EPSG:4326", always_xy=True)
    return to_local, to_wgs84


def local_to_wgs84(
    x_m: npt.ArrayLike, y_m: npt.ArrayLike, frame: SiteFrame
) -> tuple[FloatArray, FloatArray]:
    """Site-frame ``(x_m, y_m)`` → ``(lat_deg, lon_deg)``; vectorized, NaN passes through."""
    x = np.asarray(x_m, dtype=np.float64)
    y = np.asarray(y_m, dtype=np.float64)
    theta = np.deg2rad(frame.rotation_deg)
    east_m = x * np.cos(theta) + y * np.sin(theta)
    north_m = -x * np.sin(theta) + y * np.cos(theta)
    _, to_wgs84 = _transformers(frame)
    lon, lat = to_wgs84.transform(east_m, north_m)
    return np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)


def wgs84_to_local(
    lat_deg: npt.ArrayLike, lon_deg: npt.ArrayLike, frame: SiteFrame
) -> tuple[FloatArray, FloatArray]:
    """``(lat_deg, lon_deg)`` → site-frame ``(x_m, y_m)``; vectorized, NaN passes through."""
    to_local, _ = _transformers(frame)
    east, north = to_local.transform(
        np.asarray(lon_deg, dtype=np.float64), np.asarray(lat_deg, dtype=np.float64)
    )
    east_m = np.asarray(east, dtype=np.float64)
    north_m = np.asarray(north, dtype=np.float64)
    theta = np.deg2rad(frame.rotation_deg)
    x = east_m * np.cos(theta) - north_m * np.sin(theta)
    y = east_m * np.sin(theta) + north_m * np.cos(theta)
    return x, y


# --------------------------------------------------------------------------- multilateration


@dataclass(frozen=True, slots=True)
class Multilateration:
    """Per-epoch result of ``multilaterate``; every array has length ``n_epochs``.

    ``z_m`` is the fixed tag height when one was given. ``used`` is the
    ``(n_epochs, n_anchors)`` mask of ranges kept after outlier rejection.
    """

    x_m: FloatArray
    y_m: FloatArray
    z_m: FloatArray
    rmse_residual_m: FloatArray
    n_used: IntArray
    reason: npt.NDArray[np.str_]
    used: BoolArray

    def to_frame(self) -> pl.DataFrame:
        """The per-epoch columns as a polars frame (without the ``used`` mask)."""
        return pl.DataFrame(
            {
                "x_m": self.x_m,
                "y_m": self.y_m,
                "z_m": self.z_m,
                "rmse_residual_m": self.rmse_residual_m,
                "n_used": self.n_used,
                "reason": self.reason.astype(object),
            },
            schema_overrides={"reason": pl.String},
        )


def _validate(ranges_m: FloatArray, anchors_xyz_m: FloatArray, min_anchors: int) -> None:
    if ranges_m.ndim != 2:
        raise UwbSolveError(
            f"multilaterate: ranges_m has shape {ranges_m.shape}, expected (n_epochs, n_anchors)"
        )
    if anchors_xyz_m.shape != (ranges_m.shape[1], 3):
        raise UwbSolveError(
            f"multilaterate: anchors_xyz_m has shape {anchors_xyz_m.shape}, "
            f"expected ({ranges_m.shape[1]}, 3) to match ranges_m"
        )
    if not np.isfinite(anchors_xyz_m).all():
        raise UwbSolveError("multilaterate: anchors_xyz_m contains a non-finite coordinate")
    if min_anchors < 3:
        raise UwbSolveError(f"multilaterate: min_anchors={min_anchors}, expected >= 3")
    negative = np.argwhere(ranges_m < 0)
    if negative.size:
        epoch, anchor = negative[0]
        raise UwbSolveError(
            f"multilaterate: epoch {epoch} anchor {anchor}: range={ranges_m[epoch, anchor]} m "
            "is negative"
        )


def _linear_guess(
    r2: FloatArray, weight: FloatArray, anchors: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Closed-form guess from ``2 a·p − |p|² = |a|² − r²``, solved for ``(p, |p|²)``.

    ``anchors`` are the solved coordinates (2 or 3 columns); ``r2`` the squared ranges
    projected onto those coordinates. Returns the guesses and the condition numbers of the
    weighted normal matrices.
    """
    n_dim = anchors.shape[1]
    design = np.hstack([2.0 * anchors, -np.ones((anchors.shape[0], 1))])  # (A, d+1)
    rhs = (anchors**2).sum(axis=1)[None, :] - np.nan_to_num(r2)  # (E, A)
    normal = np.einsum("ea,ai,aj->eij", weight, design, design)
    moment = np.einsum("ea,ai,ea->ei", weight, design, rhs)
    cond = np.linalg.cond(normal + np.eye(n_dim + 1) * 1e-12)
    theta = np.linalg.solve(normal + np.eye(n_dim + 1) * 1e-9, moment[..., None])[..., 0]
    return theta[:, :n_dim], cond


def _gauss_newton(
    position: FloatArray,
    ranges_h: FloatArray,
    weight: FloatArray,
    anchors: FloatArray,
    max_iter: int,
) -> FloatArray:
    """Refine ``position`` (E, d) against ``ranges_h`` (E, A), batched over epochs."""
    n_dim = anchors.shape[1]
    ridge = np.eye(n_dim) * 1e-9
    safe_ranges = np.nan_to_num(ranges_h)
    for _ in range(max_iter):
        delta = position[:, None, :] - anchors[None, :, :]  # (E, A, d)
        dist = np.maximum(np.linalg.norm(delta, axis=2), 1e-9)
        jac = delta / dist[..., None]
        resid = dist - safe_ranges
        normal = np.einsum("ea,eai,eaj->eij", weight, jac, jac) + ridge
        grad = np.einsum("ea,eai,ea->ei", weight, jac, resid)
        step = np.linalg.solve(normal, -grad[..., None])[..., 0]
        step = np.where(np.isfinite(step), step, 0.0)
        position = position + step
        if float(np.max(np.abs(step), initial=0.0)) < _STEP_TOL_M:
            break
    return position


def _residuals(position: FloatArray, ranges_h: FloatArray, anchors: FloatArray) -> FloatArray:
    dist = np.linalg.norm(position[:, None, :] - anchors[None, :, :], axis=2)
    return dist - ranges_h  # NaN where the range is missing


def multilaterate(
    ranges_m: npt.ArrayLike,
    anchors_xyz_m: npt.ArrayLike,
    *,
    tag_height_m: float | None = None,
    range_bias_m: float = 0.0,
    min_anchors: int = 4,
    outlier_residual_m: float = 0.3,
    max_outlier_rounds: int = 2,
    max_iter: int = 10,
) -> Multilateration:
    """Position one tag per epoch from its anchor ranges.

    Stages, all vectorized over epochs:

    1. linearized least squares for an initial guess (unknowns ``p`` and ``|p|²``);
    2. Gauss-Newton on the range residuals (batched ``np.linalg.solve``);
    3. up to ``max_outlier_rounds`` rounds: where the largest absolute residual exceeds
       ``outlier_residual_m`` and more than ``min_anchors`` ranges remain, drop that range and
       refine again.

    With ``tag_height_m`` (a trolley, a forklift) the solve is 2D at that fixed height: each
    range is projected onto the horizontal plane first. Use it whenever the anchors are
    (nearly) coplanar — then the height is unobservable and a 3D solve is ill-conditioned
    (exactly coplanar anchors give ``degenerate_geometry`` in 3D).

    ``range_bias_m`` is subtracted from every range first (an antenna-delay calibration, see
    ``estimate_range_bias_m``); a corrected range below zero is clipped to zero.
    """
    ranges = np.array(ranges_m, dtype=np.float64, ndmin=2)
    anchors_xyz = np.asarray(anchors_xyz_m, dtype=np.float64)
    _validate(ranges, anchors_xyz, min_anchors)
    ranges = np.maximum(ranges - range_bias_m, 0.0)  # NaN stays NaN
    n_epochs = ranges.shape[0]

    if tag_height_m is None:
        anchors = anchors_xyz
        ranges_h = ranges
    else:
        anchors = anchors_xyz[:, :2]
        dz2 = (anchors_xyz[:, 2] - tag_height_m) ** 2
        # A range shorter than the height difference projects to 0 (tag right under anchor).
        ranges_h = np.sqrt(np.maximum(ranges**2 - dz2[None, :], 0.0))

    used = np.isfinite(ranges_h)
    enough = used.sum(axis=1) >= min_anchors
    used &= enough[:, None]
    weight = used.astype(np.float64)

    guess, cond = _linear_guess(ranges_h**2, weight, anchors)
    degenerate = enough & ~(cond < _MAX_CONDITION)
    weight[degenerate] = 0.0
    used[degenerate] = False
    position = _gauss_newton(guess, ranges_h, weight, anchors, max_iter)

    for _ in range(max_outlier_rounds):
        abs_resid = np.where(used, np.abs(_residuals(position, ranges_h, anchors)), -np.inf)
        worst = np.argmax(abs_resid, axis=1)
        worst_value = abs_resid[np.arange(n_epochs), worst]
        drop = (worst_value > outlier_residual_m) & (used.sum(axis=1) > min_anchors)
        if not drop.any():
            break
        used[drop, worst[drop]] = False
        weight = used.astype(np.float64)
        position[drop] = _gauss_newton(
            position[drop], ranges_h[drop], weight[drop], anchors, max_iter
        )

    resid = np.where(used, _residuals(position, ranges_h, anchors), np.nan)
    n_used = used.sum(axis=1).astype(np.int64)
    rmse = np.sqrt(np.nansum(resid**2, axis=1) / np.maximum(n_used, 1))
    max_abs = np.max(np.abs(np.nan_to_num(resid)), axis=1)

    reason = np.full(n_epochs, REASON_OK, dtype="<U32")
    reason[max_abs > outlier_residual_m] = REASON_HIGH_RESIDUAL
    reason[degenerate] = REASON_DEGENERATE
    reason[~enough] = REASON_TOO_FEW_RANGES
    bad = ~enough | degenerate
    position[bad] = np.nan
    rmse = np.where(bad, np.nan, rmse)
    n_used = np.where(bad, 0, n_used)

    if tag_height_m is None:
        z_m = position[:, 2].copy()
    else:
        z_m = np.where(bad, np.nan, float(tag_height_m))
    return Multilateration(
        x_m=position[:, 0].copy(),
        y_m=position[:, 1].copy(),
        z_m=z_m,
        rmse_residual_m=rmse,
        n_used=n_used,
        reason=reason,
        used=used,
    )


def estimate_range_bias_m(
    ranges_m: npt.ArrayLike,
    anchors_xyz_m: npt.ArrayLike,
    *,
    tag_height_m: float | None = None,
    candidates_m: npt.ArrayLike | None = None,
    min_anchors: int = 4,
    max_epochs: int = 2000,
) -> float:
    """Self-calibrate a constant range bias (UWB antenna delay) without ground truth.

    UWB two-way ranging typically over-reads by a constant 0.1-0.3 m. With more anchors than
    unknowns the bias shows up in the multilateration residuals, so this returns the candidate
    (default -0.2 ... 0.5 m in 1 cm steps) whose median per-epoch residual RMSE is smallest.
    Uses at most ``max_epochs`` evenly spaced epochs; stack several tags' ranges as more rows.
    """
    ranges = np.array(ranges_m, dtype=np.float64, ndmin=2)
    if candidates_m is None:
        candidates = np.round(np.arange(-0.2, 0.5001, 0.01), 4)
    else:
        candidates = np.asarray(candidates_m, dtype=np.float64)
    if candidates.ndim != 1 or candidates.size == 0:
        raise UwbSolveError("estimate_range_bias_m: candidates_m must be a non-empty 1-D array")
    step = max(1, ranges.shape[0] // max(max_epochs, 1))
    sample = ranges[::step]
    scores = np.full(candidates.size, np.inf)
    for i, bias in enumerate(candidates):
        rmse = multilaterate(
            sample,
            anchors_xyz_m,
            tag_height_m=tag_height_m,
            range_bias_m=float(bias),
            min_anchors=min_anchors,
            max_outlier_rounds=0,
        ).rmse_residual_m
        solved = rmse[np.isfinite(rmse)]
        if solved.size:
            scores[i] = float(np.median(solved))
    if not np.isfinite(scores).any():
        raise UwbSolveError(
            "estimate_range_bias_m: no epoch has enough ranges to solve; cannot calibrate"
        )
    return float(candidates[int(np.argmin(scores))])


# --------------------------------------------------------------------------- rigid body


@dataclass(frozen=True, slots=True)
class BodyPose2D:
    """Per-epoch planar pose of a rigid body carrying several tags."""

    x_m: FloatArray
    y_m: FloatArray
    heading_rad: FloatArray
    n_tags: IntArray


def fuse_tags(tags_xy_m: npt.ArrayLike, body_offsets_xy_m: npt.ArrayLike) -> BodyPose2D:
    """Fit the planar pose of a rigid body from its tags' positions, per epoch.

    ``tags_xy_m`` is ``(n_epochs, n_tags, 2)`` (NaN for a tag without a fix);
    ``body_offsets_xy_m`` is ``(n_tags, 2)``: each tag in the body frame. The fit is a 2D
    Kabsch/Procrustes (rotation + translation, no reflection) on the tags with a fix, so the
    body origin and heading come out together; ``heading_rad`` is the angle of the body ``+x``
    axis from the site ``+x`` axis, counter-clockwise. Epochs with fewer than two tags → NaN.
    """
    tags = np.asarray(tags_xy_m, dtype=np.float64)
    body = np.asarray(body_offsets_xy_m, dtype=np.float64)
    if tags.ndim != 3 or tags.shape[2] != 2:
        raise UwbSolveError(
            f"fuse_tags: tags_xy_m has shape {tags.shape}, expected (n_epochs, n_tags, 2)"
        )
    if body.shape != (tags.shape[1], 2):
        raise UwbSolveError(
            f"fuse_tags: body_offsets_xy_m has shape {body.shape}, expected ({tags.shape[1]}, 2)"
        )
    valid = np.asarray(np.isfinite(tags).all(axis=2), dtype=np.bool_)  # (E, T)
    weight = valid.astype(np.float64)
    n_tags = np.asarray(valid.sum(axis=1), dtype=np.int64)
    count = np.asarray(np.maximum(n_tags, 1), dtype=np.float64)[:, None]
    world = np.nan_to_num(tags)
    world_c = np.asarray((weight[..., None] * world).sum(axis=1), dtype=np.float64) / count
    body_c = np.asarray(weight @ body, dtype=np.float64) / count  # (E, 2)
    qw = world - world_c[:, None, :]
    bw = body[None, :, :] - body_c[:, None, :]
    cross = (weight * (bw[..., 0] * qw[..., 1] - bw[..., 1] * qw[..., 0])).sum(axis=1)
    dot = (weight * (bw[..., 0] * qw[..., 0] + bw[..., 1] * qw[..., 1])).sum(axis=1)
    heading = np.arctan2(cross, dot)
    cos_h, sin_h = np.cos(heading), np.sin(heading)
    origin_x = world_c[:, 0] - (cos_h * body_c[:, 0] - sin_h * body_c[:, 1])
    origin_y = world_c[:, 1] - (sin_h * body_c[:, 0] + cos_h * body_c[:, 1])
    bad = n_tags < 2
    return BodyPose2D(
        x_m=np.where(bad, np.nan, origin_x),
        y_m=np.where(bad, np.nan, origin_y),
        heading_rad=np.where(bad, np.nan, heading),
        n_tags=n_tags.astype(np.int64),
    )


# --------------------------------------------------------------------------- smoothing


def _as_seconds(ts: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(ts)
    if np.issubdtype(arr.dtype, np.datetime64):
        return (arr - arr.min()).astype("timedelta64[ns]").astype(np.float64) / 1e9
    return arr.astype(np.float64)


def smooth_track(
    ts: npt.ArrayLike,
    x_m: npt.ArrayLike,
    y_m: npt.ArrayLike,
    *,
    window: timedelta,
) -> tuple[FloatArray, FloatArray]:
    """Centred moving median over time: each fix → the median of fixes within ±window/2.

    ``ts`` is datetime64 or seconds, sorted ascending. NaN fixes are ignored (an epoch whose
    whole window is NaN stays NaN). Vectorized by gathering each window into a padded
    ``(n, max_window_len)`` matrix, so memory grows with the densest window.
    """
    t_s = _as_seconds(ts)
    x = np.asarray(x_m, dtype=np.float64)
    y = np.asarray(y_m, dtype=np.float64)
    if not (t_s.shape == x.shape == y.shape) or t_s.ndim != 1:
        raise UwbSolveError(
            f"smooth_track: ts, x_m, y_m have shapes {t_s.shape}, {x.shape}, {y.shape}; "
            "expected equal 1-D shapes"
        )
    if np.any(np.diff(t_s) < 0):
        raise UwbSolveError("smooth_track: ts is not sorted ascending")
    half_s = window.total_seconds() / 2.0
    if half_s < 0:
        raise UwbSolveError(f"smooth_track: window={window} is negative")
    if t_s.size == 0:
        return x.copy(), y.copy()
    lo = np.searchsorted(t_s, t_s - half_s, side="left")
    hi = np.searchsorted(t_s, t_s + half_s, side="right")
    width = int((hi - lo).max())
    idx = lo[:, None] + np.arange(width)[None, :]
    inside = idx < hi[:, None]
    idx = np.minimum(idx, t_s.size - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
        sx = np.nanmedian(np.where(inside, x[idx], np.nan), axis=1)
        sy = np.nanmedian(np.where(inside, y[idx], np.nan), axis=1)
    return sx, sy
