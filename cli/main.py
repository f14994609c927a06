"""The ``fieldtrace`` command line: the top layer, which may import every other.

Each command lives in a module of its own (``cli.ingest``, ``cli.alerts``, ``cli.serve``...);
this module only builds the typer app, takes the global options and mounts the commands.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli import alerts, arrivals, batches, edge, fetch, ingest, maintain, serve, simulate, users
from cli.common import FieldTraceGroup, State

app = typer.Typer(
    cls=FieldTraceGroup,
    name="fieldtrace",
    help="FieldTrace: what really happened between status changes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_options(
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="DuckDB store file, or ducklake:postgresql://HOST:PORT/DB?data=DIR "
            "(overrides FIELDTRACE_STORE_PATH / FIELDTRACE_STORE_URL).",
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file.")] = None,
) -> None:
    State.store_override = store
    State.config = config


app.command()(ingest.ingest)
app.command("ingest-world")(ingest.ingest_world_cmd)
app.command()(ingest.generate)
app.command()(ingest.status)
app.command()(serve.serve)
app.command()(serve.demo)
app.command("simulate")(simulate.simulate_cmd)
app.command()(maintain.maintain)
app.add_typer(fetch.fetch_app, name="fetch")
app.add_typer(users.users_app, name="users")
app.add_typer(alerts.alerts_app, name="alerts")
app.add_typer(arrivals.arrivals_app, name="arrivals")
app.command()(edge.edge)
app.command()(edge.hub)
app.add_typer(batches.batches_app, name="batches")


def main() -> None:
    # Rich renders 80 columns when output is not a terminal (CI logs, pipes); widen it so
    # summary tables (alerts, arrivals, status) are not truncated.
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "160")
    app()
