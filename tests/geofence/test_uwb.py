"""UWB positioning: site frame, multilateration, tag fusion, smoothing, and the CUHK-SZ run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest

from geofence.errors import GeofenceError
from geofence.uwb import (
    REASON_DEGENERATE,
    REASON_HIGH_RESIDUAL,
    REASON_OK,
    REASON_TOO_FEW_RANGES,
    SiteFrame,
    UwbSolveError,
    estimate_range_bias_m,
    fuse_tags,
    local_to_wgs84,
    multilaterate,
    smooth_track,
    wgs84_to_local,
)

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------- builders


def make_anchors(*, coplanar: bool = False) -> FloatArray:
    """Eight anchors around a 8 m × 6 m room; staggered heights unless ``coplanar``."""
    xy = [(-4, 3), (0, 3), (4, 3), (4, 0), (4, -3), (0, -3), (-4, -3), (-4, 0)]
    heights = [1.0] * 8 if coplanar else [0.5, 2.5, 1.0, 2.8, 0.6, 2.2, 1.4, 2.9]
    return np.array([(x, y, z) for (x, y), z in zip(xy, heights, strict=True)], dtype=float)


def make_ranges(
    positions_xyz_m: FloatArray,
    anchors_xyz_m: FloatArray,
    *,
    noise_m: float = 0.0,
    bias_m: float = 0.0,
    seed: int = 7,
) -> FloatArray:
    """Ranges from each position to each anchor, plus Gaussian noise and a constant bias."""
    rng = np.random.default_rng(seed)
    true = np.linalg.norm(positions_xyz_m[:, None, :] - anchors_xyz_m[None, :, :], axis=2)
    return np.asarray(true + bias_m + rng.normal(0.0, noise_m, true.shape), dtype=np.float64)


def make_positions(n: int, *, z_m: float | None = None, seed: int = 3) -> FloatArray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform([-3.0, -2.0], [3.0, 2.0], size=(n, 2))
    z = np.full(n, z_m) if z_m is not None else rng.uniform(0.8, 2.0, n)
    return np.column_stack([xy, z])


# --------------------------------------------------------------------------- site frame


@pytest.mark.parametrize("rotation_deg", [0.0, 37.5, 90.0, -120.0])
def test_site_frame_round_trip(rotation_deg: float) -> None:
    frame = SiteFrame(
        origin_lat=22.6, origin_lon=114.2, origin_alt_m=30.0, rotation_deg=rotation_deg
    )
    x = np.array([0.0, 10.0, -250.0, 1234.5, np.nan])
    y = np.array([0.0, -5.0, 400.0, -987.6, 1.0])
    lat, lon = local_to_wgs84(x, y, frame)
    x2, y2 = wgs84_to_local(lat, lon, frame)
    np.testing.assert_allclose(x2[:4], x[:4], atol=1e-6)
    np.testing.assert_allclose(y2[:4], y[:4], atol=1e-6)
    assert np.isnan(lat[4])
    assert np.isnan(x2[4])


@pytest.mark.parametrize(
    ("rotation_deg", "x_m", "y_m", "expect_dlat_sign", "expect_dlon_sign"),
    [
        (0.0, 100.0, 0.0, 0, 1),  # +x is east
        (0.0, 0.0, 100.0, 1, 0),  # +y is north
        (90.0, 0.0, 100.0, 0, 1),  # +y bearing 90 → east
        (90.0, 100.0, 0.0, -1, 0),  # then +x points south
    ],
)
def test_site_frame_axis_bearing(
    rotation_deg: float, x_m: float, y_m: float, expect_dlat_sign: int, expect_dlon_sign: int
) -> None:
    frame = SiteFrame(origin_lat=51.5, origin_lon=-0.1, rotation_deg=rotation_deg)
    lat, lon = local_to_wgs84(np.array([x_m]), np.array([y_m]), frame)
    dlat, dlon = lat[0] - 51.5, lon[0] + 0.1
    assert np.sign(np.round(dlat, 7)) == expect_dlat_sign
    assert np.sign(np.round(dlon, 7)) == expect_dlon_sign


def test_site_frame_rejects_bad_origin() -> None:
    with pytest.raises(UwbSolveError, match=r"origin_lat=95.0 is outside \[-90, 90\]"):
        SiteFrame(origin_lat=95.0, origin_lon=0.0)


# --------------------------------------------------------------------------- multilateration


def test_multilaterate_3d_exact_ranges() -> None:
    anchors = make_anchors()
    truth = make_positions(50)
    result = multilaterate(make_ranges(truth, anchors), anchors)
    np.testing.assert_allclose(
        np.column_stack([result.x_m, result.y_m, result.z_m]), truth, atol=1e-6
    )
    assert (result.reason == REASON_OK).all()
    assert (result.n_used == 8).all()
    assert float(np.max(result.rmse_residual_m)) < 1e-6


def test_multilaterate_2d_fixed_height_with_noise_and_coplanar_anchors() -> None:
    anchors = make_anchors(coplanar=True)
    truth = make_positions(400, z_m=0.4)
    ranges = make_ranges(truth, anchors, noise_m=0.03)
    result = multilaterate(ranges, anchors, tag_height_m=0.4)
    err = np.hypot(result.x_m - truth[:, 0], result.y_m - truth[:, 1])
    assert float(np.sqrt(np.mean(err**2))) < 0.05
    np.testing.assert_array_equal(result.z_m, 0.4)


@pytest.mark.parametrize(
    ("missing_anchors", "min_anchors", "expected_reason", "expected_n_used"),
    [
        ([], 4, REASON_OK, 8),
        ([0, 5, 6], 4, REASON_OK, 5),
        ([0, 1, 2, 3], 4, REASON_OK, 4),
        ([0, 1, 2, 3, 4], 4, REASON_TOO_FEW_RANGES, 0),
        ([0, 1, 2, 3, 4], 3, REASON_OK, 3),
        (list(range(8)), 4, REASON_TOO_FEW_RANGES, 0),
    ],
)
def test_multilaterate_missing_ranges(
    missing_anchors: list[int], min_anchors: int, expected_reason: str, expected_n_used: int
) -> None:
    anchors = make_anchors(coplanar=True)
    truth = make_positions(3, z_m=1.2)
    ranges = make_ranges(truth, anchors)
    ranges[:, missing_anchors] = np.nan
    result = multilaterate(ranges, anchors, tag_height_m=1.2, min_anchors=min_anchors)
    assert list(result.reason) == [expected_reason] * 3
    assert list(result.n_used) == [expected_n_used] * 3
    if expected_reason == REASON_OK:
        np.testing.assert_allclose(result.x_m, truth[:, 0], atol=1e-6)
    else:
        assert np.isnan(result.x_m).all()
        assert np.isnan(result.rmse_residual_m).all()


def test_multilaterate_rejects_outlier_range() -> None:
    anchors = make_anchors(coplanar=True)
    truth = make_positions(20, z_m=1.0)
    ranges = make_ranges(truth, anchors, noise_m=0.02)
    ranges[:, 3] += 1.5  # a multipath reflection on anchor 3
    result = multilaterate(ranges, anchors, tag_height_m=1.0, outlier_residual_m=0.3)
    assert not result.used[:, 3].any()
    assert (result.n_used == 7).all()
    assert (result.reason == REASON_OK).all()
    err = np.hypot(result.x_m - truth[:, 0], result.y_m - truth[:, 1])
    assert float(err.max()) < 0.08


def test_multilaterate_keeps_min_anchors_and_flags_high_residual() -> None:
    anchors = make_anchors(coplanar=True)[:4]
    truth = make_positions(5, z_m=1.0)
    ranges = make_ranges(truth, anchors)
    ranges[:, 0] += 1.0
    result = multilaterate(ranges, anchors, tag_height_m=1.0, min_anchors=4)
    assert (result.n_used == 4).all()
    assert (result.reason == REASON_HIGH_RESIDUAL).all()


def test_multilaterate_degenerate_geometry() -> None:
    anchors = np.array([(float(i), 0.0, 1.0) for i in range(5)])  # all on one line
    ranges = make_ranges(np.array([[1.5, 2.0, 1.0]]), anchors)
    result = multilaterate(ranges, anchors, tag_height_m=1.0)
    assert result.reason[0] == REASON_DEGENERATE
    assert np.isnan(result.x_m[0])


def test_multilaterate_to_frame() -> None:
    anchors = make_anchors()
    frame = multilaterate(make_ranges(make_positions(2), anchors), anchors).to_frame()
    assert frame.columns == ["x_m", "y_m", "z_m", "rmse_residual_m", "n_used", "reason"]
    assert frame.schema["reason"] == pl.String
    assert frame.height == 2


@pytest.mark.parametrize(
    ("ranges", "anchors", "message"),
    [
        (np.ones((2, 3, 1)), np.zeros((3, 3)), r"ranges_m has shape \(2, 3, 1\)"),
        (np.ones((2, 3)), np.zeros((4, 3)), r"anchors_xyz_m has shape \(4, 3\), expected \(3, 3\)"),
        (np.array([[1.0, -2.0, 1.0]]), np.eye(3), r"epoch 0 anchor 1: range=-2.0 m is negative"),
        (np.ones((1, 3)), np.full((3, 3), np.nan), "non-finite coordinate"),
    ],
)
def test_multilaterate_input_errors(ranges: FloatArray, anchors: FloatArray, message: str) -> None:
    with pytest.raises(UwbSolveError, match=message) as info:
        multilaterate(ranges, anchors)
    assert isinstance(info.value, GeofenceError)
    assert isinstance(info.value, ValueError)


def test_multilaterate_min_anchors_below_three_is_an_error() -> None:
    with pytest.raises(UwbSolveError, match="min_anchors=2, expected >= 3"):
        multilaterate(np.ones((1, 4)), make_anchors()[:4], min_anchors=2)


@pytest.mark.parametrize("bias_m", [0.0, 0.12, 0.25])
def test_estimate_range_bias_recovers_constant_bias(bias_m: float) -> None:
    anchors = make_anchors(coplanar=True)
    truth = make_positions(300, z_m=0.9)
    ranges = make_ranges(truth, anchors, noise_m=0.03, bias_m=bias_m)
    found = estimate_range_bias_m(ranges, anchors, tag_height_m=0.9)
    assert found == pytest.approx(bias_m, abs=0.02)


def test_estimate_range_bias_without_any_solvable_epoch() -> None:
    with pytest.raises(UwbSolveError, match="no epoch has enough ranges"):
        estimate_range_bias_m(np.full((3, 8), np.nan), make_anchors(), tag_height_m=1.0)


# --------------------------------------------------------------------------- fusion, smoothing


def make_tags_on_body(
    origin_xy_m: FloatArray, heading_rad: FloatArray, offsets_xy_m: FloatArray
) -> FloatArray:
    c, s = np.cos(heading_rad), np.sin(heading_rad)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (E, 2, 2)
    return np.asarray(origin_xy_m[:, None, :] + np.einsum("eij,tj->eti", rot, offsets_xy_m))


def test_fuse_tags_recovers_pose_and_handles_missing_tags() -> None:
    offsets = np.array([(-0.07, -0.14), (-0.075, 0.14), (0.2, 0.145)])
    origin = np.array([(1.0, 2.0), (-0.5, 0.3), (2.0, -1.0), (0.0, 0.0)])
    heading = np.array([0.0, 1.0, -2.5, 3.0])
    tags = make_tags_on_body(origin, heading, offsets)
    tags[1, 2] = np.nan  # two tags left: still a pose
    tags[3, 1:] = np.nan  # one tag: no heading, no pose
    pose = fuse_tags(tags, offsets)
    np.testing.assert_allclose(pose.x_m[:3], origin[:3, 0], atol=1e-9)
    np.testing.assert_allclose(pose.y_m[:3], origin[:3, 1], atol=1e-9)
    np.testing.assert_allclose(pose.heading_rad[:3], heading[:3], atol=1e-9)
    assert list(pose.n_tags) == [3, 2, 3, 1]
    assert np.isnan(pose.x_m[3])
    assert np.isnan(pose.heading_rad[3])


def test_fuse_tags_shape_error() -> None:
    with pytest.raises(
        UwbSolveError, match=r"body_offsets_xy_m has shape \(2, 2\), expected \(3, 2\)"
    ):
        fuse_tags(np.zeros((4, 3, 2)), np.zeros((2, 2)))


def test_smooth_track_removes_spike_and_ignores_nan() -> None:
    ts = np.arange(0.0, 2.0, 0.1)
    x = ts * 0.5
    y = np.zeros_like(ts)
    x[7] += 3.0  # a one-sample spike
    y[12] = np.nan
    sx, sy = smooth_track(ts, x, y, window=timedelta(seconds=0.45))
    assert abs(sx[7] - ts[7] * 0.5) < 0.06
    assert np.isfinite(sy).all()


def test_smooth_track_accepts_datetime64_and_rejects_unsorted() -> None:
    ts = np.array(["2024-01-01T00:00:00", "2024-01-01T00:00:01"], dtype="datetime64[ms]")
    sx, _ = smooth_track(ts, [0.0, 2.0], [0.0, 0.0], window=timedelta(seconds=3))
    np.testing.assert_allclose(sx, [1.0, 1.0])
    with pytest.raises(UwbSolveError, match="not sorted"):
        smooth_track(ts[::-1], [0.0, 2.0], [0.0, 0.0], window=timedelta(seconds=3))


# --------------------------------------------------------------------------- real data

CUHKSZ_ANCHORS_XYZ_M = np.array(
    [
        (-3.4203, 3.0053, 1.0442),
        (0.0016, 3.0110, 1.0446),
        (3.6056, 2.9795, 1.0463),
        (3.6011, -0.0008, 1.0422),
        (3.5674, -3.0087, 1.0443),
        (-0.0072, -2.9652, 1.0444),
        (-3.4673, -2.9587, 1.0445),
        (-3.4858, -0.0098, 1.0457),
    ]
)
CUHKSZ_TAG_OFFSETS_XY_M = np.array([(-0.0689, -0.1423), (-0.0750, 0.1402), (0.2034, 0.1451)])
CUHKSZ_TAG_HEIGHT_M = 0.97  # trolley tag plane (motion-capture z is 0.95-0.99 m)
TIME_FORMAT = "%Y-%m-%d %H:%M:%S%.f"  # hour is not zero-padded; chrono's %H accepts that


def read_cuhksz(folder: Path) -> tuple[FloatArray, FloatArray, pl.DataFrame]:
    """Minimal parse → (uwb t_s, ranges (E, 24), mocap t_s/x_m/y_m); t_s counts from UWB start."""
    uwb = pl.read_csv(folder / "UWB_dynamic_exp_fast.csv", has_header=False)
    uwb_ts = uwb.get_column(uwb.columns[0]).str.to_datetime(TIME_FORMAT)
    ranges = uwb.select(pl.all().exclude(uwb.columns[0]).cast(pl.Float64)).to_numpy()
    mocap = pl.read_csv(folder / "motion_capture_dynamic_exp_fast.csv")
    mocap_ts = mocap.get_column("time").str.to_datetime(TIME_FORMAT)
    start = uwb_ts[0]
    uwb_t_s = ((uwb_ts - start).dt.total_microseconds() / 1e6).to_numpy()
    mocap_frame = pl.DataFrame(
        {
            "t_s": (mocap_ts - start).dt.total_microseconds() / 1e6,
            "x_m": mocap.get_column("x"),
            "y_m": mocap.get_column("y"),
        }
    )
    return uwb_t_s, ranges, mocap_frame


def rmse_2d_against_mocap(
    t_s: FloatArray, x_m: FloatArray, y_m: FloatArray, mocap: pl.DataFrame, offset_s: float
) -> float:
    mt = mocap.get_column("t_s").to_numpy()
    gx = np.interp(t_s + offset_s, mt, mocap.get_column("x_m").to_numpy())
    gy = np.interp(t_s + offset_s, mt, mocap.get_column("y_m").to_numpy())
    return float(np.sqrt(np.nanmean((x_m - gx) ** 2 + (y_m - gy) ** 2)))


@pytest.mark.realdata
def test_cuhksz_trolley_track_matches_motion_capture(realdata: Path) -> None:
    folder = realdata / "uwb_indoor_cuhksz"
    t_s, ranges, mocap = read_cuhksz(folder)
    assert ranges.shape == (13481, 24)
    assert int(np.isnan(ranges).sum()) == 30
    per_tag = [ranges[:, tag::3] for tag in range(3)]  # columns a0-t0, a0-t1, a0-t2, a1-t0, …

    # Antenna-delay calibration from the UWB residuals alone (no ground truth involved).
    bias_m = estimate_range_bias_m(
        np.vstack(per_tag), CUHKSZ_ANCHORS_XYZ_M, tag_height_m=CUHKSZ_TAG_HEIGHT_M
    )

    def body_origin(range_bias_m: float) -> tuple[FloatArray, FloatArray, list[str]]:
        fixes = [
            multilaterate(
                tag_ranges,
                CUHKSZ_ANCHORS_XYZ_M,
                tag_height_m=CUHKSZ_TAG_HEIGHT_M,
                range_bias_m=range_bias_m,
            )
            for tag_ranges in per_tag
        ]
        tags_xy = np.stack([np.column_stack([f.x_m, f.y_m]) for f in fixes], axis=1)
        pose = fuse_tags(tags_xy, CUHKSZ_TAG_OFFSETS_XY_M)
        reasons = [f"{r}={int((f.reason == r).sum())}" for f in fixes for r in np.unique(f.reason)]
        return pose.x_m, pose.y_m, reasons

    x_m, y_m, reasons = body_origin(bias_m)
    offsets_s = np.round(np.arange(-0.5, 0.5001, 0.01), 3)
    errors = [rmse_2d_against_mocap(t_s, x_m, y_m, mocap, float(o)) for o in offsets_s]
    best = int(np.argmin(errors))
    clock_offset_s, rmse_m = float(offsets_s[best]), errors[best]

    raw_x, raw_y, _ = body_origin(0.0)
    rmse_uncalibrated_m = rmse_2d_against_mocap(t_s, raw_x, raw_y, mocap, clock_offset_s)
    sx, sy = smooth_track(t_s, x_m, y_m, window=timedelta(seconds=0.3))
    rmse_smoothed_m = rmse_2d_against_mocap(t_s, sx, sy, mocap, clock_offset_s)
    print(
        f"\nCUHK-SZ fast run: {t_s.size} epochs, range bias {bias_m:.2f} m (self-calibrated), "
        f"clock offset {clock_offset_s:+.2f} s (mocap = uwb + offset); 2D RMSE of body origin "
        f"{rmse_m:.3f} m (uncalibrated {rmse_uncalibrated_m:.3f} m, 0.3 s median-smoothed "
        f"{rmse_smoothed_m:.3f} m); tag reasons {reasons}"
    )
    assert 0.05 <= bias_m <= 0.30
    assert abs(clock_offset_s) < 0.45  # found inside the search, not at its edge
    assert rmse_m <= 0.20
    assert rmse_smoothed_m <= rmse_m


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: SiteFrame(origin_lat=0.0, origin_lon=181.0), r"origin_lon=181.0 is outside"),
        (
            lambda: estimate_range_bias_m(np.ones((2, 8)), make_anchors(), candidates_m=[]),
            "candidates_m must be a non-empty 1-D array",
        ),
        (lambda: fuse_tags(np.zeros((4, 3)), np.zeros((3, 2))), r"tags_xy_m has shape \(4, 3\)"),
        (
            lambda: smooth_track([0.0, 1.0], [0.0], [0.0, 1.0], window=timedelta(seconds=1)),
            r"shapes \(2,\), \(1,\), \(2,\)",
        ),
        (
            lambda: smooth_track([0.0], [0.0], [0.0], window=timedelta(seconds=-1)),
            "is negative",
        ),
    ],
)
def test_uwb_argument_errors(call: Callable[[], object], message: str) -> None:
    with pytest.raises(UwbSolveError, match=message):
        call()


def test_smooth_track_empty_and_estimate_with_explicit_candidates() -> None:
    sx, sy = smooth_track(np.array([]), np.array([]), np.array([]), window=timedelta(seconds=1))
    assert sx.size == 0
    assert sy.size == 0
    anchors = make_anchors(coplanar=True)
    ranges = make_ranges(make_positions(50, z_m=1.0), anchors, bias_m=0.1)
    found = estimate_range_bias_m(ranges, anchors, tag_height_m=1.0, candidates_m=[0.0, 0.1, 0.2])
    assert found == pytest.approx(0.1)


def test_multilaterate_3d_with_coplanar_anchors_is_degenerate() -> None:
    anchors = make_anchors(coplanar=True)  # height unobservable: pass tag_height_m instead
    result = multilaterate(make_ranges(make_positions(3), anchors), anchors)
    assert list(result.reason) == [REASON_DEGENERATE] * 3
    assert list(result.n_used) == [0, 0, 0]
