"""The live views the dispatch page polls and the ticket timeline's geofence lane, on a store
the processors wrote to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipelines.live.bus import make_event
from pipelines.live.processors.loop import record_outputs
from pipelines.store.gateway import Store
from pipelines.views import live, ticket

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def test_geofence_events_reach_the_ticket_timeline_and_the_ticker(tmp_path: Path) -> None:
    with Store(tmp_path / "ft.duckdb") as store:
        events = [
            make_event(
                f"fieldtrace.geofence.{kind}",
                source="/fieldtrace/processors/geofence",
                id=f"TK1/T1/{kind}/{i}",
                subject="TK1",
                time=T0 + timedelta(minutes=i),
                data={"technician_id": "T1", "ticket_id": "TK1"},
            )
            for i, kind in enumerate(["enter", "arrived_auto", "dwell", "exit"])
        ]
        record_outputs(store, events, T0)
        record_outputs(store, events[:1], T0)  # re-published: kept once
        lane = ticket.geofence_events(store, "TK1")
        assert lane["event"].to_list() == [
            "fence enter", "arrived (auto)", "fence dwell", "fence exit",
        ]  # fmt: skip
        assert ticket.geofence_events(store, "TK2").height == 0
        rows = live.ticker(store)
        assert rows.height == 4
        assert set(rows["kind"]) == {"geofence"}
        assert "arrived_auto · T1" in rows["text"].to_list()


def test_latest_positions_reads_only_newer_fixes(tmp_path: Path) -> None:
    import h3
    import polars as pl

    with Store(tmp_path / "ft.duckdb") as store:
        assert live.latest_fix_time(store) is None
        rows = [
            {"technician_id": tech, "ts": T0 + timedelta(seconds=s), "lat": 30.0 + s / 1e4,
             "lon": 120.0, "datum_in": "WGS84",
             "h3": h3.str_to_int(h3.latlng_to_cell(30.0, 120.0, 9))}
            for tech, s in (("T1", 0), ("T1", 10), ("T2", 5))
        ]  # fmt: skip
        with store.transaction() as tx:
            tx.insert_frame("gps_fixes", pl.DataFrame(rows).cast({"h3": pl.UInt64}))
        assert live.latest_fix_time(store) == T0 + timedelta(seconds=10)
        moved = live.latest_positions(store, T0 + timedelta(seconds=1))
        assert moved.select("technician_id", "lat").rows() == [("T1", 30.001), ("T2", 30.0005)]
        assert live.latest_positions(store, T0 + timedelta(seconds=10)).height == 0
