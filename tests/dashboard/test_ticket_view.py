"""Physical events of a visit, from stops (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from pipelines.views.ticket import physical_events

T0 = datetime(2026, 10, 4, 2, 0, tzinfo=UTC)
CUSTOMER = (30.30, 120.14)


def make_stops(rows: list[tuple[int, int, float]]) -> pl.DataFrame:
    """(start minute, end minute, metres north of the customer) per stop."""
    return pl.DataFrame(
        {
            "start_ts": [T0 + timedelta(minutes=a) for a, _, _ in rows],
            "end_ts": [T0 + timedelta(minutes=b) for _, b, _ in rows],
            "lat": [CUSTOMER[0] + d / 111_000 for _, _, d in rows],
            "lon": [CUSTOMER[1]] * len(rows),
        }
    )


def test_a_visit_split_into_several_stops_is_one_visit() -> None:
    stops = make_stops(
        [(0, 10, 360.0), (20, 40, 8.0), (41, 70, 3.0), (71, 120, 12.0), (130, 140, 900)]
    )
    events = physical_events(stops, pl.DataFrame(), CUSTOMER)
    got = dict(zip(events["event"], events["ts"], strict=True))
    assert got == {
        "departed": T0 + timedelta(minutes=10),
        "arrived": T0 + timedelta(minutes=20),
        "left": T0 + timedelta(minutes=120),
    }


def test_no_stop_near_the_customer_means_no_physical_arrival() -> None:
    stops = make_stops([(0, 10, 360.0), (20, 40, 200.0)])
    assert physical_events(stops, pl.DataFrame(), CUSTOMER).height == 0
