"""The ``fieldtrace`` console script: the data commands plus ``serve`` and ``demo``.

It lives in ``dashboard`` because it is the one place that may import every layer
(``dashboard`` → ``pipelines`` → ``geofence``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipelines import cli as data_cli
from pipelines.cli import app, console
from pipelines.settings import Settings


def _serve(s: Settings, host: str, port: int, *, debug: bool, prod: bool, workers: int) -> None:
    if prod:
        from dashboard.serving import serve_prod

        console.print(f"[bold green]FieldTrace[/] gunicorn x{workers} on http://{host}:{port}")
        serve_prod(s, workers=workers, bind=f"{host}:{port}")
        return
    from dashboard import create_app

    dash_app = create_app(s)
    console.print(f"[bold green]FieldTrace[/] serving {s.store_path} on http://{host}:{port}")
    dash_app.run(host=host, port=port, debug=debug)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8050,
    debug: Annotated[bool, typer.Option(help="Dash debug mode.")] = False,
    prod: Annotated[bool, typer.Option("--prod", help="Serve through gunicorn.")] = False,
    workers: Annotated[int, typer.Option(help="gunicorn workers with --prod.")] = 2,
) -> None:
    """Serve the dashboard (see docs/SERVING.md for the multi-worker plan)."""
    _serve(data_cli.settings(), host, port, debug=debug, prod=prod, workers=workers)


def prepare_demo(s: Settings, *, seed: int, scale: float) -> None:
    """Generate (once), ingest (idempotent), verify arrivals, evaluate alerts, create users."""
    from pipelines.cli_users import demo as demo_users

    world: Path = s.data_dir / "demo"
    if not (world / "manifest.json").exists():
        data_cli.generate(out_dir=world, seed=seed, scale=scale, days=30)
    data_cli.ingest_world(world, s)
    for step in data_cli.DEMO_STEPS:
        step(s)
    with data_cli.open_store(s) as store:
        busiest = store.scalar(
            "SELECT warehouse_id FROM restock_orders GROUP BY warehouse_id "
            "ORDER BY count(*) DESC, warehouse_id LIMIT 1"
        )
    demo_users(warehouse=busiest)


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Random seed of the demo world.")] = 7,
    scale: Annotated[float, typer.Option(help="World size (1.0 ≈ 150 technicians).")] = 1.0,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8050,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Prepare only.")] = False,
) -> None:
    """Generate the demo world, ingest it through the validated path, and serve it."""
    s = data_cli.settings()
    prepare_demo(s, seed=seed, scale=scale)
    if not no_serve:
        _serve(s, host, port, debug=False, prod=False, workers=1)


def main() -> None:
    # Rich renders 80 columns when output is not a terminal (CI logs, pipes); widen it so
    # summary tables (alerts, arrivals, status) are not truncated.
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "160")
    app()
