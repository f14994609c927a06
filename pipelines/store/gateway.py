"""The one DuckDB gateway: every SQL statement in FieldTrace runs through ``Store``.

Queries are always parameterized (``$1``-style or ``?`` placeholders). Table names, which SQL
cannot bind, are checked against the schema's allowlist before they are spliced in.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import duckdb_extensions
import polars as pl

from pipelines.errors import StoreBusyError, StoreError, UnknownTableError
from pipelines.store.schema import MIGRATIONS, SORT_KEYS, TABLES

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


class Tx:
    """A unit of work inside one DuckDB transaction (see ``Store.transaction``)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self._con.execute(sql, list(params))

    def query(self, sql: str, params: Sequence[object] = ()) -> pl.DataFrame:
        return self._con.execute(sql, list(params)).pl()

    def scalar(self, sql: str, params: Sequence[object] = ()) -> Any:
        row = self._con.execute(sql, list(params)).fetchone()
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
        view = f"_ft_frame_{next(_view_counter)}"
        consts = dict(constants or {})
        self._con.register(view, frame.to_arrow(compat_level=_ARROW_COMPAT))
        try:
            cols = ", ".join(f'"{c}"' for c in [*frame.columns, *consts])
            exprs = ", ".join([*(f'"{c}"' for c in frame.columns), *("?" for _ in consts)])
            self._con.execute(
                f"INSERT INTO {name} ({cols}) SELECT {exprs} FROM {view}", list(consts.values())
            )
        finally:
            self._con.unregister(view)
        return frame.height

    def register(self, name: str, frame: pl.DataFrame) -> None:
        """Expose a frame to SQL in this transaction under a temporary view name."""
        self._con.register(name, frame.to_arrow(compat_level=_ARROW_COMPAT))

    def unregister(self, name: str) -> None:
        self._con.unregister(name)


class Store:
    """The FieldTrace store: one embedded DuckDB file with the spatial extension loaded."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise StoreError(f"store {self.path} does not exist; run `fieldtrace ingest` first")
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreBusyError(busy_message(self.path, str(exc))) from exc
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        self._load_spatial()
        # GLOBAL: every cursor (one per query) inherits UTC and the loaded extension.
        self._con.execute("SET GLOBAL TimeZone = 'UTC'")
        self._write_lock = threading.Lock()
        if not read_only:
            self.migrate()

    def _load_spatial(self) -> None:
        try:
            self._con.execute("LOAD spatial")
        except duckdb.Error:
            duckdb_extensions.import_extension("spatial", con=self._con)
            self._con.execute("LOAD spatial")

    # -- reads ---------------------------------------------------------------------------
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        return self._con.cursor()

    def query(self, sql: str, params: Sequence[object] = ()) -> pl.DataFrame:
        """Run a parameterized query and return a polars frame (thread-safe cursor).

        Every TIMESTAMPTZ comes back as ``Datetime(time_zone="UTC")``: the database's
        TimeZone is UTC for all connections, so callers never convert.
        """
        cur = self._cursor()
        try:
            return cur.execute(sql, list(params)).pl()
        finally:
            cur.close()

    def query_frames(
        self, sql: str, frames: Mapping[str, pl.DataFrame], params: Sequence[object] = ()
    ) -> pl.DataFrame:
        """Run a query that joins against in-memory frames, visible under the given names."""
        cur = self._cursor()
        try:
            for name, frame in frames.items():
                cur.register(name, frame.to_arrow(compat_level=_ARROW_COMPAT))
            return cur.execute(sql, list(params)).pl()
        finally:
            cur.close()

    def scalar(self, sql: str, params: Sequence[object] = ()) -> Any:
        cur = self._cursor()
        try:
            row = cur.execute(sql, list(params)).fetchone()
            return None if row is None else row[0]
        finally:
            cur.close()

    def count(self, table: str) -> int:
        return int(self.scalar(f"SELECT count(*) FROM {_checked_table(table)}"))

    def table_counts(self) -> dict[str, int]:
        return {t: self.count(t) for t in sorted(TABLES)}

    # -- writes --------------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        with self.transaction() as tx:
            tx.execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One atomic unit: everything inside commits together or not at all."""
        if self.read_only:
            raise StoreError(f"store {self.path} is open read-only")
        with self._write_lock:
            cur = self._con.cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield Tx(cur)
            except BaseException:
                cur.execute("ROLLBACK")
                cur.close()
                raise
            cur.execute("COMMIT")
            cur.close()

    def migrate(self) -> list[int]:
        """Apply pending migrations in order; returns the versions applied."""
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMPTZ)"
        )
        done = {r[0] for r in self._con.execute("SELECT version FROM schema_migrations").fetchall()}
        applied: list[int] = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            with self.transaction() as tx:
                for statement in migration.statements:
                    tx.execute(statement)
                tx.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (migration.version, migration.description, datetime.now(UTC)),
                )
            applied.append(migration.version)
        return applied

    def schema_version(self) -> int:
        return int(self.scalar("SELECT coalesce(max(version), 0) FROM schema_migrations"))

    def optimize(self, tables: Sequence[str] | None = None) -> None:
        """Rewrite tables in their physical sort order so window reads prune row groups."""
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

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
