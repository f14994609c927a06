"""``fieldtrace edge`` (a site's node) and ``fieldtrace hub`` (the hub it syncs to)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, open_store, settings
from pipelines.edge.natsd import EdgeError, free_port


def _port(value: int | None) -> int:
    return free_port() if value is None else value


def edge(
    site: Annotated[
        str, typer.Option(help="Site name (lowercase letters, digits, dashes), e.g. tower-7.")
    ],
    hub: Annotated[
        str, typer.Option(help="The hub's leaf-node URL, e.g. nats-leaf://127.0.0.1:7422.")
    ],
    data_dir: Annotated[
        Path | None, typer.Option(help="Site data (JetStream, store). Default data/edge/SITE.")
    ] = None,
    hub_domain: Annotated[str, typer.Option(help="The hub's JetStream domain.")] = "hub",
    prefix: Annotated[str, typer.Option(help="Bus subject prefix.")] = "fieldtrace",
    nats_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Leaf client port.")
    ] = None,
    mqtt_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="MQTT intake port.")
    ] = None,
    http_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="HTTP intake port.")
    ] = None,
    monitor_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Leaf monitoring port.")
    ] = None,
) -> None:
    """Run a site's edge node: leaf NATS + own JetStream domain, intake, local rules, store."""
    from pipelines.edge.events import check_site
    from pipelines.edge.node import EdgeConfig, describe, run_edge

    try:
        config = EdgeConfig(
            site=check_site(site),
            hub_leaf_url=hub,
            data_dir=data_dir or Path("data/edge") / site,
            hub_domain=hub_domain,
            prefix=prefix,
            client_port=_port(nats_port),
            monitor_port=_port(monitor_port),
            mqtt_port=_port(mqtt_port),
            http_port=_port(http_port),
        )
        console.print(json.dumps(describe(config), indent=2))
        asyncio.run(run_edge(config))
    except EdgeError as exc:
        console.print(f"[red]edge: {exc}[/]")
        raise typer.Exit(2) from exc


def hub(
    data_dir: Annotated[Path, typer.Option(help="Hub JetStream data.")] = Path("data/hub"),
    nats_port: Annotated[int, typer.Option(min=1, max=65535, help="Hub client port.")] = 4232,
    leaf_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port edge nodes connect to.")
    ] = 7422,
    monitor_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Hub monitoring port.")
    ] = 8232,
    prefix: Annotated[str, typer.Option(help="Bus subject prefix.")] = "fieldtrace",
) -> None:
    """Run the hub: nats-server (domain hub, leaf listener) and every site synced to the store."""
    from pipelines.edge.hub import HubConfig, run_hub

    s = settings()
    config = HubConfig(
        data_dir=data_dir,
        prefix=prefix,
        client_port=nats_port,
        leaf_port=leaf_port,
        monitor_port=monitor_port,
    )
    console.print(
        f"hub: nats://127.0.0.1:{nats_port}, edges connect to {config.leaf_url}, "
        f"store {s.store_path}"
    )
    try:
        with open_store(s) as store:
            asyncio.run(run_hub(config, store, s))
    except EdgeError as exc:
        console.print(f"[red]hub: {exc}[/]")
        raise typer.Exit(2) from exc
