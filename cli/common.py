"""What every ``fieldtrace`` command shares: the global options, settings, the store, consoles,
and the one error boundary (``FieldTraceGroup``): an error of ours becomes a message naming
what was wrong and exit code 2, never a traceback.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from pipelines.batch.engine import LOCAL_SCHEDULER
from pipelines.errors import FieldTraceError
from pipelines.settings import Settings, load_settings
from pipelines.store.gateway import Store
from pipelines.store.location import LAKE_PREFIX, FileLocation

console = Console(stderr=True, soft_wrap=True)
out = Console()


# Options of the batch commands that can run on Dask (`--engine dask --scheduler ADDR`).
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="'local' (this process) or 'dask' (partitions as Dask tasks; see --scheduler).",
    ),
]
SchedulerOpt = Annotated[
    str,
    typer.Option(
        "--scheduler",
        help="With --engine dask: a scheduler address (tcp://host:8786) or 'local' "
        "(a LocalCluster of 2 worker processes on this machine).",
    ),
]
DEFAULT_SCHEDULER = LOCAL_SCHEDULER


def checked_engine(engine: str) -> Literal["local", "dask"]:
    if engine == "local":
        return "local"
    if engine == "dask":
        return "dask"
    console.print(f"[red]error:[/] --engine {engine!r}: expected 'local' or 'dask'")
    raise typer.Exit(2)


class State:
    store_override: str | None = None
    config: Path | None = None


def settings() -> Settings:
    if State.config is not None:
        os.environ["FIELDTRACE_CONFIG"] = str(State.config)
    overrides: dict[str, Any] = {}
    if State.store_override is not None:
        if State.store_override.startswith(LAKE_PREFIX):
            overrides["store_url"] = State.store_override
        else:
            overrides["store_path"] = Path(State.store_override)
            overrides["store_url"] = None
    return load_settings(**overrides)


def open_store(s: Settings | None = None, *, read_only: bool = False) -> Store:
    """The store; ``read_only`` where a command only reads (other readers may share it).

    A store that does not exist yet is created (read-write) so that reading commands show an
    empty store rather than fail. A store another process holds raises ``StoreBusyError``,
    whose message names that process; the error boundary prints it.
    """
    location = (s or settings()).store_location
    exists = not isinstance(location, FileLocation) or location.path.exists()
    return Store(location, read_only=read_only and exists)


class FieldTraceGroup(TyperGroup):
    """The one error boundary of the command line: every command runs inside ``invoke``."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context (typer vendors click)
        try:
            return super().invoke(ctx)
        except FieldTraceError as exc:
            console.print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from exc


# -- option checks (typer callbacks): a bad value exits 2 naming the option ----------------
def positive(value: float | None) -> float | None:
    """A finite number > 0 (or not given)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} must be a finite number > 0")
    return value


def one_of(*choices: str) -> Callable[[str], str]:
    """A callback accepting only ``choices``."""

    def check(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


def writable_file(value: Path) -> Path:
    """A file path whose folder exists (the file itself may not yet)."""
    if value.is_dir() or not value.resolve().parent.is_dir():
        raise typer.BadParameter(f"{value}: not a file in an existing folder")
    return value


def zone(value: str | None) -> str | None:
    """An IANA time zone name (or not given)."""
    if value is not None:
        from pipelines.ingest.contract import check_zone  # the ingest contract: only here

        try:
            check_zone(value)
        except FieldTraceError as exc:
            raise typer.BadParameter(str(exc)) from exc
    return value


def iso_time(value: str | None) -> str | None:
    """An ISO 8601 time (or not given)."""
    if value is not None:
        from datetime import datetime

        try:
            datetime.fromisoformat(value)
        except ValueError as exc:
            raise typer.BadParameter(f"{value!r} is not an ISO time (2026-10-05T08:00)") from exc
    return value


def progress_bar() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
