"""The ``fieldtrace`` console script: the data commands plus ``serve`` and ``demo``.

It lives in ``dashboard`` because it is the one place that may import every layer
(``dashboard`` → ``pipelines`` → ``geofence``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines import cli as data_cli
from pipelines.cli import app, console


def _serve(host: str, port: int, debug: bool) -> None:
    from dashboard import create_app

    s = data_cli.settings()
    dash_app = create_app(s)
    console.print(f"[bold green]FieldTrace[/] serving {s.store_path} on http://{host}:{port}")
    dash_app.run(host=host, port=port, debug=debug)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8050,
    debug: Annotated[bool, typer.Option(help="Dash debug mode.")] = False,
) -> None:
    """Serve the dashboard."""
    _serve(host, port, debug)


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
    world: Path = s.data_dir / "demo"
    if not (world / "manifest.json").exists():
        data_cli.generate(out_dir=world, seed=seed, scale=scale, days=30)
    data_cli.ingest_world(world, s)
    if not no_serve:
        _serve(host, port, debug=False)


def main() -> None:
    app()


__all__ = ["main", "typer"]
