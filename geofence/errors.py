"""Error base of the pure geofence core; each subclass also inherits a builtin.

Other modules add their own subclasses next to the code that raises them; the ones shared by
several modules (geometry, datum, frame contracts) live here.
"""

from __future__ import annotations

from collections.abc import Iterable


class GeofenceError(Exception):
    """Base of every error raised by the ``geofence`` package."""


class FenceGeometryError(GeofenceError, ValueError):
    """A fence row has a missing, invalid or out-of-range geometry field."""


class DatumError(GeofenceError, ValueError):
    """A coordinate datum name is not one of WGS84, GCJ-02 or BD-09."""


class FrameContractError(GeofenceError, KeyError):
    """A frame handed to ``geofence`` lacks a column its contract requires."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ThresholdError(GeofenceError, ValueError):
    """A threshold or keyword argument is outside its valid range."""


def require_columns(frame_columns: Iterable[str], required: Iterable[str], where: str) -> None:
    """Raise ``FrameContractError`` naming ``where`` and every missing column."""
    have = set(frame_columns)
    missing = [c for c in required if c not in have]
    if missing:
        raise FrameContractError(f"{where}: missing column(s) {missing}; found {sorted(have)}")
