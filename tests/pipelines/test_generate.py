"""The demo world generator: reproducible, canonical columns, and every planted truth findable."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import h3
import numpy as np
import polars as pl
import pytest

from geofence.clusters import rolling_ring_counts
from pipelines.generate import INGEST_ORDER, Manifest, generate_world
from pipelines.generate.build import World, build_world, world_gps
from pipelines.generate.geo import gcj02_to_wgs84, to_xy
from pipelines.ingest.kinds import KINDS

SMALL = 0.05
START = date(2026, 10, 1)


@pytest.fixture(scope="module")
def small_world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate_world(out, seed=7, scale=SMALL)
    return out


@pytest.fixture(scope="module")
def manifest(small_world_dir: Path) -> Manifest:
    return Manifest.load(small_world_dir / "manifest.json")


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(seed=7, scale=SMALL, days=30, start=START)


@pytest.fixture(scope="module")
def fixes(world: World) -> pl.DataFrame:
    return pl.concat([frame for _, frame in world_gps(world, truth=True)])


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read(path: Path) -> pl.DataFrame:
    if path.suffix == ".csv":
        return pl.read_csv(path, infer_schema=False)
    if path.suffix == ".jsonl":
        return pl.read_ndjson(path)
    return pl.read_parquet(path)


def _distance_m(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> np.ndarray:
    x1, y1 = to_xy(lat1, lon1)
    x2, y2 = to_xy(lat2, lon2)
    return np.asarray(np.hypot(x1 - x2, y1 - y2))


# -- reproducibility and size ------------------------------------------------------------
def test_same_seed_gives_identical_files(small_world_dir: Path, tmp_path: Path) -> None:
    generate_world(tmp_path, seed=7, scale=SMALL)
    assert _hashes(tmp_path) == _hashes(small_world_dir)


def test_different_seed_gives_different_files(small_world_dir: Path, tmp_path: Path) -> None:
    generate_world(tmp_path, seed=8, scale=SMALL)
    ours, theirs = _hashes(tmp_path), _hashes(small_world_dir)
    assert ours.keys() == theirs.keys()
    assert all(ours[k] != theirs[k] for k in ("tickets.csv", "events.csv", "gps/part-000.parquet"))


def test_small_world_has_every_planted_truth(small_world_dir: Path, manifest: Manifest) -> None:
    p = manifest.planted
    for name in (
        "false_arrivals",
        "true_arrivals",
        "idle_gaps",
        "revisits",
        "status_lags",
        "chases",
        "reopened",
        "rain_hours",
    ):
        assert getattr(p, name), name
    assert any(a["indoor"] for a in p.true_arrivals)
    assert len(p.cluster["ticket_ids"]) == 24
    assert p.outage["ticket_ids"]
    assert p.vibration_fault["device_id"]
    assert p.wifi_drop["device_id"]
    assert p.gcj_region["ticket_count"] > 0


def test_every_file_uses_canonical_columns(small_world_dir: Path) -> None:
    root = small_world_dir
    seen = set()
    for kind, pattern in INGEST_ORDER:
        paths = sorted(root.glob(pattern))
        assert paths, pattern
        for path in paths:
            cols = set(_read(path).columns)
            assert cols <= set(KINDS[kind].columns), (path.name, cols - set(KINDS[kind].columns))
            assert set(KINDS[kind].required) <= cols
            seen.add(kind)
    assert {"uwb_sites", "tickets"} < seen
    order = [k for k, _ in INGEST_ORDER]
    assert order.index("uwb_sites") < order.index("uwb_positions")
    assert order.index("tickets") < order.index("events")


def test_counts_in_manifest_match_files(small_world_dir: Path, manifest: Manifest) -> None:
    root = small_world_dir
    for name, rows in manifest.counts.items():
        assert _read(root / name).height == rows, name


# -- physical truth ----------------------------------------------------------------------
def test_gps_true_error_exceeds_reported_accuracy_about_a_third_of_the_time(
    fixes: pl.DataFrame,
) -> None:
    frac = (fixes["true_error_m"] > fixes["accuracy_m"]).mean()
    assert isinstance(frac, float)
    assert 0.25 <= frac <= 0.42
    accuracy_m = fixes["accuracy_m"].to_numpy()
    assert accuracy_m.min() >= 3.0
    assert accuracy_m.max() <= 15.0
    step_s = fixes.select(pl.col("ts").diff().over("technician_id").dt.total_seconds())
    within = (step_s.to_series().drop_nulls() <= 10).mean()  # indoor visits are the gaps
    assert isinstance(within, float)
    assert within > 0.99


def test_false_arrivals_are_tapped_150_to_400_m_away(
    manifest: Manifest, fixes: pl.DataFrame
) -> None:
    truth = {a["event_id"]: a for a in manifest.planted.true_arrivals}
    for fa in manifest.planted.false_arrivals:
        assert 150.0 <= fa["distance_m"] <= 400.0
        arr = truth[fa["event_id"]]
        tap = pl.Series([arr["tapped_ts"]]).str.to_datetime(time_zone="UTC", time_unit="ms")[0]
        near = (
            fixes.filter(pl.col("technician_id") == fa["technician_id"])
            .with_columns((pl.col("ts") - tap).abs().alias("_d"))
            .sort("_d")
            .row(0, named=True)
        )
        where = _distance_m(near["true_lat"], near["true_lon"], arr["true_lat"], arr["true_lon"])
        assert abs(float(where) - fa["distance_m"]) < 2.0


def test_outdoor_true_arrivals_match_the_track(manifest: Manifest, fixes: pl.DataFrame) -> None:
    outdoor = [a for a in manifest.planted.true_arrivals if not a["indoor"]][:40]
    for a in outdoor:
        t = pl.Series([a["true_ts"]]).str.to_datetime(time_zone="UTC", time_unit="ms")[0]
        after = fixes.filter(
            (pl.col("technician_id") == a["technician_id"])
            & (pl.col("ts") >= t + timedelta(seconds=1))
        ).row(0, named=True)
        d = _distance_m(after["true_lat"], after["true_lon"], a["true_lat"], a["true_lon"])
        assert float(d) < 1.0


def test_lifecycle_faults_have_their_planted_sizes(manifest: Manifest) -> None:
    p = manifest.planted
    assert all(180 <= s["lag_s"] <= 1200 for s in p.status_lags)
    assert all(3600 <= g["idle_s"] <= 4 * 3600 for g in p.idle_gaps)
    assert all(r["first_arrival_event_id"] != r["second_arrival_event_id"] for r in p.revisits)


def test_events_follow_the_lifecycle(small_world_dir: Path) -> None:
    events = _read(small_world_dir / "events.csv").with_columns(
        pl.col("ts").str.to_datetime("%Y-%m-%dT%H:%M:%S%:z", strict=False)
    )
    per = (
        events.drop_nulls("ts")
        .unique("event_id")
        .group_by("ticket_id")
        .agg(
            pl.col("ts").filter(pl.col("event_type") == "created").min().alias("created"),
            pl.col("ts").filter(pl.col("event_type") == "arrived").min().alias("arrived"),
            pl.col("ts").filter(pl.col("event_type") == "departed").min().alias("departed"),
            pl.col("ts").filter(pl.col("event_type") == "completed").max().alias("completed"),
            pl.col("ts").filter(pl.col("event_type") == "closed").max().alias("closed"),
        )
    )
    assert per.null_count().sum_horizontal().item() == 0
    assert (per["created"] < per["departed"]).all()
    assert (per["departed"] < per["arrived"]).all()
    assert (per["arrived"] < per["completed"]).all()
    assert (per["completed"] < per["closed"]).all()


def test_gcj_region_tickets_shift_back_onto_the_true_point(
    small_world_dir: Path, manifest: Manifest
) -> None:
    tickets = _read(small_world_dir / "tickets.csv").filter(pl.col("datum") == "GCJ02")
    assert set(tickets["region"].unique()) == {manifest.planted.gcj_region["region"]}
    truth = {a["ticket_id"]: a for a in manifest.planted.true_arrivals}
    lat = tickets["lat"].cast(pl.Float64).to_numpy()
    lon = tickets["lon"].cast(pl.Float64).to_numpy()
    wlat, wlon = gcj02_to_wgs84(lat, lon)
    true = [truth[t] for t in tickets["ticket_id"]]
    shift = _distance_m(lat, lon, [a["true_lat"] for a in true], [a["true_lon"] for a in true])
    back = _distance_m(wlat, wlon, [a["true_lat"] for a in true], [a["true_lon"] for a in true])
    assert shift.min() > 100.0
    assert back.max() < 0.5


def test_indoor_tickets_sit_on_a_uwb_target(small_world_dir: Path, manifest: Manifest) -> None:
    root = small_world_dir
    sites = {r["site_id"]: r for r in _read(root / "uwb_sites.jsonl").iter_rows(named=True)}
    uwb = _read(root / "uwb_positions.parquet")
    for a in (a for a in manifest.planted.true_arrivals if a["indoor"]):
        targets = {t["target_id"]: t for t in json.loads(sites[a["site_id"]]["targets"])}
        assert targets[a["target_id"]]["x"] == a["target_x_m"]
        t = pl.Series([a["true_ts"]]).str.to_datetime(time_zone="UTC", time_unit="ms")[0]
        at = uwb.filter(
            (pl.col("tag_id") == a["technician_id"])
            & ((pl.col("ts") - t).abs() < timedelta(seconds=60))
            & (pl.col("ts") > t)
        )
        assert at.height > 30
        assert abs(float(np.median(at["x_m"].to_numpy())) - a["target_x_m"]) < 1.0


# -- planted clusters and feeds ----------------------------------------------------------
def test_refrigerant_cluster_fires_and_nothing_else_does(
    small_world_dir: Path, manifest: Manifest
) -> None:
    t = _read(small_world_dir / "tickets.csv").filter(~pl.col("ticket_id").str.contains("9000"))
    lat = t["lat"].cast(pl.Float64).to_numpy()
    lon = t["lon"].cast(pl.Float64).to_numpy()
    gcj = (t["datum"] == "GCJ02").to_numpy()
    wlat, wlon = gcj02_to_wgs84(lat, lon)
    tickets = t.select(
        "ticket_id",
        "tag",
        "region",
        pl.col("created_ts").str.to_datetime("%Y-%m-%dT%H:%M:%S%:z", time_zone="UTC"),
        pl.Series("lat", np.where(gcj, wlat, lat)),
        pl.Series("lon", np.where(gcj, wlon, lon)),
    )
    counts = rolling_ring_counts(
        tickets,
        tag="refrigerant_leak",
        resolution=7,
        k_ring=1,
        window=timedelta(hours=72),
        eval_times=tickets["created_ts"],
    )
    c = manifest.planted.cluster
    centre = h3.latlng_to_cell(c["center_lat"], c["center_lon"], 7)
    near = {h3.str_to_int(x) for x in h3.grid_disk(centre, 2)}
    firing = counts.filter(pl.col("count") > 19)
    assert firing.height > 0
    assert set(firing["cell"].to_list()) <= near
    start = pl.Series([c["window_start"]]).str.to_datetime(time_zone="UTC")[0]
    assert firing["eval_ts"].min() >= start


def test_iot_faults_precede_their_tickets(small_world_dir: Path, manifest: Manifest) -> None:
    root = small_world_dir
    iot = _read(root / "iot.parquet")
    created = dict(
        _read(root / "tickets.csv")
        .select("ticket_id", pl.col("created_ts").str.to_datetime(time_zone="UTC"))
        .iter_rows()
    )

    def mean(fault: dict[str, Any], metric: str, lo_h: float, hi_h: float) -> float:
        t = created[fault["ticket_id"]]
        sel = iot.filter(
            (pl.col("device_id") == fault["device_id"])
            & (pl.col("metric") == metric)
            & (pl.col("ts") >= t - timedelta(hours=lo_h))
            & (pl.col("ts") < t - timedelta(hours=hi_h))
        )
        return float(np.mean(sel["value"].to_numpy()))

    vib = manifest.planted.vibration_fault
    assert mean(vib, "vibration_rms", 4, 0) > 4 * mean(vib, "vibration_rms", 96, 72)
    wifi = manifest.planted.wifi_drop
    assert mean(wifi, "wifi_rssi", 3, 0) < -80 < mean(wifi, "wifi_rssi", 72, 48)


def test_outage_tickets_are_inside_the_polygon(small_world_dir: Path, manifest: Manifest) -> None:
    import shapely

    outage = _read(small_world_dir / "outages.jsonl").row(0, named=True)
    poly = shapely.from_wkt(outage["geom_wkt"])
    truth = {a["ticket_id"]: a for a in manifest.planted.true_arrivals}
    for tid in manifest.planted.outage["ticket_ids"]:
        assert shapely.contains_xy(poly, truth[tid]["true_lon"], truth[tid]["true_lat"])


# -- round trip through the ingest path --------------------------------------------------
_INGEST_READY = all(
    importlib.util.find_spec(m) is not None for m in ("geofence.datum", "geofence.distance")
)


@pytest.mark.skipif(not _INGEST_READY, reason="geofence.datum / geofence.distance not written yet")
def test_round_trip_counts_reconcile_with_manifest(tmp_path: Path) -> None:
    from pipelines.ingest.machine import ingest_file
    from pipelines.settings import load_settings
    from pipelines.store.gateway import Store

    world_dir = tmp_path / "world"
    m = generate_world(world_dir, seed=7, scale=SMALL)
    settings = load_settings()
    store = Store(tmp_path / "ft.duckdb")
    got: dict[str, dict[str, Any]] = {}
    for kind, pattern in INGEST_ORDER:
        acc = got.setdefault(kind, {"accepted": 0, "quarantined": 0, "rules": {}})
        for path in sorted(world_dir.glob(pattern)):
            r = ingest_file(store, kind, path, settings)
            acc["accepted"] += r.rows_accepted
            acc["quarantined"] += r.rows_quarantined
            for rule, n in r.reasons.items():
                acc["rules"][rule] = acc["rules"].get(rule, 0) + n
    assert got == m.expected
