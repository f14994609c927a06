"""An "arrived" judged without fixes; its fixes reach the hub 10 min late through the edge:
the hub verifies it again and publishes the corrected verdict with a raised version."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import polars as pl
import pytest

from pipelines.arrivals.runner import load_arrivals
from pipelines.edge.events import VERDICT_STREAM, verdict_subject
from pipelines.edge.hub import recheck_arrivals, verify_and_version
from pipelines.edge.streams import connect, publish_event
from pipelines.settings import load_settings
from tests.edge.conftest import Site, now_utc, wait_for

LAT, LON = 55.0, 8.0


def _seed_arrival(site: Site) -> str:
    arrived = now_utc() - timedelta(minutes=10)
    with site.store.transaction() as tx:
        tx.insert_frame(
            "tickets",
            pl.DataFrame(
                {
                    "ticket_id": ["T-LATE"],
                    "source": ["test"],
                    "lat": [LAT],
                    "lon": [LON],
                    "datum_in": ["WGS84"],
                    "created_ts": [arrived - timedelta(hours=1)],
                }
            ),
        )
        tx.insert_frame(
            "ticket_events",
            pl.DataFrame(
                {
                    "event_id": ["E-ARR"],
                    "ticket_id": ["T-LATE"],
                    "event_type": ["arrived"],
                    "ts": [arrived],
                    "actor": ["tech-7"],
                }
            ),
        )
    return arrived.isoformat()


def _fixes(arrived_iso: str) -> list[dict[str, object]]:
    from datetime import datetime

    arrived = datetime.fromisoformat(arrived_iso)
    return [
        {
            "technician_id": "tech-7",
            "ts": (arrived + timedelta(seconds=s)).isoformat(),
            "lat": LAT + 0.000005 * ((s // 10) % 3 - 1),
            "lon": LON,
            "accuracy_m": 3.0,
            "speed_mps": 0.0,
        }
        for s in range(-360, 121, 10)
    ]


def _last_published(site: Site) -> dict[str, object]:
    async def read() -> dict[str, object]:
        nc = await connect(site.hub.spec.client_url, name="verdict-reader")
        try:
            msg = await nc.jetstream().get_last_msg(VERDICT_STREAM, verdict_subject("fieldtrace"))
            return dict(json.loads(msg.data))
        finally:
            await nc.close()

    return asyncio.run(read())


@pytest.mark.slow  # real hub + edge processes: ~20 s on the shared 2-core machine
def test_late_fixes_publish_a_corrected_verdict_with_a_raised_version(site: Site) -> None:
    settings = load_settings()
    arrived = _seed_arrival(site)
    first = verify_and_version(site.store, settings, load_arrivals(site.store), "arrived")
    assert [e.get_data()["verdict"] for e in first] == ["INCONCLUSIVE"]  # type: ignore[index]

    async def publish_first() -> None:
        nc = await connect(site.hub.spec.client_url, name="verdicts")
        try:
            await publish_event(nc.jetstream(), verdict_subject("fieldtrace"), first[0])
        finally:
            await nc.close()

    asyncio.run(publish_first())
    assert _last_published(site)["data"]["version"] == 1  # type: ignore[index]

    assert site.edge.post("gps", _fixes(arrived)).status_code == 202
    wait_for(
        lambda: site.store.scalar("SELECT max(version) FROM verdict_publications") == 2,
        timeout_s=30,
        what="corrected verdict",
    )
    published = _last_published(site)
    assert published["subject"] == "T-LATE"
    assert published["verdictversion"] == "2"
    data = published["data"]
    assert isinstance(data, dict)
    assert (data["version"], data["verdict"], data["trigger"]) == (2, "AT_DOOR", "late_fixes")
    check = site.store.query("SELECT verdict, n_fixes FROM arrival_checks").row(0)
    assert check[0] == "AT_DOOR"
    # the same fixes again change nothing: no third version
    fixes = site.store.query("SELECT technician_id, ts FROM gps_fixes")
    assert recheck_arrivals(site.store, settings, fixes, "again") == []

    # the site goes dark: the hub shows its link down, the last sync kept, no backlog known
    site.edge.stop()
    wait_for(
        lambda: site.store.query("SELECT link_state FROM edge_links").rows() == [("down",)],
        timeout_s=20,
        what="link down",
    )
    assert site.store.scalar("SELECT last_sync_at FROM edge_links") is not None
