"""The simulator replays a generated world through the real receivers; with the bus stopped
for a while during the replay, senders see 503s and retry, and nothing is lost or doubled."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from pipelines.live.osmand import KNOT_MPS
from pipelines.live.runtime import start_live
from pipelines.live.simulate import (
    SimulateOptions,
    Simulator,
    osmand_form,
    prepare_access,
    timeline,
)
from pipelines.store.gateway import Store
from tests.fixtures.services import ChildService
from tests.live.conftest import make_live_settings, wait_for


@pytest.fixture(scope="module")
def small_world(demo_world: tuple[object, dict[str, object]]) -> Path:
    """The session's seeded demo world (its files are only read here)."""
    settings = demo_world[0]
    return Path(settings.data_dir) / "demo"  # type: ignore[attr-defined]


def test_osmand_form_is_traccar_client_shape_in_knots() -> None:
    ts = datetime(2026, 10, 1, 8, 0, 0, 123000, tzinfo=UTC)
    form = osmand_form(
        {
            "technician_id": "T1",
            "lat": 30.1,
            "lon": 120.2,
            "accuracy_m": 4.0,
            "speed_mps": 10.0,
            "heading_deg": 90.0,
            "altitude_m": None,
            "hdop": 1.2,
        },
        ts,
    )
    assert form == {
        "id": "T1",
        "lat": "30.1",
        "lon": "120.2",
        "timestamp": "2026-10-01T08:00:00.123Z",
        "accuracy": "4.0",
        "bearing": "90.0",
        "hdop": "1.2",
        "speed": f"{10 / KNOT_MPS:.2f}",
    }


@pytest.mark.slow
def test_replay_with_the_bus_stopped_midway_loses_and_doubles_nothing(
    small_world: Path, tmp_path: Path, owned_nats: ChildService, mqtt_url: str, make_prefix
) -> None:  # type: ignore[no-untyped-def]
    env = make_live_settings(
        tmp_path,
        nats_url=f"nats://127.0.0.1:{owned_nats.port}",
        mqtt_url=mqtt_url,
        prefix=make_prefix(),
        bus_timeout_s=0.5,
    )
    settings = env.settings
    first_created = (
        pl.read_csv(small_world / "events.csv", infer_schema=False)
        .filter(pl.col("event_type") == "created")["ts"]
        .str.to_datetime(time_zone="UTC")
        .min()
    )
    opts = SimulateOptions(start=first_created, hours=1.0, speed=900.0, max_retry_s=30)
    items, _, _ = timeline(small_world, opts)
    kinds = {k: sum(1 for i in items if i.kind == k) for k in ("gps", "ticket", "iot")}
    assert kinds["gps"] > 50
    assert kinds["ticket"] > 0
    with Store(settings.store_path) as store:
        live = start_live(settings, store)
        try:
            key = prepare_access(settings, small_world)

            def outage() -> None:
                time.sleep(1.0)
                owned_nats.stop()
                time.sleep(2.5)
                owned_nats.start()

            stopper = threading.Thread(target=outage)
            stopper.start()
            import asyncio

            counts = asyncio.run(Simulator(settings, key, opts).run(items))
            stopper.join(20)

            def stored(kind: str, table: str) -> int:
                q = store.scalar("SELECT count(*) FROM quarantine WHERE kind = ?", [kind])
                return store.count(table) + int(q)

            wait_for(
                lambda: (
                    (
                        stored("gps", "gps_fixes"),
                        stored("events", "ticket_events"),
                        stored("iot", "iot_readings"),
                    )
                    == (kinds["gps"], kinds["ticket"], kinds["iot"])
                ),
                timeout_s=30,
                what=f"every replayed item stored or quarantined: {kinds}",
            )
        finally:
            live.stop()
        assert counts["gps_200"] == kinds["gps"]
        assert counts["ticket_202"] == kinds["ticket"]
        assert sum(v for k, v in counts.items() if "retry_503" in k or "retry_0" in k) > 0
        assert not any(k.endswith("gave_up") for k in counts)
        dup = store.scalar(
            "SELECT count(*) FROM quarantine WHERE rule = 'duplicate' AND kind = 'gps'"
        )
        world_dups = sum(1 for i in items if i.kind == "gps") - len(
            {(i.payload["technician_id"], i.ts) for i in items if i.kind == "gps"}
        )
        assert dup == world_dups  # only the world's own repeated rows, none from retries


def test_shifted_replay_ends_now_with_new_ids(small_world: Path) -> None:
    from cli.serve import demo_replay
    from pipelines.live.simulate import ticket_cloudevent
    from pipelines.settings import load_settings

    opts = demo_replay(load_settings(data_dir=small_world.parent), hours=3.0, speed=30.0)
    before = datetime.now(UTC)
    items, start, end = timeline(small_world, opts)
    assert end - start == timedelta(hours=3)
    assert before - timedelta(seconds=5) <= end <= datetime.now(UTC)
    assert items
    assert all(start <= i.ts < end for i in items)
    tickets = [i for i in items if i.kind == "ticket"]
    assert tickets
    event = ticket_cloudevent(tickets[0].payload, tickets[0].ts)
    assert event["id"].endswith(opts.id_suffix)
    assert event["subject"].endswith(opts.id_suffix)
