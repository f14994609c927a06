"""Production serving: gunicorn workers, each with its own app and store (see docs/SERVING.md).

Several workers need a store several processes can write: a DuckLake. The embedded DuckDB
file admits one writing process, so more than one worker over it is refused up front (a
worker that lost the file lock would answer 500s and could not Acknowledge an order).
"""

from __future__ import annotations

import os
from typing import Any

from pipelines.credentials import session_key
from pipelines.settings import Settings
from pipelines.store.location import FileLocation

THREADS_PER_WORKER = 4


def multi_worker_refusal(settings: Settings, workers: int) -> str | None:
    """Why ``workers`` gunicorn workers cannot serve this store, or None when they can."""
    location = settings.store_location
    if workers <= 1 or not isinstance(location, FileLocation):
        return None
    return (
        f"--workers {workers} refused: {location.path} is an embedded DuckDB file, which one "
        "process at a time can open for writing, so every other worker would fail its reads "
        "and its Acknowledge/Fulfil writes. Use --workers 1 (it serves many users with "
        "threads), or a DuckLake store every worker can write: "
        "--store 'ducklake:postgresql://127.0.0.1:5432/fieldtrace_lake?data=/srv/fieldtrace/lake'"
        " (see README, 'A team deployment')."
    )


def serve_prod(settings: Settings, workers: int = 2, bind: str = "127.0.0.1:8050") -> None:
    """Run the dashboard under gunicorn; each worker builds its own app after the fork."""
    from gunicorn.app.base import BaseApplication

    refusal = multi_worker_refusal(settings, workers)
    if refusal is not None:
        raise SystemExit(refusal)
    session_key(settings)  # made once before the fork: every worker reads the same key file

    class _App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                "bind": bind,
                "workers": workers,
                # threads: a worker answers a few users at once (DuckDB releases the GIL)
                "worker_class": "gthread",
                "threads": THREADS_PER_WORKER,
                "preload_app": False,
                "timeout": 60,
            }.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from dashboard import create_app

            server = create_app(settings).server
            pid = str(os.getpid())

            def tag(response: Any) -> Any:  # which worker answered (logs, load tests)
                response.headers["X-FieldTrace-Worker"] = pid
                return response

            server.after_request(tag)
            return server

    _App().run()
