"""``serve --prod --workers N``: each worker reads and writes a DuckLake; a file refuses N > 1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from dashboard import create_app
from pipelines.store.gateway import Store
from tests.dashboard.conftest import PASSWORDS, StoreIds, make_users, settings_for
from tests.dashboard.helpers import order_action_body, order_action_key

REPO = Path(__file__).resolve().parents[2]
ORDERS = [f"OX-{i:02d}" for i in range(20)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FIELDTRACE_USERS_FILE": str(root / "users.toml"),
        "FIELDTRACE_SECRET_KEY": "test-secret-lake-0123456789abcdef-xyz",
        "FIELDTRACE_BASEMAP_STYLE": "white-bg",
        "FIELDTRACE_DATA_DIR": str(root),
    }


# What the alerts page and an order action read, copied from the store the real writers built.
LAKE_TABLES = ("warehouses", "tickets", "cluster_alerts", "restock_orders", "outbox")


@pytest.fixture
def lake_server(
    lake_url: str, tmp_path: Path, built_store: Path, ids: StoreIds
) -> Iterator[tuple[str, str]]:
    """The dashboard store's alerts and orders in a DuckLake, 20 extra sent orders of the
    delivered warehouse, served by 2 gunicorn workers."""
    with Store(built_store / "fieldtrace.duckdb", read_only=True) as built:
        frames = {t: built.query(f"SELECT * FROM {t}") for t in LAKE_TABLES}  # fixed names
    make_users(tmp_path / "users.toml", (ids.sent_warehouse, ids.open_warehouse))
    with Store(lake_url) as store:
        with store.transaction() as tx:
            for table, frame in frames.items():
                tx.insert_frame(table, frame)
        store.execute(
            "INSERT INTO restock_orders SELECT o.* REPLACE ('OX-' || lpad(i::VARCHAR, 2, '0') "
            "AS order_id, 'sent' AS status, NULL AS acknowledged_at) "
            "FROM restock_orders o, range(20) r(i) WHERE o.order_id = ?",
            [ids.sent_order],
        )
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "--store", lake_url, "serve", "--prod", "--workers", "2",
         "--port", str(port)],
        env=_env(tmp_path), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/login", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    try:
        yield base, lake_url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


def _prop_id(component: dict[str, str]) -> str:
    return json.dumps(component, sort_keys=True, separators=(",", ":"))


def _acknowledge(base: str, key: str, order_id: str) -> tuple[int, str, str]:
    """Log in as the north warehouse on a fresh connection and press Acknowledge."""
    with httpx.Client(base_url=base, timeout=60) as client:
        login = client.post(
            "/login", data={"username": "wh-sent", "password": PASSWORDS["wh-sent"], "next": "/"}
        )
        assert login.status_code == 302
        body = order_action_body(key, "acknowledge", order_id)
        answer = client.post("/_dash-update-component", json=body)
        return answer.status_code, answer.text, answer.headers.get("X-FieldTrace-Worker", "")


@pytest.mark.slow
def test_acknowledge_works_through_either_worker(
    lake_server: tuple[str, str], tmp_path: Path
) -> None:
    base, lake_url = lake_server
    key = order_action_key(create_app(settings_for(tmp_path)))
    results: list[tuple[int, str, str]] = []
    with ThreadPoolExecutor(max_workers=2) as pool:  # two at once, so both workers are busy
        for pair in range(0, 20, 2):
            results += pool.map(lambda o: _acknowledge(base, key, o), ORDERS[pair : pair + 2])
    assert [status for status, _, _ in results] == [200] * 20
    assert all("acknowledged by wh-sent" in text for _, text, _ in results), results
    assert len({worker for _, _, worker in results}) == 2
    with Store(lake_url, read_only=True) as store:
        done = store.query(
            "SELECT count(*) AS n FROM restock_orders WHERE order_id LIKE 'OX-%' "
            "AND status = 'acknowledged' AND acknowledged_at IS NOT NULL"
        )
        audits = store.scalar(
            "SELECT count(*) FROM audit_log WHERE actor = 'wh-sent' AND object_id LIKE 'OX-%'"
        )
    assert (done["n"][0], audits) == (20, 20)


def test_several_workers_over_the_embedded_file_are_refused(tmp_path: Path) -> None:
    Store(tmp_path / "ft.duckdb").close()
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "--store", str(tmp_path / "ft.duckdb"), "serve", "--prod",
         "--workers", "2", "--port", str(_free_port())],
        env=_env(tmp_path), cwd=REPO, capture_output=True, timeout=120,
    )  # fmt: skip
    message = " ".join(proc.stderr.decode().split())
    assert proc.returncode == 2
    assert "--workers 2 refused" in message
    assert "embedded DuckDB file" in message
    assert "ducklake:postgresql://" in message
    assert "Traceback" not in message
