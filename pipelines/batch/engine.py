"""Where batch partitions run: here, one after another, or on a Dask cluster."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

from pipelines.errors import FieldTraceError
from pipelines.store.gateway import Store
from pipelines.store.location import StoreLocation, parse_location

R = TypeVar("R")
Engine = Literal["local", "dask"]
LOCAL_SCHEDULER = "local"


class BatchEngineError(FieldTraceError, RuntimeError):
    """A batch engine cannot run (bad scheduler address, store unusable from workers)."""


class Runner:
    """Maps a pure partition function over partitions, locally or on Dask workers."""

    def __init__(self, client: Any | None = None) -> None:
        self.client = client

    @property
    def engine(self) -> Engine:
        return "local" if self.client is None else "dask"

    def map(self, fn: Callable[..., R], parts: Sequence[Any], *common: Any) -> list[R]:
        """``[fn(part, *common) for part in parts]``, in order, wherever the engine runs."""
        if self.client is None:
            return [fn(part, *common) for part in parts]
        shared = [self.client.scatter(c, broadcast=True) for c in common]
        futures = [self.client.submit(fn, part, *shared, pure=False) for part in parts]
        return list(self.client.gather(futures))


@contextmanager
def runner(engine: Engine = "local", scheduler: str = LOCAL_SCHEDULER) -> Iterator[Runner]:
    """A :class:`Runner`: local, or Dask on ``scheduler`` ('local' starts a LocalCluster)."""
    if engine == "local":
        yield Runner()
        return
    from distributed import Client, LocalCluster

    if scheduler == LOCAL_SCHEDULER:
        with (
            LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                host="127.0.0.1",
            ) as cluster,
            Client(cluster) as client,  # type: ignore[no-untyped-call]
        ):
            yield Runner(client)
        return
    try:
        client = Client(scheduler, timeout="10s")  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        raise BatchEngineError(f"dask scheduler {scheduler!r} is unreachable: {exc}") from exc
    with client:
        yield Runner(client)


# One open store per worker process and location: a DuckLake attach loads three extensions
# and reads the catalog, which is too slow to repeat per task.
_worker_stores: dict[tuple[str, bool], Store] = {}
_worker_lock = threading.Lock()


def worker_store(location: str, *, read_only: bool) -> Store:
    """The worker process's store for ``location`` (opened once, then reused)."""
    key = (location, read_only)
    with _worker_lock:
        if key not in _worker_stores:
            _worker_stores[key] = Store(location, read_only=read_only)
        return _worker_stores[key]


def shared_location(store: Store) -> StoreLocation | None:
    """The store's location when worker processes can open it themselves (DuckLake)."""
    return parse_location(str(store.location)) if store.multi_process else None
