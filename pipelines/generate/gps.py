"""Noisy GPS fixes sampled from a technician-day track.

Error model (per technician-day, all vectorized over the day's fixes)
-------------------------------------------------------------------
* Sampling: one fix every 5–10 s (uniform) from the first to the last knot; none while the
  technician is inside an indoor site (GPS lost; UWB covers it).
* Multipath bias: every stationary spell (waiting, idle, parked, dwelling at a customer) gets
  its own constant offset of 0–8 m in a uniformly random direction; moving fixes get none.
* Time-correlated noise: AR(1) per axis, ``e[k] = φ e[k-1] + sqrt(1-φ²) σ[k] w[k]`` with
  φ = 0.9 per fix and ``σ`` drawn per day in 2–5 m, so the marginal std is ``σ``.
* Urban canyons: a Poisson(4) number of 2–15 min segments per day in which ``σ`` is 8–15 m.
* Reported accuracy: the model's 68 % radius ``sqrt(|bias|² + (1.51 σ)²)`` times 1.12 and a
  lognormal misjudgement ``exp(N(0, 0.35))``, clipped to 3–15 m and rounded to 0.1 m. Because the
  receiver neither knows the bias exactly nor reports past 15 m, the true error exceeds the
  reported 1σ accuracy about a third of the time (tests hold it within 0.25–0.42).
* Speed and heading come from the true motion plus noise; heading is null when stationary.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy.signal import lfilter

from pipelines.generate.daysim import DayTrack
from pipelines.generate.geo import to_latlon

FloatArray = npt.NDArray[np.float64]
PHI = 0.9
MAX_BIAS_M = 8.0
R68_PER_SIGMA = math.sqrt(-2.0 * math.log(0.32))  # 1.51: 68 % radius of a 2D Gaussian
ACCURACY_LOGNORMAL_SIGMA = 0.35
ACCURACY_SCALE = 1.12  # calibrates P(true error > reported accuracy) to about 1/3
GPS_SCHEMA: dict[str, pl.DataType] = {
    "technician_id": pl.String(),
    "ts": pl.Datetime("ms", "UTC"),
    "lat": pl.Float64(),
    "lon": pl.Float64(),
    "accuracy_m": pl.Float64(),
    "speed_mps": pl.Float64(),
    "heading_deg": pl.Float64(),
    "altitude_m": pl.Float64(),
    "hdop": pl.Float64(),
    "satellites": pl.Int64(),
    "mock_location": pl.Boolean(),
    "datum": pl.String(),
    "source": pl.String(),
}


def _sample_times(track: DayTrack, rng: np.random.Generator) -> FloatArray:
    t0, t1 = track.t_s[0], track.t_s[-1]
    n_est = int((t1 - t0) / 5.0) + 2
    ts = t0 + np.concatenate([[0.0], np.cumsum(rng.uniform(5.0, 10.0, n_est))])
    ts = np.round(ts[ts < t1], 3)
    if track.gaps_s:
        gaps = np.asarray(track.gaps_s)
        idx = np.searchsorted(gaps[:, 0], ts, side="right") - 1
        inside = (
            (idx >= 0) & (ts < gaps[np.maximum(idx, 0), 1]) & (ts > gaps[np.maximum(idx, 0), 0])
        )
        ts = ts[~inside]
    return np.asarray(ts, dtype=np.float64)


def _sigma(ts: FloatArray, rng: np.random.Generator) -> FloatArray:
    sigma = np.full(len(ts), rng.uniform(2.0, 5.0))
    if len(ts) == 0:
        return sigma
    for _ in range(int(rng.poisson(4))):
        s = rng.uniform(ts[0], ts[-1])
        sigma[(ts >= s) & (ts < s + rng.uniform(120, 900))] = rng.uniform(8.0, 15.0)
    return sigma


def sample_fixes(track: DayTrack, rng: np.random.Generator, *, truth: bool = False) -> pl.DataFrame:
    """The day's fixes (``GPS_SCHEMA``); with ``truth`` also ``true_lat``/``true_lon``."""
    kt = np.asarray(track.t_s)
    kx = np.asarray(track.x_m)
    ky = np.asarray(track.y_m)
    groups = np.asarray(track.group)
    ts = _sample_times(track, rng)
    n = len(ts)
    x = np.interp(ts, kt, kx)
    y = np.interp(ts, kt, ky)
    k = np.clip(np.searchsorted(kt, ts, side="right"), 1, len(kt) - 1)
    dt = np.maximum(kt[k] - kt[k - 1], 1e-6)
    vx, vy = (kx[k] - kx[k - 1]) / dt, (ky[k] - ky[k - 1]) / dt
    speed = np.hypot(vx, vy)
    mag = rng.uniform(0.0, MAX_BIAS_M, track.n_groups)
    ang = rng.uniform(0.0, 2 * math.pi, track.n_groups)
    bias_table = np.column_stack([mag * np.cos(ang), mag * np.sin(ang)])
    bias_table[0] = 0.0
    bias = bias_table[groups[k]]
    sigma = _sigma(ts, rng)
    innov = rng.normal(size=(n, 2)) * sigma[:, None] * math.sqrt(1 - PHI**2)
    if n:
        innov[0] = innov[0] / math.sqrt(1 - PHI**2)
    noise = np.asarray(lfilter([1.0], [1.0, -PHI], innov, axis=0), dtype=np.float64)
    err = bias + noise
    r68 = np.hypot(np.hypot(bias[:, 0], bias[:, 1]), R68_PER_SIGMA * sigma)
    acc = ACCURACY_SCALE * r68 * np.exp(rng.normal(0.0, ACCURACY_LOGNORMAL_SIGMA, n))
    acc = np.round(np.clip(acc, 3.0, 15.0), 1)
    lat, lon = to_latlon(x + err[:, 0], y + err[:, 1])
    moving = speed > 0.5
    speed_rep = np.where(moving, np.maximum(speed + rng.normal(0, 0.4, n), 0.0), 0.0)
    heading = np.degrees(np.arctan2(vx, vy)) % 360.0 + rng.normal(0, 3.0, n)
    frame = pl.DataFrame(
        {
            "technician_id": pl.Series([track.technician_id] * n, dtype=pl.String),
            "ts": pl.Series(np.round(ts * 1000).astype(np.int64)).cast(pl.Datetime("ms", "UTC")),
            "lat": np.round(lat, 7),
            "lon": np.round(lon, 7),
            "accuracy_m": acc,
            "speed_mps": np.round(speed_rep, 1),
            "heading_deg": pl.Series(np.round(heading % 360.0, 1)).set(pl.Series(~moving), None),
            "altitude_m": np.round(12.0 + rng.normal(0.0, 3.0, n), 1),
            "hdop": np.round(np.clip(acc / 4.0, 0.6, 6.0), 1),
            "satellites": np.clip(np.round(15 - acc / 2 + rng.normal(0, 1.5, n)), 4, 24).astype(
                np.int64
            ),
            "mock_location": np.zeros(n, dtype=bool),
            "datum": pl.Series(["WGS84"] * n, dtype=pl.String),
            "source": pl.Series(["demo"] * n, dtype=pl.String),
        },
        schema_overrides=GPS_SCHEMA,
    )
    if truth:
        tlat, tlon = to_latlon(x, y)
        frame = frame.with_columns(
            pl.Series("true_lat", tlat),
            pl.Series("true_lon", tlon),
            pl.Series("true_error_m", np.hypot(err[:, 0], err[:, 1])),
        )
    return frame
