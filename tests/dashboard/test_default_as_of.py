"""The dispatch page's default "as of" moment: pure, no browser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipelines.views import default_as_of

CLOCK = datetime(2026, 10, 5, 8, 0, tzinfo=UTC)  # a Monday, 16:00 in Asia/Shanghai


@pytest.mark.parametrize(
    ("clock", "latest_created", "wall", "expected"),
    [
        # live store: the data clock
        (CLOCK, CLOCK, CLOCK + timedelta(hours=2), CLOCK),
        # historical, Monday 16:00 local: that Monday 10:00 local (02:00 UTC)
        (CLOCK, CLOCK, CLOCK + timedelta(days=40), datetime(2026, 10, 5, 2, tzinfo=UTC)),
        # historical, latest ticket Saturday: back to Friday 10:00 local
        (
            datetime(2026, 11, 2, 8, tzinfo=UTC),
            datetime(2026, 10, 31, 6, tzinfo=UTC),
            datetime(2026, 11, 24, tzinfo=UTC),
            datetime(2026, 10, 30, 2, tzinfo=UTC),
        ),
        # historical, latest ticket Monday 09:00 local: the Friday before
        (
            CLOCK,
            datetime(2026, 10, 5, 1, tzinfo=UTC),
            CLOCK + timedelta(days=40),
            datetime(2026, 10, 2, 2, tzinfo=UTC),
        ),
    ],
)
def test_default_as_of(
    clock: datetime, latest_created: datetime, wall: datetime, expected: datetime
) -> None:
    first = datetime(2026, 9, 1, tzinfo=UTC)
    got = default_as_of(first, clock, latest_created, wall_clock=wall, tz="Asia/Shanghai")
    assert got == expected
