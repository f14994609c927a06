"""Where a store lives: one embedded DuckDB file, or a DuckLake (catalog in PostgreSQL, data in
a directory every process can reach).

The textual form, accepted by ``--store`` and the ``store_url`` setting::

    data/fieldtrace.duckdb                                            (a file: the default)
    ducklake:postgresql://[user@]host[:port]/catalog_db?data=/srv/fieldtrace/lake

Parsing is pure: nothing here opens a file or a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pipelines.errors import StoreError

LAKE_PREFIX = "ducklake:"
_PG_SCHEMES = ("postgresql", "postgres")


class StoreLocationError(StoreError, ValueError):
    """A store location string cannot be understood."""


@dataclass(frozen=True)
class FileLocation:
    """The embedded DuckDB file: one writing process at a time."""

    path: Path

    @property
    def backend(self) -> str:
        return "duckdb"

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class LakeLocation:
    """A DuckLake: the catalog is a PostgreSQL database, table data are Parquet files."""

    host: str
    port: int
    dbname: str
    user: str | None
    data_path: Path

    @property
    def backend(self) -> str:
        return "ducklake"

    def libpq(self, dbname: str | None = None) -> str:
        """A libpq connection string (``key=value`` pairs) for the catalog database."""
        parts = [f"dbname={dbname or self.dbname}", f"host={self.host}", f"port={self.port}"]
        if self.user:
            parts.append(f"user={self.user}")
        return " ".join(parts)

    def attach_target(self) -> str:
        """What DuckDB's ``ATTACH`` takes: ``ducklake:postgres:<libpq>``."""
        return f"ducklake:postgres:{self.libpq()}"

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return (
            f"{LAKE_PREFIX}postgresql://{user}{self.host}:{self.port}/{self.dbname}"
            f"?data={self.data_path}"
        )


StoreLocation = FileLocation | LakeLocation


def parse_location(text: str | Path) -> StoreLocation:
    """A path is a :class:`FileLocation`; ``ducklake:postgresql://...`` a :class:`LakeLocation`."""
    if isinstance(text, Path) or not str(text).startswith(LAKE_PREFIX):
        return FileLocation(Path(text))
    raw = str(text)
    url = urlsplit(raw[len(LAKE_PREFIX) :])
    where = f"store location {raw!r}"
    if url.scheme not in _PG_SCHEMES:
        raise StoreLocationError(
            f"{where}: scheme={url.scheme!r}; expected ducklake:postgresql://host:port/db?data=DIR"
        )
    dbname = unquote(url.path.lstrip("/"))
    if not dbname or "/" in dbname:
        raise StoreLocationError(
            f"{where}: database={dbname!r}; expected one catalog database name"
        )
    if url.password:
        raise StoreLocationError(
            f"{where}: a password in the URL is refused; use PGPASSWORD or ~/.pgpass"
        )
    query = parse_qs(url.query)
    unknown = sorted(set(query) - {"data"})
    if unknown:
        raise StoreLocationError(f"{where}: unknown parameter(s) {unknown}; only 'data' is known")
    data = query.get("data", [""])[-1]
    if not data:
        raise StoreLocationError(
            f"{where}: data=<missing>; expected ?data=DIR, the Parquet directory every process "
            "can reach"
        )
    try:
        port = url.port or 5432
    except ValueError as exc:
        raise StoreLocationError(f"{where}: port is not a number") from exc
    return LakeLocation(
        host=url.hostname or "127.0.0.1",
        port=port,
        dbname=dbname,
        user=unquote(url.username) if url.username else None,
        data_path=Path(data),
    )
