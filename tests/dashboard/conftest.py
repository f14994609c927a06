"""A small FieldTrace store built with builder functions through the Store gateway.

Two regions (north: hvac, south: plumbing), four technicians with GPS tracks, one verified
arrival, IoT / outage / rain evidence at one address, and two cluster alerts whose restock
orders go to two warehouses (WH-N, WH-S).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h3
import polars as pl
import pytest

from pipelines.settings import Settings, load_settings
from pipelines.store.gateway import Store
from pipelines.users import add_user

CLOCK = datetime(2026, 10, 5, 8, 0, tzinfo=UTC)
NORTH = (30.2900, 120.1500)
SOUTH = (30.2300, 120.1700)
PASSWORDS = {
    "dispatch": "pw-dispatch",
    "analyst": "pw-analyst",
    "wh-north": "pw-north",
    "wh-south": "pw-south",
}
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def make_ticket(
    ticket_id: str,
    lat: float,
    lon: float,
    *,
    tag: str,
    region: str,
    created: datetime,
    priority: str = "normal",
    customer: str = "C",
    address: str | None = None,
) -> dict[str, Any]:
    return {
        "ticket_id": ticket_id,
        "source": "test",
        "customer_id": customer,
        "customer_name": f"Customer {customer}",
        "address": address or f"{ticket_id} Road",
        "lat": lat,
        "lon": lon,
        "datum_in": "WGS84",
        "tags": [tag],
        "tag": tag,
        "priority": priority,
        "region": region,
        "created_ts": created,
        "channel": "phone",
        "reported_ts": created - timedelta(minutes=15),  # the call, typed in 15 min later
        "h3_r7": h3.str_to_int(h3.latlng_to_cell(lat, lon, 7)),
        "h3_r9": h3.str_to_int(h3.latlng_to_cell(lat, lon, 9)),
    }


def make_events(
    ticket_id: str,
    start: datetime,
    steps: list[tuple[str, float]],
    *,
    technician: str | None = None,
    notes: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """``steps`` = (event_type, minutes after start)."""
    notes = notes or {}
    return [
        {
            "event_id": f"{ticket_id}-{i}",
            "ticket_id": ticket_id,
            "event_type": kind,
            "ts": start + timedelta(minutes=m),
            "actor": technician
            if kind not in ("created", "assigned", "customer_chased", "closed")
            else "dispatch",
            "source": "test",
            "note": notes.get(kind),
        }
        for i, (kind, m) in enumerate(steps)
    ]


def make_track(
    technician: str,
    start: datetime,
    origin: tuple[float, float],
    dest: tuple[float, float],
    *,
    drive_min: int = 20,
    stay_min: int = 30,
    step_s: int = 30,
) -> list[dict[str, Any]]:
    """Drive from ``origin`` to ``dest`` then stand still at ``dest`` (5 m accuracy)."""
    rows = []
    n_drive = drive_min * 60 // step_s
    for i in range(n_drive + stay_min * 60 // step_s + 1):
        f = min(i / n_drive, 1.0)
        lat = origin[0] + (dest[0] - origin[0]) * f
        lon = origin[1] + (dest[1] - origin[1]) * f
        moving = i < n_drive
        rows.append(
            {
                "technician_id": technician,
                "ts": start + timedelta(seconds=i * step_s),
                "lat": lat + (0 if moving else 0.000005 * (i % 3 - 1)),
                "lon": lon,
                "accuracy_m": 4.0,
                "speed_mps": 8.0 if moving else 0.1,
                "datum_in": "WGS84",
                "h3": h3.str_to_int(h3.latlng_to_cell(lat, lon, 9)),
            }
        )
    return rows


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, infer_schema_length=None)


def build_store(path: Path) -> None:
    tickets, events, fixes = [], [], []
    techs = [
        {
            "technician_id": f"tech-{i}",
            "name": f"Tech {i}",
            "region": "north" if i <= 2 else "south",
        }
        for i in range(1, 5)
    ]
    # T-1: a finished visit with a verified arrival.
    t1 = (NORTH[0] + 0.001, NORTH[1] + 0.001)
    start1 = CLOCK - timedelta(hours=6)
    tickets.append(
        make_ticket(
            "T-1",
            *t1,
            tag="hvac",
            region="north",
            created=start1,
            customer="alice",
            address="1 North Road",
            priority="high",
        )
    )
    events += make_events(
        "T-1",
        start1,
        [
            ("created", 1),
            ("assigned", 5),
            ("accepted", 10),
            ("departed", 20),
            ("arrived", 41),
            ("work_started", 45),
            ("completed", 70),
            ("closed", 80),
        ],
        technician="tech-1",
    )
    fixes += make_track("tech-1", start1 + timedelta(minutes=20), NORTH, t1, stay_min=55)
    # T-0: an earlier ticket at T-2's address that needed a revisit for a part.
    t2 = (NORTH[0] - 0.002, NORTH[1] + 0.003)
    start0 = CLOCK - timedelta(days=5)
    tickets.append(
        make_ticket(
            "T-0",
            *t2,
            tag="hvac",
            region="north",
            created=start0,
            customer="bob",
            address="2 North Road",
        )
    )
    events += make_events(
        "T-0",
        start0,
        [
            ("created", 1),
            ("accepted", 10),
            ("departed", 20),
            ("arrived", 40),
            ("parts_requested", 50),
            ("arrived", 1500),
            ("completed", 1560),
            ("closed", 1570),
        ],
        technician="tech-2",
        notes={"parts_requested": "compressor relay"},
    )
    # T-2: open, accepted; the checklist should fire at its address.
    start2 = CLOCK - timedelta(hours=3)
    tickets.append(
        make_ticket(
            "T-2",
            *t2,
            tag="hvac",
            region="north",
            created=start2,
            customer="bob",
            address="2 North Road",
        )
    )
    events += make_events(
        "T-2",
        start2,
        [("created", 1), ("assigned", 5), ("accepted", 12), ("customer_chased", 180)],
        technician="tech-2",
    )
    fixes += make_track("tech-2", CLOCK - timedelta(minutes=40), NORTH, (NORTH[0] + 0.01, NORTH[1]))
    # Open tickets: 12 north hvac, 8 south plumbing; some overdue.
    for i in range(20):
        north = i < 12
        base = NORTH if north else SOUTH
        lat, lon = base[0] + 0.004 * (i % 4), base[1] + 0.004 * (i // 4 % 3)
        created = CLOCK - timedelta(hours=2 + 3 * i)
        tid = f"T-{100 + i}"
        tickets.append(
            make_ticket(
                tid,
                lat,
                lon,
                tag="hvac" if north else "plumbing",
                region="north" if north else "south",
                created=created,
                customer=f"c{i}",
            )
        )
        events += make_events(tid, created, [("created", 1)])
    for tech, origin in (("tech-3", SOUTH), ("tech-4", (SOUTH[0] + 0.01, SOUTH[1]))):
        fixes += make_track(
            tech, CLOCK - timedelta(minutes=50), origin, (origin[0] + 0.005, origin[1] + 0.005)
        )
    north_members = [t for t in tickets if t["tag"] == "hvac"]
    south_members = [t for t in tickets if t["tag"] == "plumbing"]

    def alert(alert_id: str, tag: str, members: list[dict[str, Any]]) -> dict[str, Any]:
        cells = sorted({h3.latlng_to_cell(t["lat"], t["lon"], 8) for t in members})
        return {
            "alert_id": alert_id,
            "cluster_key": f"{tag}-key",
            "tag": tag,
            "status": "active",
            "trend": "growing",
            "member_count": len(members),
            "member_cells": cells,
            "member_ticket_ids": [t["ticket_id"] for t in members],
            "explanation": f"{len(members)} {tag} tickets in {len(cells)} cells within 72 h "
            f"(expected 1.2, p < 0.001)",
            "rule_version": "test-1",
            "first_seen": CLOCK - timedelta(hours=30),
            "last_updated": CLOCK - timedelta(hours=1),
        }

    alerts = [alert("A-1", "hvac", north_members), alert("A-2", "plumbing", south_members)]

    def order(order_id: str, alert_id: str, wh: str, sku: str) -> dict[str, Any]:
        return {
            "order_id": order_id,
            "alert_id": alert_id,
            "warehouse_id": wh,
            "routed_by": "region",
            "sku": sku,
            "quantity": 4.0,
            "unit": "pcs",
            "status": "sent",
            "created_at": CLOCK - timedelta(hours=1),
        }

    orders = [
        order("O-N1", "A-1", "WH-N", "FILTER-HV"),
        order("O-S1", "A-1", "WH-S", "FAN-HV"),
        order("O-S2", "A-2", "WH-S", "VALVE-PL"),
    ]
    check = {
        "event_id": "T-1-4",
        "ticket_id": "T-1",
        "technician_id": "tech-1",
        "event_ts": start1 + timedelta(minutes=41),
        "verdict": "VERIFIED",
        "reason": "within_radius",
        "decided_by": "gps",
        "distance_m": 2.1,
        "accuracy_m": 4.0,
        "n_fixes": 12,
        "physical_arrival_ts": start1 + timedelta(minutes=40),
        "status_lag_s": 60.0,
        "rule_version": "test-1",
        "computed_at": CLOCK,
        "evidence": json.dumps(
            {
                "distance_m": 2.1,
                "stop_lat": t1[0],
                "stop_lon": t1[1],
                "nearest_fix_gap_s": 12,
                "datum": "WGS84",
            }
        ),
    }
    visit = CLOCK
    iot_devices = [
        {"device_id": "D-1", "kind": "compressor", "customer_id": "bob", "lat": t2[0], "lon": t2[1]}
    ]
    iot = [
        {
            "device_id": "D-1",
            "ts": visit - timedelta(hours=h),
            "metric": "vibration_rms",
            "value": 9.5 if h < 12 else 2.0,
            "unit": "mm/s",
        }
        for h in range(1, 96, 6)
    ]
    d = 0.001
    outages = [
        {
            "outage_id": "OUT-1",
            "source": "test",
            "geom_wkt": f"POLYGON(({t2[1] - d} {t2[0] - d}, {t2[1] + d} {t2[0] - d}, "
            f"{t2[1] + d} {t2[0] + d}, {t2[1] - d} {t2[0] + d}, {t2[1] - d} {t2[0] - d}))",
            "min_lat": t2[0] - d,
            "max_lat": t2[0] + d,
            "min_lon": t2[1] - d,
            "max_lon": t2[1] + d,
            "start_ts": visit - timedelta(hours=2),
            "cause": "storm",
            "customers_affected": 120,
        }
    ]
    weather = [
        {
            "grid_lat": 30.28,
            "grid_lon": 120.15,
            "ts": visit,
            "variable": "precipitation",
            "value": 9.0,
            "unit": "mm",
        }
    ]
    warehouses = [
        {"warehouse_id": "WH-N", "name": "North", "region": "north", "lat": 30.3, "lon": 120.15},
        {"warehouse_id": "WH-S", "name": "South", "region": "south", "lat": 30.22, "lon": 120.17},
    ]
    with Store(path) as store, store.transaction() as tx:
        for table, rows in (
            ("technicians", techs),
            ("tickets", tickets),
            ("ticket_events", events),
            ("gps_fixes", fixes),
            ("cluster_alerts", alerts),
            ("restock_orders", orders),
            ("arrival_checks", [check]),
            ("iot_devices", iot_devices),
            ("iot_readings", iot),
            ("outages", outages),
            ("weather_obs", weather),
            ("warehouses", warehouses),
        ):
            tx.insert_frame(table, _frame(rows))


def make_users(path: Path) -> Path:
    add_user(path, "dispatch", "dispatcher", PASSWORDS["dispatch"])
    add_user(path, "analyst", "analyst", PASSWORDS["analyst"])
    add_user(path, "wh-north", "warehouse:WH-N", PASSWORDS["wh-north"])
    add_user(path, "wh-south", "warehouse:WH-S", PASSWORDS["wh-south"])
    return path


@pytest.fixture(scope="session")
def built_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dashboard-store")
    build_store(root / "fieldtrace.duckdb")
    make_users(root / "users.toml")
    return root


def settings_for(root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "store_path": root / "fieldtrace.duckdb",
        "users_file": root / "users.toml",
        "basemap_style": "white-bg",
        "refresh_interval_s": 3600,
        "data_dir": root,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def store_root(built_store: Path, tmp_path: Path) -> Path:
    """A private copy of the built store, so write-back tests do not leak into others."""
    for name in ("fieldtrace.duckdb", "users.toml"):
        shutil.copy(built_store / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def settings(store_root: Path) -> Settings:
    return settings_for(store_root)


@pytest.fixture
def empty_settings(tmp_path: Path) -> Iterator[Settings]:
    Store(tmp_path / "fieldtrace.duckdb").close()
    make_users(tmp_path / "users.toml")
    return settings_for(tmp_path)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
