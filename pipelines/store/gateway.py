"""The one DuckDB gateway: every SQL statement in FieldTrace runs through ``Store``.

Queries are always parameterized (``$1``-style or ``?`` placeholders). Table names, which SQL
cannot bind, are checked against the schema's allowlist before they are spliced in.

Two backends sit behind the same class (see ``pipelines.store.location``):
- ``duckdb``: one embedded file; one writing process at a time.
- ``ducklake``: a DuckLake whose catalog is a PostgreSQL database and whose data are Parquet
  files in a shared directory; any number of processes read and write. Writers keep to
  appends where they can, ``Store.atomic`` retries a commit that lost a conflict (bounded),
  and ``Store.writer_lock`` is a PostgreSQL advisory lock for what must not run twice at once.
"""

from __future__ import annotations

import itertools
import re
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import duckdb_extensions
import polars as pl
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from pipelines.errors import StoreBusyError, StoreError, UnknownTableError
from pipelines.store.location import (
    FileLocation,
    LakeLocation,
    StoreLocation,
    parse_location,
)
from pipelines.store.schema import (
    MIGRATIONS,
    MIGRATIONS_TABLE,
    SORT_KEYS,
    TABLES,
    statements_for,
    without_constraints,
)

T = TypeVar("T")
LAKE_ALIAS = "lake"
# A commit that loses a write-write conflict is retried this many times in all (DuckLake
# already retries catalog-level commit races itself; this covers the ones it gives up on).
COMMIT_ATTEMPTS = 6
# Small commits below this many rows are inlined into the catalog instead of a Parquet file;
# `fieldtrace maintain` flushes them into files in bulk.
INLINE_ROW_LIMIT = 1000
_CONFLICT_MARKERS = (
    "conflict",
    "another transaction",
    "maximum retry count",
    "could not serialize",
)


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is a lost transaction race worth retrying (not a bad statement)."""
    if not isinstance(exc, duckdb.Error):
        return False
    text = str(exc).lower()
    return isinstance(exc, duckdb.TransactionException) or any(m in text for m in _CONFLICT_MARKERS)


_view_counter = itertools.count()
# DuckDB scans classic Arrow strings much faster than polars' string views.
_ARROW_COMPAT = pl.CompatLevel.oldest()


def busy_message(path: Path, duckdb_error: str) -> str:
    """Who holds the store, from DuckDB's lock error ("... (PID 1234) ...") and /proc."""
    pid = re.search(r"PID (\d+)", duckdb_error)
    holder = "another process"
    if pid:
        holder = f"process {pid.group(1)}"
        try:
            argv = Path(f"/proc/{pid.group(1)}/cmdline").read_bytes().split(b"\0")
            shown = " ".join(a.decode(errors="replace") for a in argv if a)[:160]
            holder += f" ({shown})" if shown else ""
        except OSError:
            pass
    return (
        f"store {path} is in use by {holder}; DuckDB allows one writer at a time. Stop that "
        "process (the dashboard holds the store while it runs) or point --store elsewhere"
    )


def _checked_table(table: str) -> str:
    if table not in TABLES:
        raise UnknownTableError(f"table {table!r} is not in the FieldTrace schema")
    return table


_FRAME_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPATIAL_CALL = re.compile(r"\bST_\w+\s*\(", re.IGNORECASE)


class _Extensions:
    """The spatial extension, loaded the first time a statement calls an ``ST_`` function.

    ``LOAD spatial`` costs ~0.2 s and most commands never call it (only the outage and
    alert-polygon containment tests do); loading it once per database serves every cursor.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self._lock = threading.Lock()
        self._spatial = False

    def for_sql(self, sql: str) -> str:
        if not self._spatial and _SPATIAL_CALL.search(sql):
            with self._lock:
                if not self._spatial:
                    _load(self._con, "spatial")
                    self._spatial = True
        return sql


class Tx:
    """A unit of work inside one DuckDB transaction (see ``Store.transaction``)."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, extensions: _Extensions, *, lake: bool = False
    ) -> None:
        self._con = con
        self._ext = extensions
        self._lake = lake

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self._con.execute(self._ext.for_sql(sql), list(params))

    def query(self, sql: str, params: Sequence[object] = ()) -> pl.DataFrame:
        return self._con.execute(self._ext.for_sql(sql), list(params)).pl()

    def scalar(self, sql: str, params: Sequence[object] = ()) -> Any:
        row = self._con.execute(self._ext.for_sql(sql), list(params)).fetchone()
        return None if row is None else row[0]

    def insert_frame(
        self, table: str, frame: pl.DataFrame, constants: Mapping[str, object] | None = None
    ) -> int:
        """Append ``frame`` to ``table`` by column name; returns the row count.

        ``constants`` are columns with one value for every row (a batch id, a source name):
        they are bound as parameters instead of being shipped as Arrow columns.
        """
        if frame.height == 0:
            return 0
        name = _checked_table(table)
        consts = dict(constants or {})
        with self._frame_view(frame) as view:
            cols = ", ".join(f'"{c}"' for c in [*frame.columns, *consts])
            exprs = ", ".join([*(f'"{c}"' for c in frame.columns), *("?" for _ in consts)])
            self._con.execute(
                f"INSERT INTO {name} ({cols}) SELECT {exprs} FROM {view}", list(consts.values())
            )
        return frame.height

    def replace_rows(self, table: str, frame: pl.DataFrame, key: str) -> int:
        """Write ``frame``'s rows to ``table``, each replacing the row with its ``key`` (the
        table's primary key); returns the row count.

        The file: ``INSERT OR REPLACE``. Deleting the rows and inserting them again in one
        transaction would leave the primary-key index with each key deleted and re-added,
        which made the next checkpoint take ~0.4 s for 5,600 verdicts (the upsert: ~0.02 s).
        DuckLake has no primary keys: there the rows are deleted by key, then appended.
        """
        if frame.height == 0:
            return 0
        name = _checked_table(table)
        cols = ", ".join(f'"{c}"' for c in frame.columns)
        with self._frame_view(frame) as view:
            if self._lake:
                keyed = f'"{key}" IN (SELECT "{key}" FROM {view})'
                self._con.execute(f"DELETE FROM {name} WHERE {keyed}")
            verb = "INSERT INTO" if self._lake else "INSERT OR REPLACE INTO"
            self._con.execute(f"{verb} {name} ({cols}) SELECT {cols} FROM {view}")
        return frame.height

    @contextmanager
    def _frame_view(self, frame: pl.DataFrame) -> Iterator[str]:
        """``frame`` visible to this transaction under a fresh view name, for one statement."""
        view = f"_ft_frame_{next(_view_counter)}"
        self._con.register(view, frame.to_arrow(compat_level=_ARROW_COMPAT))
        try:
            yield view
        finally:
            self._con.unregister(view)

    def register(self, name: str, frame: pl.DataFrame) -> None:
        """Expose a frame to SQL in this transaction under a temporary view name."""
        self._con.register(name, frame.to_arrow(compat_level=_ARROW_COMPAT))

    def unregister(self, name: str) -> None:
        self._con.unregister(name)


def _load(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """LOAD an extension, installing it from its PyPI wheel first when needed."""
    try:
        con.execute(f"LOAD {name}")
    except duckdb.Error:
        duckdb_extensions.import_extension(name, con=con)
        con.execute(f"LOAD {name}")


class Store:
    """The FieldTrace store: an embedded DuckDB file or a DuckLake (the spatial extension is
    loaded when a statement first calls an ``ST_`` function).

    ``location`` is a file path or a ``ducklake:postgresql://host:port/db?data=DIR`` string
    (or an already parsed :class:`StoreLocation`).
    """

    def __init__(self, location: Path | str | StoreLocation, *, read_only: bool = False) -> None:
        self.location: StoreLocation = (
            location
            if isinstance(location, FileLocation | LakeLocation)
            else parse_location(location)
        )
        self.backend = self.location.backend
        self.read_only = read_only
        self._locks: dict[str, Any] = {}
        self._readers = threading.local()
        if isinstance(self.location, LakeLocation):
            self.path = self.location.data_path
            self._con = self._open_lake(self.location)
        else:
            self.path = self.location.path
            self._con = self._open_file(self.path)
        self._ext = _Extensions(self._con)
        # GLOBAL: every cursor (one per query) inherits UTC and the loaded extensions.
        self._con.execute("SET GLOBAL TimeZone = 'UTC'")
        self._write_lock = threading.Lock()
        if not read_only:
            self.migrate()

    def _open_file(self, path: Path) -> duckdb.DuckDBPyConnection:
        if not self.read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise StoreError(f"store {path} does not exist; run `fieldtrace ingest` first")
        try:
            con = duckdb.connect(str(path), read_only=self.read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreBusyError(busy_message(path, str(exc))) from exc
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        return con

    def _open_lake(self, lake: LakeLocation) -> duckdb.DuckDBPyConnection:
        from pipelines.store import catalog

        if not self.read_only:
            catalog.ensure_database(lake)
            lake.data_path.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect()
        for name in ("ducklake", "postgres_scanner"):
            _load(con, name)
        options = f"DATA_PATH '{_sql_literal(str(lake.data_path).rstrip('/') + '/')}'"
        if self.read_only:
            options += ", READ_ONLY"
        try:
            con.execute(
                f"ATTACH '{_sql_literal(lake.attach_target())}' AS {LAKE_ALIAS} ({options})"
            )
        except duckdb.Error as exc:
            con.close()
            raise StoreError(f"cannot open store {lake}: {exc}") from exc
        con.execute(f"USE {LAKE_ALIAS}")
        return con

    @property
    def is_lake(self) -> bool:
        return self.backend == "ducklake"

    @property
    def multi_process(self) -> bool:
        """Whether several processes may write this store at once (DuckLake: yes)."""
        return self.is_lake

    # -- reads ---------------------------------------------------------------------------
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self._con.cursor()
        if self.is_lake:  # the default catalog is per connection: point it at the lake
            cur.execute(f"USE {LAKE_ALIAS}")
        return cur

    @contextmanager
    def _reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor for one read. The file: a fresh cursor, closed after. DuckLake: this
        thread's own cursor, kept (a new cursor plus ``USE lake`` costs ~5-50 ms there)."""
        if not self.is_lake:
            cur = self._con.cursor()
            try:
                yield cur
            finally:
                cur.close()
            return
        kept: duckdb.DuckDBPyConnection | None = getattr(self._readers, "cursor", None)
        if kept is None:
            kept = self._cursor()
            self._readers.cursor = kept
        yield kept

    def query(self, sql: str, params: Sequence[object] = ()) -> pl.DataFrame:
        """Run a parameterized query and return a polars frame (thread-safe cursor).

        Every TIMESTAMPTZ comes back as ``Datetime(time_zone="UTC")``: the database's
        TimeZone is UTC for all connections, so callers never convert.
        """
        with self._reader() as cur:
            return cur.execute(self._ext.for_sql(sql), list(params)).pl()

    def query_frames(
        self, sql: str, frames: Mapping[str, pl.DataFrame], params: Sequence[object] = ()
    ) -> pl.DataFrame:
        """Run a query that joins against in-memory frames, visible under the given names.

        The frames reach DuckDB as Parquet files in a private temporary folder, read through
        temporary views, rather than as registered Arrow objects: binding a Python object
        makes DuckDB import pandas (~0.2 s) whatever the object, and these frames are small
        (windows, ids), so a query with no bound value runs with pandas still unimported.
        """
        for name in frames:
            if not _FRAME_NAME.fullmatch(name):
                raise ValueError(f"frame name {name!r} is not a plain SQL identifier")
        with self._reader() as cur, tempfile.TemporaryDirectory(prefix="ft-frames-") as tmp:
            try:
                for name, frame in frames.items():
                    path = Path(tmp) / f"{name}.parquet"
                    frame.write_parquet(path, compression="uncompressed", statistics=False)
                    cur.execute(
                        f"CREATE OR REPLACE TEMP VIEW {name} AS "
                        f"SELECT * FROM read_parquet('{_sql_literal(str(path))}')"
                    )
                return cur.execute(self._ext.for_sql(sql), list(params)).pl()
            finally:
                for name in frames:
                    with suppress(duckdb.Error):
                        cur.execute(f"DROP VIEW IF EXISTS {name}")

    def scalar(self, sql: str, params: Sequence[object] = ()) -> Any:
        with self._reader() as cur:
            row = cur.execute(self._ext.for_sql(sql), list(params)).fetchone()
            return None if row is None else row[0]

    def count(self, table: str) -> int:
        return int(self.scalar(f"SELECT count(*) FROM {_checked_table(table)}"))

    def table_counts(self) -> dict[str, int]:
        return {t: self.count(t) for t in sorted(TABLES)}

    # -- writes --------------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self.atomic(lambda tx: tx.execute(sql, params))

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One atomic unit: everything inside commits together or not at all.

        A commit that loses a race raises; use :meth:`atomic` to have it retried.
        """
        if self.read_only:
            raise StoreError(f"store {self.location} is open read-only")
        with self._write_lock:
            cur = self._cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield Tx(cur, self._ext, lake=self.is_lake)
            except BaseException:
                # a failed statement may have ended the transaction already
                with suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                cur.close()
                raise
            try:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def atomic(self, work: Callable[[Tx], T], *, attempts: int = COMMIT_ATTEMPTS) -> T:
        """Run ``work(tx)`` in one transaction; a commit lost to a concurrent writer is retried.

        ``work`` must be repeatable: it is called again from the start on a retry. At most
        ``attempts`` tries, with jittered exponential waits (0.05-2 s); then the conflict is
        raised as a :class:`StoreError` naming the store.
        """
        retrying = Retrying(
            retry=retry_if_exception(is_conflict),
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=0.05, max=2.0),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt, self.transaction() as tx:
                    result = work(tx)
        except duckdb.Error as exc:
            if is_conflict(exc):
                raise StoreError(
                    f"store {self.location}: commit lost to concurrent writers {attempts} "
                    f"times in a row: {exc}"
                ) from exc
            raise
        return result

    @contextmanager
    def writer_lock(self, name: str) -> Iterator[None]:
        """Hold the named lock across processes (DuckLake) or threads (the embedded file).

        On DuckLake it is a PostgreSQL session advisory lock in the catalog database, so
        ``fieldtrace maintain`` never overlaps itself and ingest of one kind runs its
        check-then-write under one holder. The embedded file admits one writing process, so
        an in-process lock suffices.
        """
        if not isinstance(self.location, LakeLocation):
            lock = self._locks.setdefault(name, threading.RLock())
            with lock:
                yield
            return
        from pipelines.store import catalog

        with catalog.advisory_lock(self.location, lock_key(name)):
            yield

    def try_writer_lock(self, name: str) -> Any:
        """Like :meth:`writer_lock` but never waits: yields False when another holder has it."""
        from pipelines.store import catalog

        if not isinstance(self.location, LakeLocation):
            return _try_thread_lock(self._locks.setdefault(name, threading.RLock()))
        return catalog.advisory_lock(self.location, lock_key(name), wait=False)

    def migrate(self) -> list[int]:
        """Apply pending migrations in order; returns the versions applied.

        On DuckLake the same migrations run without PRIMARY KEY / UNIQUE / CHECK clauses
        (``schema.without_constraints``), one process at a time under an advisory lock.
        """
        with self.writer_lock("migrate"):
            return self._migrate()

    def _migrate(self) -> list[int]:
        table_ddl = MIGRATIONS_TABLE
        if self.is_lake:
            table_ddl = without_constraints(table_ddl)
        cur = self._cursor()
        try:
            cur.execute(table_ddl)
            done = {r[0] for r in cur.execute("SELECT version FROM schema_migrations").fetchall()}
        finally:
            cur.close()
        applied: list[int] = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            with self.transaction() as tx:
                for statement in statements_for(migration, self.backend):
                    tx.execute(statement)
                tx.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (migration.version, migration.description, datetime.now(UTC)),
                )
            applied.append(migration.version)
        if applied and self.is_lake:
            self._con.execute(
                f"CALL {LAKE_ALIAS}.set_option('data_inlining_row_limit', {INLINE_ROW_LIMIT})"
            )
        return applied

    def schema_version(self) -> int:
        return int(self.scalar("SELECT coalesce(max(version), 0) FROM schema_migrations"))

    def optimize(self, tables: Sequence[str] | None = None) -> None:
        """Rewrite tables in their physical sort order so window reads prune row groups.

        On DuckLake a rewrite (delete all, insert all) would make every concurrent append to
        the table fail; there the lake is compacted by ``fieldtrace maintain`` instead.
        """
        if self.is_lake:
            return
        for table in tables or sorted(SORT_KEYS):
            name = _checked_table(table)
            keys = ", ".join(SORT_KEYS[name])
            with self.transaction() as tx:
                tx.execute(f"CREATE TEMP TABLE _ft_sorted AS SELECT * FROM {name} ORDER BY {keys}")
                tx.execute(f"DELETE FROM {name}")
                tx.execute(f"INSERT INTO {name} SELECT * FROM _ft_sorted")
                tx.execute("DROP TABLE _ft_sorted")
        self._con.execute("CHECKPOINT")

    def close(self) -> None:
        self._con.close()

    # -- maintenance (DuckLake) ------------------------------------------------------------
    def maintain(self, *, snapshots_before: datetime, files_before: datetime) -> dict[str, int]:
        """One maintenance pass over the lake; returns Parquet file counts before and after.

        In order: flush inlined rows into files, merge adjacent small files, expire snapshots
        taken before ``snapshots_before``, delete files those snapshots alone needed, then
        delete orphans (files no snapshot knows, e.g. left by a killed writer). Only files
        older than ``files_before`` are deleted: a writer's uncommitted file is an "orphan"
        until its commit, so ``files_before`` must lie before the start of any running write.
        The caller holds ``writer_lock("maintain")``. On the embedded file it does nothing.
        """
        if not self.is_lake:
            return {}
        before = self._data_files()
        steps: tuple[tuple[str, tuple[object, ...]], ...] = (
            (f"CALL ducklake_flush_inlined_data('{LAKE_ALIAS}')", ()),
            (f"CALL ducklake_merge_adjacent_files('{LAKE_ALIAS}')", ()),
            (
                f"CALL ducklake_expire_snapshots('{LAKE_ALIAS}', older_than => ?)",
                (snapshots_before,),
            ),
            (f"CALL ducklake_cleanup_old_files('{LAKE_ALIAS}', older_than => ?)", (files_before,)),
            (
                f"CALL ducklake_delete_orphaned_files('{LAKE_ALIAS}', older_than => ?)",
                (files_before,),
            ),
        )
        for sql, params in steps:
            self._maintenance_call(sql, params)
        return {"files_before": before, "files_after": self._data_files()}

    def _maintenance_call(self, sql: str, params: Sequence[object]) -> None:
        retrying = Retrying(
            retry=retry_if_exception(is_conflict),
            stop=stop_after_attempt(COMMIT_ATTEMPTS),
            wait=wait_random_exponential(multiplier=0.05, max=2.0),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                cur = self._cursor()
                try:
                    cur.execute(sql, list(params)).fetchall()
                finally:
                    cur.close()

    def _data_files(self) -> int:
        return sum(1 for p in Path(self.path).rglob("*.parquet") if p.is_file())

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sql_literal(text: str) -> str:
    """Escape a string for a single-quoted SQL literal (ATTACH takes no parameters)."""
    return text.replace("'", "''")


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a named advisory lock."""
    return zlib.crc32(f"fieldtrace:{name}".encode()) - 2**31


@contextmanager
def _try_thread_lock(lock: Any) -> Iterator[bool]:
    got = lock.acquire(blocking=False)
    try:
        yield got
    finally:
        if got:
            lock.release()
