"""Error base of the pure geofence core; each subclass also inherits a builtin."""

from __future__ import annotations


class GeofenceError(Exception):
    """Base of every error raised by the ``geofence`` package."""
