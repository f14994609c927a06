"""What the cluster modules share: array and literal types, ticket columns, skip reasons, units."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

FireOn = Literal["rule", "significance", "both", "either"]
Trend = Literal["new", "growing", "steady", "fading"]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
CellArray = npt.NDArray[np.uint64]
BoolArray = npt.NDArray[np.bool_]

TICKET_COLUMNS: Final = ("ticket_id", "created_ts", "lat", "lon", "tag", "region")
SKIP_MISSING_LOCATION: Final = "missing_location"
SKIP_INVALID_LOCATION: Final = "invalid_location"
SKIP_MISSING_TAG: Final = "missing_tag"
SKIP_REASONS: Final = (SKIP_MISSING_LOCATION, SKIP_INVALID_LOCATION, SKIP_MISSING_TAG)

HOURS_PER_WEEK: Final = 168
US_PER_HOUR: Final = 3_600_000_000
US_PER_DAY: Final = 24 * US_PER_HOUR
# 1970-01-01 was a Thursday: hour 0 of the epoch is hour 72 of a Monday-based week.
EPOCH_HOUR_OF_WEEK: Final = 72
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Pseudo-count pulling a sparse hour-of-week bucket toward the flat profile.
HOUR_OF_WEEK_PSEUDO_COUNT: Final = 5.0
# The empirical-Bayes prior may weigh at most this many history lengths.
MAX_PRIOR_WEIGHT: Final = 10.0
# Largest dense centre x bin block materialised at once (int64 elements).
MAX_BLOCK: Final = 1 << 23
