"""Production serving: gunicorn with several workers over one DuckDB file (see docs/SERVING.md)."""

from __future__ import annotations

from typing import Any

from pipelines.credentials import session_key
from pipelines.settings import Settings


def serve_prod(settings: Settings, workers: int = 2, bind: str = "127.0.0.1:8050") -> None:
    """Run the dashboard under gunicorn; each worker builds its own app after the fork."""
    from gunicorn.app.base import BaseApplication

    session_key(settings)  # made once before the fork: every worker reads the same key file

    class _App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                "bind": bind,
                "workers": workers,
                "preload_app": False,
                "timeout": 60,
            }.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from dashboard import create_app

            return create_app(settings).server

    _App().run()
