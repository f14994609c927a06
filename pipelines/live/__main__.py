"""Run one live part as its own process: ``python -m pipelines.live writer|receivers``.

Settings come from ``FIELDTRACE_*`` variables and the config file, as everywhere. SIGTERM or
SIGINT stops the part cleanly (the writer finishes its batch; a SIGKILL loses nothing either).
``fieldtrace serve`` runs the same parts inside the dashboard process instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from pipelines.errors import FieldTraceError
from pipelines.settings import load_settings


async def _main(part: str) -> None:
    settings = load_settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if part == "writer":
        from pipelines.live.writer import run_writer
        from pipelines.store.gateway import Store

        pause = float(os.environ.get("FIELDTRACE_FAULT_PAUSE_IN_WRITE_S", "0") or 0)
        with Store(settings.store_location) as store:
            print("writer: consuming", flush=True)
            await run_writer(settings, store, stop=stop, fault_pause_s=pause)
    elif part == "receivers":
        from pipelines.live.receivers import run_receivers

        def ready() -> None:
            print(
                f"receivers: osmand :{settings.osmand_port}, events :{settings.events_port}",
                flush=True,
            )

        await run_receivers(settings, stop=stop, ready=ready)
    else:
        raise SystemExit(f"unknown part {part!r}; expected writer or receivers")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m pipelines.live writer|receivers")
    try:
        if sys.argv[1] == "receivers":
            import uvloop  # the receivers' hot path: libuv's loop

            uvloop.run(_main(sys.argv[1]))
        else:
            asyncio.run(_main(sys.argv[1]))
    except FieldTraceError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
