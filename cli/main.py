"""The ``fieldtrace`` command line: the top layer, which may import every other.

Each command lives in a module of its own (``cli.ingest``, ``cli.alerts``, ``cli.serve``...);
this module only builds the typer app, takes the global options and mounts the commands.
A command's module is imported when that command runs (or ``--help`` lists them all), so
``fieldtrace arrivals verify`` does not pay for importing the dashboard, the alert rules or
the live machinery.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main

from cli.common import FieldTraceGroup, State

# command name -> (module, attribute): a function (one command) or a typer app (a group)
COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("cli.ingest", "ingest"),
    "ingest-world": ("cli.ingest", "ingest_world_cmd"),
    "generate": ("cli.ingest", "generate"),
    "status": ("cli.ingest", "status"),
    "serve": ("cli.serve", "serve"),
    "demo": ("cli.serve", "demo"),
    "simulate": ("cli.simulate", "simulate_cmd"),
    "maintain": ("cli.maintain", "maintain"),
    "fetch": ("cli.fetch", "fetch_app"),
    "users": ("cli.users", "users_app"),
    "alerts": ("cli.alerts", "alerts_app"),
    "arrivals": ("cli.arrivals", "arrivals_app"),
    "edge": ("cli.edge", "edge"),
    "hub": ("cli.edge", "hub"),
    "batches": ("cli.batches", "batches_app"),
}


class LazyCommands(FieldTraceGroup):
    """The top-level group: mounts ``COMMANDS``, importing a command's module on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        module, attr = COMMANDS[cmd_name]
        target = getattr(importlib.import_module(module), attr)
        if isinstance(target, typer.Typer):
            command: Any = typer.main.get_group(target)
        else:
            single = typer.Typer()
            single.command(cmd_name)(target)
            command = typer.main.get_command(single)
        command.name = cmd_name
        return command


app = typer.Typer(
    cls=LazyCommands,
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


def main() -> None:
    # Rich renders 80 columns when output is not a terminal (CI logs, pipes); widen it so
    # summary tables (alerts, arrivals, status) are not truncated.
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "160")
    app()
