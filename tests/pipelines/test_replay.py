"""Replay bundle against a real DuckDB file built with small builders through the Store gateway."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h3
import polars as pl
import pytest

from geofence.replay_state import state_at
from pipelines.store.gateway import Store
from pipelines.views.replay import (
    STREAM_KEYS,
    ReplayError,
    lifecycle,
    replay_bundle,
)

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
CUSTOMER = (30.2500, 120.1000)
M_PER_DEG = 111_320.0


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def offset(
    north_m: float, east_m: float, origin: tuple[float, float] = CUSTOMER
) -> tuple[float, float]:
    lat = origin[0] + north_m / M_PER_DEG
    return lat, origin[1] + east_m / (M_PER_DEG * math.cos(math.radians(origin[0])))


# fmt: off
def make_ticket(ticket_id: str, point: tuple[float, float], *, customer: str = "cust-r",
                site_id: str | None = None, created: datetime = T0) -> dict[str, Any]:
    return {"ticket_id": ticket_id, "source": "test", "customer_id": customer,
            "customer_name": f"Customer {customer}", "address": f"{ticket_id} Road",
            "lat": point[0], "lon": point[1], "datum_in": "WGS84", "tag": "hvac",
            "priority": "high", "region": "east", "site_id": site_id, "created_ts": created,
            "h3_r7": h3.str_to_int(h3.latlng_to_cell(*point, 7)),
            "h3_r9": h3.str_to_int(h3.latlng_to_cell(*point, 9))}


def make_alert(alert_id: str, cells: list[str], *, status: str = "open",
               closed_at: datetime | None = None) -> dict[str, Any]:
    return {"alert_id": alert_id, "cluster_key": alert_id, "tag": "hvac", "status": status,
            "trend": "growing", "member_count": 3, "member_cells": cells,
            "member_ticket_ids": ["x"], "explanation": "3 hvac tickets", "rule_version": "t",
            "first_seen": at(-600), "last_updated": at(-60), "closed_at": closed_at}


def make_check(event_id: str, ticket_id: str, tech: str, ts: datetime, verdict: str,
               distance_m: float) -> dict[str, Any]:
    evidence = {"distance_m": distance_m, "radius_m": 5.0, "accuracy_m": 6.0,
                "reject_margin_k": 2.0, "nearest_fix_gap_s": 15}
    return {"event_id": event_id, "ticket_id": ticket_id, "technician_id": tech,
            "event_ts": ts, "verdict": verdict, "reason": None,
            "decided_by": "gps_fix", "distance_m": distance_m, "accuracy_m": 6.0, "n_fixes": 9,
            "evidence": json.dumps(evidence), "rule_version": "test-1", "computed_at": at(120)}
# fmt: on


def make_events(ticket_id: str, steps: list[tuple[str, float, str]]) -> list[dict[str, Any]]:
    """``steps`` = (event_type, minutes after T0, actor)."""
    return [
        {
            "event_id": f"{ticket_id}-{kind}-{i}",
            "ticket_id": ticket_id,
            "event_type": kind,
            "ts": at(m),
            "actor": actor,
            "source": "test",
        }
        for i, (kind, m, actor) in enumerate(steps)
    ]


def make_fixes(
    tech: str, points: list[tuple[float, tuple[float, float]]], *, accuracy_m: float = 6.0
) -> list[dict[str, Any]]:
    """``points`` = (minutes after T0, (lat, lon))."""
    return [
        {
            "technician_id": tech,
            "ts": at(m),
            "lat": p[0],
            "lon": p[1],
            "accuracy_m": accuracy_m,
            "speed_mps": 1.0,
            "datum_in": "WGS84",
            "h3": h3.str_to_int(h3.latlng_to_cell(p[0], p[1], 9)),
        }
        for m, p in points
    ]


def square_wkt(centre: tuple[float, float], half_m: float) -> str:
    (s, w), (n, e) = offset(-half_m, -half_m, centre), offset(half_m, half_m, centre)
    return f"POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))"


def make_outage(outage_id: str, wkt: str, start: datetime, end: datetime | None) -> dict[str, Any]:
    import shapely

    minx, miny, maxx, maxy = shapely.from_wkt(wkt).bounds
    return {
        "outage_id": outage_id,
        "source": "test",
        "geom_wkt": wkt,
        "min_lat": miny,
        "max_lat": maxy,
        "min_lon": minx,
        "max_lon": maxx,
        "start_ts": start,
        "end_ts": end,
        "cause": "storm",
        "customers_affected": 40,
    }


def write(path: Path, tables: dict[str, list[dict[str, Any]]]) -> Path:
    with Store(path) as store:
        with store.transaction() as tx:
            for table, rows in tables.items():
                if rows:
                    tx.insert_frame(table, pl.DataFrame(rows, infer_schema_length=None))
        store.optimize()
    return path


def scenario() -> dict[str, list[dict[str, Any]]]:
    """Ticket T-R: tech-a arrives at +40 min (GPS with a 10-minute gap), tech-b takes over at
    +60 (first fix at +50: no sample yet at the arrival), tech-z is unrelated."""
    near_b = offset(15, 0)
    uwb_site = {
        "site_id": "SITE-R",
        "name": "Tower R",
        "origin_lat": CUSTOMER[0],
        "origin_lon": CUSTOMER[1],
        "rotation_deg": 0.0,
        "anchors": json.dumps(
            [
                {"anchor_id": "A1", "x": 0, "y": 0, "z": 3},
                {"anchor_id": "A2", "x": 20, "y": 0, "z": 3},
            ]
        ),
        "targets": json.dumps([{"target_id": "U1", "x": 5, "y": 5}]),
    }
    l_shape = (
        f"POLYGON(({CUSTOMER[1] - 0.01} {CUSTOMER[0] - 0.01}, "
        f"{CUSTOMER[1] - 0.001} {CUSTOMER[0] - 0.01}, {CUSTOMER[1] - 0.001} "
        f"{CUSTOMER[0] + 0.01}, {CUSTOMER[1] + 0.01} {CUSTOMER[0] + 0.01}, "
        f"{CUSTOMER[1] + 0.01} {CUSTOMER[0] + 0.02}, {CUSTOMER[1] - 0.01} "
        f"{CUSTOMER[0] + 0.02}, {CUSTOMER[1] - 0.01} {CUSTOMER[0] - 0.01}))"
    )
    cell8 = h3.latlng_to_cell(*CUSTOMER, 8)
    far_cell = h3.latlng_to_cell(CUSTOMER[0] + 0.2, CUSTOMER[1], 8)
    return {
        "tickets": [
            make_ticket("T-R", CUSTOMER, site_id="SITE-R"),
            make_ticket("T-OPEN", offset(200, 0), customer="c2"),
            make_ticket("T-CLOSED", offset(0, 100), customer="c3"),
            make_ticket("T-FAR", offset(800, 0), customer="c4"),
            make_ticket("T-LATER", offset(0, -150), customer="c5", created=at(90)),
        ],
        "ticket_events": [
            *make_events(
                "T-R",
                [
                    ("created", 0, "dispatch"),
                    ("assigned", 5, "dispatch"),
                    ("accepted", 10, "tech-a"),
                    ("departed", 12, "tech-a"),
                    ("arrived", 40, "tech-a"),
                    ("work_started", 60, "tech-b"),
                    ("completed", 90, "tech-b"),
                ],
            ),
            *make_events("T-OPEN", [("created", 0, "dispatch")]),
            *make_events("T-CLOSED", [("created", 0, "dispatch"), ("closed", 20, "dispatch")]),
            *make_events("T-FAR", [("created", 0, "dispatch")]),
        ],
        "gps_fixes": [
            *make_fixes("tech-a", [(m, offset(2000 - 50 * m, 0)) for m in range(10, 20)]),
            *make_fixes("tech-a", [(m, offset(2000 - 50 * m, 0)) for m in range(30, 41)]),
            *make_fixes("tech-b", [(m, near_b) for m in range(50, 71)]),
            *make_fixes("tech-z", [(m, CUSTOMER) for m in range(0, 90)]),
        ],
        "uwb_sites": [uwb_site],
        "uwb_positions": [
            {
                "site_id": "SITE-R",
                "tag_id": "tech-a",
                "ts": at(41 + s / 60),
                "x_m": 1.0 + s / 10,
                "y_m": 2.0,
                "lat": CUSTOMER[0],
                "lon": CUSTOMER[1],
                "error_m": 0.1,
            }
            for s in range(0, 120, 5)
        ],
        "weather_obs": [
            {
                "grid_lat": g[0],
                "grid_lon": g[1],
                "ts": at(h * 60),
                "variable": v,
                "value": val + h,
                "unit": u,
            }
            for g, val in (((30.25, 120.10), 1.0), ((30.50, 120.25), 50.0))
            for h in range(-3, 3)
            for v, u in (("precipitation", "mm"), ("temperature", "C"))
        ],
        "outages": [
            make_outage("OUT-COVER", square_wkt(CUSTOMER, 300), at(-60), None),
            make_outage("OUT-L", l_shape, at(-60), None),
            make_outage("OUT-OVER", square_wkt(CUSTOMER, 300), at(-300), at(-200)),
        ],
        "iot_devices": [
            {"device_id": "D-CUST", "customer_id": "cust-r", "kind": "compressor"},
            {
                "device_id": "D-NEAR",
                "customer_id": "other",
                "lat": offset(20, 0)[0],
                "lon": offset(20, 0)[1],
                "kind": "meter",
            },
            {
                "device_id": "D-FAR",
                "customer_id": "other",
                "lat": offset(100, 0)[0],
                "lon": offset(100, 0)[1],
                "kind": "meter",
            },
        ],
        "iot_readings": [
            {
                "device_id": d,
                "ts": at(m),
                "metric": "vibration_rms",
                "value": float(m),
                "unit": "mm/s",
            }
            for d in ("D-CUST", "D-NEAR", "D-FAR")
            for m in range(-120, 120, 30)
        ],
        "cluster_alerts": [
            make_alert("A-LIVE", [cell8]),
            make_alert("A-CLOSED", [cell8], status="closed", closed_at=at(-100)),
            make_alert("A-ELSEWHERE", [far_cell]),
        ],
        "arrival_checks": [
            make_check("T-R-arrived-4", "T-R", "tech-a", at(40), "REJECTED", 1000.0)
        ],
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    path = write(tmp_path_factory.mktemp("replay") / "ft.duckdb", scenario())
    return Store(path, read_only=True)


def test_lifecycle_lists_nodes_with_the_arrival_verdict(store: Store) -> None:
    nodes = lifecycle(store, "T-R")
    assert nodes["event_type"].to_list() == [
        "created",
        "assigned",
        "accepted",
        "departed",
        "arrived",
        "work_started",
        "completed",
    ]
    assert nodes.filter(pl.col("verdict").is_not_null())["event_type"].to_list() == ["arrived"]
    assert nodes.filter(pl.col("event_type") == "arrived")["verdict"][0] == "REJECTED"


def test_bundle_streams_are_window_reads_of_the_ticket_technicians(store: Store) -> None:
    b = replay_bundle(store, "T-R", at(40))
    assert (b.start, b.end) == (at(10), at(70))
    assert b.technicians == ("tech-a", "tech-b")  # dispatch and tech-z are not technicians here
    assert set(b.gps["technician_id"]) == {"tech-a", "tech-b"}
    assert b.gps["ts"].min() == at(10)
    assert b.gps["ts"].max() == at(70)
    # The 10-minute gap stays a gap: no fix between +19 and +30.
    gap = b.gps.filter(
        (pl.col("technician_id") == "tech-a") & pl.col("ts").is_between(at(19.5), at(29.5))
    )
    assert gap.is_empty()


def test_state_at_the_arrival_has_no_sample_yet_for_the_second_technician(store: Store) -> None:
    b = replay_bundle(store, "T-R", at(40))
    states = state_at(b.streams(), at(40), key_cols=STREAM_KEYS)
    assert states["gps"].latest["technician_id"].to_list() == ["tech-a"]
    assert states["gps"].latest["ts"][0] == at(40)
    later = state_at({"gps": b.gps}, at(55), key_cols={"gps": ("technician_id",)})["gps"]
    assert later.latest["technician_id"].to_list() == ["tech-a", "tech-b"]
    assert states["uwb"].status == "no_sample_yet"  # UWB starts at +41


def test_a_narrow_window_is_configurable(store: Store) -> None:
    b = replay_bundle(store, "T-R", at(40), before=timedelta(minutes=5), after=timedelta(minutes=1))
    in_window = b.gps.filter(pl.col("ts") >= b.start)
    assert in_window["ts"].min() == at(35)
    assert in_window["ts"].max() == at(40)
    with pytest.raises(ReplayError, match="expected >= 0"):
        replay_bundle(store, "T-R", at(40), before=timedelta(minutes=-1))


def test_sparse_streams_get_a_seed_before_the_window(store: Store) -> None:
    b = replay_bundle(store, "T-R", at(40))
    # Weather: the nearest grid point only, and the +0 h hour (before the window) as the seed.
    assert set(b.weather["grid_lat"]) == {30.25}
    assert b.weather.filter(pl.col("variable") == "precipitation")["ts"].to_list() == [
        at(0),
        at(60),
    ]
    # IoT: the customer's device and the one within 30 m; the seed is the +0 reading.
    assert set(b.devices["device_id"]) == {"D-CUST", "D-NEAR"}
    cust = b.iot.filter(pl.col("device_id") == "D-CUST")["ts"].to_list()
    assert cust == [at(0), at(30), at(60)]


def test_outages_are_exact_point_in_polygon_and_overlap_the_window(store: Store) -> None:
    b = replay_bundle(store, "T-R", at(40))
    # OUT-L's box holds the address but the L does not; OUT-OVER ended before the window.
    assert b.outages["outage_id"].to_list() == ["OUT-COVER"]


def test_uwb_site_nearby_tickets_and_alerts(store: Store) -> None:
    b = replay_bundle(store, "T-R", at(45))
    assert b.uwb_site is not None
    assert b.uwb_site["site_id"] == "SITE-R"
    assert b.uwb.height == 24
    assert set(b.uwb["tag_id"]) == {"tech-a"}
    assert b.nearby["ticket_id"].to_list() == ["T-OPEN"]
    assert 190 < b.nearby["distance_m"][0] < 210
    assert b.alerts["alert_id"].to_list() == ["A-LIVE"]
    assert b.checks["verdict"].to_list() == ["REJECTED"]


def test_unknown_ticket_is_a_lookup_error(store: Store) -> None:
    with pytest.raises(LookupError, match="no ticket_id='NOPE'"):
        replay_bundle(store, "NOPE", at(0))


def test_a_ticket_without_technicians_or_site_has_empty_typed_streams(store: Store) -> None:
    b = replay_bundle(store, "T-OPEN", at(10))
    assert b.technicians == ()
    assert b.gps.is_empty()
    assert "ts" in b.gps.columns
    assert b.uwb_site is None
    assert b.uwb.is_empty()
    assert "ts" in b.uwb.columns
    assert set(state_at(b.streams(), at(10), key_cols=STREAM_KEYS)) >= {"gps", "uwb"}
