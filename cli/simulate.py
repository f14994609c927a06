"""``fieldtrace simulate``: replay a generated world through the live receivers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, iso_time, positive, settings


def simulate_cmd(
    world: Annotated[
        Path | None, typer.Argument(help="Folder written by `generate` (default: data/demo).")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="ISO time to start at (default: the world's first event).", callback=iso_time
        ),
    ] = None,
    hours: Annotated[
        float, typer.Option(help="Hours of the world to replay.", callback=positive)
    ] = 24.0,
    speed: Annotated[
        float,
        typer.Option(min=0, help="Times real time; 1 = real time, 0 = as fast as possible."),
    ] = 60.0,
    shift_to_now: Annotated[
        bool, typer.Option("--shift-to-now", help="Move the window to end now (new ids).")
    ] = False,
    positions: Annotated[bool, typer.Option("--positions/--no-positions")] = True,
    tickets: Annotated[bool, typer.Option("--tickets/--no-tickets")] = True,
    iot: Annotated[bool, typer.Option("--iot/--no-iot")] = True,
) -> None:
    """Replay the demo world as phones (OsmAnd), a ticketing system (CloudEvents) and devices
    (MQTT) would send it, to receivers already running (`fieldtrace serve`)."""
    from pipelines.live.simulate import SimulateOptions, simulate

    s = settings()
    opts = SimulateOptions(
        start=datetime.fromisoformat(start) if start else None,
        hours=hours,
        speed=speed,
        shift_to_now=shift_to_now,
        id_suffix=f"-L{datetime.now():%m%d%H%M}" if shift_to_now else "",
        positions=positions,
        tickets=tickets,
        iot=iot,
    )
    counts = simulate(s, world or s.data_dir / "demo", opts)
    for key, value in sorted(counts.items()):
        console.print(f"{key:>20} {value:>10,}")
