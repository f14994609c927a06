"""What every ``fieldtrace`` command shares: the global options, settings, the store, consoles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pipelines.settings import Settings, load_settings
from pipelines.store.gateway import Store

console = Console(stderr=True, soft_wrap=True)
out = Console()


class State:
    store_override: Path | None = None
    config: Path | None = None


def settings() -> Settings:
    if State.config is not None:
        os.environ["FIELDTRACE_CONFIG"] = str(State.config)
    overrides: dict[str, Any] = {}
    if State.store_override is not None:
        overrides["store_path"] = State.store_override
    return load_settings(**overrides)


def open_store(s: Settings | None = None, *, read_only: bool = False) -> Store:
    return Store((s or settings()).store_path, read_only=read_only)


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
