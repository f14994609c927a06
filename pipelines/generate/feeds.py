"""Environmental feeds of the demo world: hourly weather, one power outage, IoT series."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from pipelines.generate.geo import HALF_SIZE_M, polygon_wkt, to_latlon
from pipelines.generate.tickets import DAY_S, LOCAL_OFFSET_S

FloatArray = npt.NDArray[np.float64]
GRID_STEP_DEG = 0.1


@dataclass(frozen=True, slots=True)
class RainEpisode:
    start_s: float
    end_s: float
    peak_mm_per_h: float


def rain_episodes(rng: np.random.Generator, t0_s: float, days: int) -> list[RainEpisode]:
    """``max(2, days // 7)`` rain episodes of 3–10 h, starting on the hour."""
    n = max(2, days // 7)
    days_pick = np.sort(rng.choice(max(days - 1, 1), size=n, replace=False))
    out = []
    for d in days_pick:
        start = t0_s - LOCAL_OFFSET_S + int(d) * DAY_S + int(rng.integers(6, 20)) * 3600
        out.append(RainEpisode(start, start + int(rng.integers(3, 11)) * 3600, rng.uniform(2, 10)))
    return out


def weather_frame(
    rng: np.random.Generator, t0_s: float, days: int, rain: list[RainEpisode]
) -> tuple[pl.DataFrame, list[float]]:
    """Long hourly rows per 0.1° grid point; returns the frame and the rainy hours (epoch s).

    A rainy hour is one inside an episode; every grid point gets rain then, scaled by a
    per-point factor in 0.6–1.2 and a bell-shaped profile over the episode.
    """
    lat_min, lon_min = to_latlon(-HALF_SIZE_M, -HALF_SIZE_M)
    lat_max, lon_max = to_latlon(HALF_SIZE_M, HALF_SIZE_M)
    lats = np.round(np.arange(math.floor(lat_min * 10), math.ceil(lat_max * 10) + 1) / 10, 1)
    lons = np.round(np.arange(math.floor(lon_min * 10), math.ceil(lon_max * 10) + 1) / 10, 1)
    hours = t0_s - LOCAL_OFFSET_S + np.arange((days + 4) * 24) * 3600.0
    mesh_lat, mesh_lon = np.meshgrid(lats, lons, indexing="ij")
    glat, glon = mesh_lat.ravel(), mesh_lon.ravel()
    n_pts, n_h = len(glat), len(hours)
    local_h = ((hours + LOCAL_OFFSET_S) % DAY_S) / 3600
    precip = np.zeros((n_pts, n_h))
    for ep in rain:
        inside = (hours >= ep.start_s) & (hours < ep.end_s)
        phase = (hours[inside] - ep.start_s + 1800) / (ep.end_s - ep.start_s)
        profile = ep.peak_mm_per_h * np.sin(np.pi * phase)
        precip[:, inside] = rng.uniform(0.6, 1.2, (n_pts, 1)) * profile[None, :]
    raining = precip > 0.05
    temp = (
        24.0
        - 6.0 * np.arange(n_h) / n_h
        + 4.0 * np.sin((local_h - 9.0) / 24 * 2 * np.pi)[None, :]
        - 2.5 * raining
        + rng.normal(0, 0.4, (n_pts, n_h))
    )
    wind = np.clip(8 + 10 * raining + rng.normal(0, 3, (n_pts, n_h)), 0.5, None)
    ts = pl.Series(np.round(hours * 1000).astype(np.int64)).cast(pl.Datetime("ms", "UTC"))
    parts = []
    for var, unit, values in (
        ("temperature_2m", "°C", np.round(temp, 1)),
        ("precipitation", "mm", np.round(precip, 1)),
        ("wind_speed_10m", "km/h", np.round(wind, 1)),
    ):
        parts.append(
            pl.DataFrame(
                {
                    "grid_lat": np.repeat(glat, n_h),
                    "grid_lon": np.repeat(glon, n_h),
                    "ts": pl.concat([ts] * n_pts),
                    "variable": var,
                    "value": values.ravel(),
                    "unit": unit,
                    "source": "demo",
                }
            )
        )
    frame = pl.concat(parts).sort("grid_lat", "grid_lon", "ts", "variable")
    rainy = hours[raining.any(axis=0)]
    return frame, [float(h) for h in rainy]


def outage_polygon(
    rng: np.random.Generator, center_xy_m: tuple[float, float], radius_m: float
) -> tuple[str, list[tuple[float, float]]]:
    """An irregular 9-gon around a centre; returns WKT and the local-metre vertices."""
    ang = (np.arange(9) + rng.uniform(-0.3, 0.3, 9)) * (2 * np.pi / 9)
    rad = radius_m * rng.uniform(0.75, 1.15, 9)
    cx, cy = center_xy_m
    pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(ang, rad, strict=True)]
    return polygon_wkt(pts), pts


def iot_frame(
    rng: np.random.Generator,
    device_ids: list[str],
    t0_s: float,
    days: int,
    vibration: tuple[str, float, float],
    wifi: tuple[str, float, float],
) -> pl.DataFrame:
    """Long readings (temperature °C, wifi_rssi dBm, vibration_rms mm/s) every 5–15 min.

    ``vibration``/``wifi`` are ``(device_id, fault_onset_s, repaired_s)``: vibration rises
    exponentially from ~1.5 to ~14 mm/s over the 36 h before the ticket; RSSI drops from about
    -55 to about -88 dBm 6–18 h before its ticket. Both recover when the ticket is completed.
    """
    frames = []
    t_start, t_end = t0_s - LOCAL_OFFSET_S, t0_s - LOCAL_OFFSET_S + (days + 4) * DAY_S
    for dev in device_ids:
        step = float(rng.choice([300.0, 600.0, 900.0]))
        ts = np.arange(t_start + rng.uniform(0, step), t_end, step)
        ts = np.round(ts + rng.uniform(-20, 20, len(ts)))
        n = len(ts)
        local_h = ((ts + LOCAL_OFFSET_S) % DAY_S) / 3600
        temp = 23 + 2.5 * np.sin((local_h - 10) / 24 * 2 * np.pi) + rng.normal(0, 0.3, n)
        rssi = rng.uniform(-62, -48) + rng.normal(0, 2.5, n)
        vib = np.abs(rng.uniform(1.0, 2.2) + rng.normal(0, 0.25, n))
        if dev == vibration[0]:
            onset, fixed = vibration[1], vibration[2]
            ramp = (ts >= onset) & (ts < fixed)
            grow = np.clip((ts - onset) / (36 * 3600), 0, 1)
            vib = np.where(ramp, vib * np.exp(2.2 * grow) + rng.normal(0, 0.4, n), vib)
        if dev == wifi[0]:
            onset, fixed = wifi[1], wifi[2]
            rssi = np.where((ts >= onset) & (ts < fixed), -88 + rng.normal(0, 2.5, n), rssi)
        t_ms = pl.Series(np.round(ts * 1000).astype(np.int64)).cast(pl.Datetime("ms", "UTC"))
        for metric, unit, values in (
            ("temperature", "°C", np.round(temp, 2)),
            ("wifi_rssi", "dBm", np.round(rssi, 1)),
            ("vibration_rms", "mm/s", np.round(np.abs(vib), 3)),
        ):
            frames.append(
                pl.DataFrame(
                    {"device_id": dev, "ts": t_ms, "metric": metric, "value": values, "unit": unit}
                )
            )
    return pl.concat(frames).sort("device_id", "ts", "metric")
