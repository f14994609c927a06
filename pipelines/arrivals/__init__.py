"""Arrival verification: the runner between the store and ``geofence.verdict``."""
