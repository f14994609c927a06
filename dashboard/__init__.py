"""FieldTrace dashboard. ``create_app(settings)`` builds a fresh app; nothing loads at import."""

from dashboard.app import create_app

__all__ = ["create_app"]
