"""The dashboard's test store, built by the real writers (issue 10, "one vocabulary").

The session's seeded demo world (``demo_world`` in ``tests/conftest.py``: generate -> ingest ->
arrivals verify -> truth labels) is copied once, and the alerts runner replays its month with
delivery to the reference warehouse receiver after each evaluation. No row is hand-written, so
every stored word is one the pipelines write.

Two alert rules fire on the small world: the built-in refrigerant_leak rule on the planted
cluster, and a water_leak rule relaxed for the small world (``DASH_RULES``). Only some
warehouses have a webhook secret: delivery refuses the others with a reason while the rest
proceed, so the store holds both 'sent' orders and orders still 'open'. ``StoreIds`` names
what the tests need, looked up from the store and the generator's manifest.
"""

from __future__ import annotations

import secrets
import shutil
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pipelines.alerts.config import DEFAULT_RULES_TOML, AlertConfig, parse_config
from pipelines.alerts.delivery import deliver_due
from pipelines.alerts.receiver import WarehouseReceiver
from pipelines.alerts.runner import run_alerts
from pipelines.settings import Settings, load_settings
from pipelines.store.gateway import Store
from pipelines.users import add_user

PASSWORDS = {
    "dispatch": "pw-dispatch",
    "analyst": "pw-analyst",
    "wh-sent": "pw-wh-sent",
    "wh-open": "pw-wh-open",
}
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# The relaxed water_leak rule: the small world has ~20 water leaks per region in a month.
WATER_LEAK_RULE = {"more_than": 3, "window_h": 168, "resolution": 6}
ALERT_STEP = timedelta(hours=6)
# The generator's region whose warehouse gets no webhook secret: its orders stay 'open'.
NO_SECRET_REGION = "south"


def dash_rules() -> AlertConfig:
    """The built-in rules with water_leak relaxed for the small world."""
    raw = tomllib.loads(DEFAULT_RULES_TOML)
    for rule in raw["cluster_rules"]:
        if rule["tag"] == "water_leak":
            rule.update(WATER_LEAK_RULE)
    return parse_config(raw, where="dashboard test rules")


@dataclass(frozen=True)
class StoreIds:
    """Ids the tests use, read from the built store and the generator's manifest."""

    sent_warehouse: str  # wh-sent's warehouse: its orders were delivered ('sent')
    open_warehouse: str  # wh-open's warehouse: no webhook secret, its orders are 'open'
    sent_alert: str
    open_alert: str
    sent_order: str
    open_order: str
    at_door_ticket: str  # a ticket whose arrival verdict is AT_DOOR, decided by a stop
    false_arrival_ticket: str  # the manifest's planted false arrival (verdict REJECTED)
    false_arrival_event: str  # its 'arrived' event
    false_arrival_technician: str
    checklist_ticket: str  # the manifest's vibration-fault ticket (the checklist fires)
    vibration_device: str  # that ticket's customer's device


def replay_alerts(store: Store, config: AlertConfig, *, step: timedelta = ALERT_STEP) -> None:
    """Evaluate the rules every ``step`` over the world's month, delivering after each run to
    the reference receiver; warehouses outside ``NO_SECRET_REGION`` get a random secret."""
    hooked = store.query("SELECT warehouse_id, region FROM warehouses ORDER BY warehouse_id")
    keys = {w: secrets.token_hex(16) for w, r in hooked.iter_rows() if r != NO_SECRET_REGION}
    first = store.scalar("SELECT min(created_ts) FROM tickets")
    last = store.scalar("SELECT max(created_ts) FROM tickets")
    with WarehouseReceiver(keys.get) as rx:
        # the generated webhooks name the demo's fixed port; point them at this receiver
        store.execute("UPDATE warehouses SET webhook_url = ? || warehouse_id", (rx.url(""),))
        at = first + timedelta(hours=72)
        while at <= last + step:
            run_alerts(store, config, at=at)
            deliver_due(store, config, keys.get)
            at += step


def _one(store: Store, sql: str, params: tuple[object, ...] = ()) -> str:
    value = store.scalar(sql, params)
    assert value is not None, f"the built store has no row for: {sql} {params}"
    return str(value)


def store_ids(store: Store, manifest: dict[str, Any]) -> StoreIds:
    order = "SELECT {} FROM restock_orders WHERE status = ? ORDER BY created_at, order_id LIMIT 1"
    sent_order = _one(store, order.format("order_id"), ("sent",))
    open_order = _one(store, order.format("order_id"), ("open",))
    of = "SELECT {} FROM restock_orders WHERE order_id = ?"
    planted = manifest["planted"]
    false_arrival = planted["false_arrivals"][0]
    return StoreIds(
        sent_warehouse=_one(store, of.format("warehouse_id"), (sent_order,)),
        open_warehouse=_one(store, of.format("warehouse_id"), (open_order,)),
        sent_alert=_one(store, of.format("alert_id"), (sent_order,)),
        open_alert=_one(store, of.format("alert_id"), (open_order,)),
        sent_order=sent_order,
        open_order=open_order,
        at_door_ticket=_one(
            store,
            "SELECT ticket_id FROM arrival_checks WHERE verdict = 'AT_DOOR' "
            "AND decided_by = 'stop' ORDER BY event_ts, ticket_id LIMIT 1",
        ),
        false_arrival_ticket=str(false_arrival["ticket_id"]),
        false_arrival_event=str(false_arrival["event_id"]),
        false_arrival_technician=str(false_arrival["technician_id"]),
        checklist_ticket=str(planted["vibration_fault"]["ticket_id"]),
        vibration_device=str(planted["vibration_fault"]["device_id"]),
    )


def make_users(path: Path, warehouses: tuple[str, str]) -> Path:
    """dispatch, analyst, and one user for each of two warehouses (wh-sent, wh-open)."""
    add_user(path, "dispatch", "dispatcher", PASSWORDS["dispatch"])
    add_user(path, "analyst", "analyst", PASSWORDS["analyst"])
    add_user(path, "wh-sent", f"warehouse:{warehouses[0]}", PASSWORDS["wh-sent"])
    add_user(path, "wh-open", f"warehouse:{warehouses[1]}", PASSWORDS["wh-open"])
    return path


@pytest.fixture(scope="session")
def built(
    demo_world: tuple[Settings, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, StoreIds]:
    """One build per session: the demo world's store plus alerts, orders and deliveries."""
    demo_settings, manifest = demo_world
    root = tmp_path_factory.mktemp("dashboard-store")
    shutil.copy(demo_settings.store_path, root / "fieldtrace.duckdb")
    with Store(root / "fieldtrace.duckdb") as store:
        replay_alerts(store, dash_rules())
        ids = store_ids(store, manifest)
    make_users(root / "users.toml", (ids.sent_warehouse, ids.open_warehouse))
    return root, ids


@pytest.fixture(scope="session")
def built_store(built: tuple[Path, StoreIds]) -> Path:
    return built[0]


@pytest.fixture(scope="session")
def ids(built: tuple[Path, StoreIds]) -> StoreIds:
    return built[1]


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
def empty_settings(tmp_path: Path, ids: StoreIds) -> Iterator[Settings]:
    Store(tmp_path / "fieldtrace.duckdb").close()
    make_users(tmp_path / "users.toml", (ids.sent_warehouse, ids.open_warehouse))
    return settings_for(tmp_path)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def demo_app_settings(demo_world: tuple[Settings, dict[str, Any]], tmp_path: Path) -> Settings:
    """The session demo world's settings over a private copy of its store.

    A served app keeps its store open for the rest of the process; on the shared file that
    connection would stop later tests from opening it read-only."""
    settings, _ = demo_world
    shutil.copy(settings.store_path, tmp_path / "fieldtrace.duckdb")
    return settings.model_copy(
        update={"store_path": tmp_path / "fieldtrace.duckdb", "data_dir": tmp_path}
    )
