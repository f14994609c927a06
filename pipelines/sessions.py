"""Server-side log-in state: live sessions and failed log-in counters, shared by every worker.

The dashboard's cookie carries only a random session id; ``AuthState`` says whether that id is
live. Log-out revokes it here, so a copied cookie stops working at once. Failed log-ins are
counted per user name and per client address; past a free allowance each further failure
locks that name (or address) for a doubling time (``LoginPolicy``). Unknown names are counted
like known ones, so the lock-out reveals nothing about which names exist.

Multi-process: the state is one SQLite file in the data directory (WAL mode, short
transactions), separate from the DuckDB store because dashboard workers open the store
read-only (docs/SERVING.md) while every worker must record log-ins. All workers of a
deployment must share the data directory. Time comes from ``clock`` so tests need no sleeps.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pipelines.errors import FieldTraceError

AUTH_STATE_FILE: Final = "auth_state.sqlite3"
USER: Final = "user"
ADDRESS: Final = "address"
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS sessions (sid TEXT PRIMARY KEY, user_name TEXT NOT NULL, "
    "created REAL NOT NULL, last_seen REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS login_failures (scope TEXT NOT NULL, subject TEXT NOT NULL, "
    "failures INTEGER NOT NULL, locked_until REAL NOT NULL, PRIMARY KEY (scope, subject))",
)


def _digest(sid: str) -> str:
    """Only a hash of the session id is stored: the file alone opens no session."""
    return hashlib.sha256(sid.encode()).hexdigest()


class AuthStateError(FieldTraceError, RuntimeError):
    """The log-in state file cannot be used."""


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """Lock-out and session lifetime, in seconds."""

    free_failures_per_user: int = 5
    free_failures_per_address: int = 20
    base_lock_s: float = 1.0
    max_lock_s: float = 900.0
    idle_timeout_s: float = 12 * 3600.0
    absolute_timeout_s: float = 7 * 24 * 3600.0

    def lock_s(self, failures: int, free: int) -> float:
        """Lock after failure number ``failures``: none within ``free``, then 1, 2, 4 ... s."""
        if failures <= free:
            return 0.0
        return min(self.max_lock_s, self.base_lock_s * 2.0 ** min(failures - free - 1, 30))


class AuthState:
    """Sessions and log-in throttling in ``path`` (created 0600 on first use)."""

    def __init__(
        self,
        path: Path,
        *,
        policy: LoginPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.policy = policy or LoginPolicy()
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        try:
            con = sqlite3.connect(path, timeout=10, isolation_level=None)
            try:
                con.execute("PRAGMA journal_mode=WAL")  # not allowed inside a transaction
            finally:
                con.close()
            with self._db() as db:
                for statement in _SCHEMA:
                    db.execute(statement)
        except sqlite3.Error as exc:
            raise AuthStateError(f"log-in state {path}: {exc}") from exc

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            yield con
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    # sessions -------------------------------------------------------------------------------

    def open_session(self, user_name: str) -> str:
        """A new random session id for ``user_name``."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        with self._db() as db:
            db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?)", (_digest(sid), user_name, now, now)
            )
        return sid

    def session_user(self, sid: str) -> str | None:
        """The user of a live session (and it is touched), or None when revoked or expired."""
        now = self.clock()
        with self._db() as db:
            row = db.execute(
                "SELECT user_name, created, last_seen FROM sessions WHERE sid = ?", (_digest(sid),)
            ).fetchone()
            if row is None:
                return None
            name, created, last_seen = row
            if (
                now - last_seen > self.policy.idle_timeout_s
                or now - created > self.policy.absolute_timeout_s
            ):
                db.execute("DELETE FROM sessions WHERE sid = ?", (_digest(sid),))
                return None
            db.execute("UPDATE sessions SET last_seen = ? WHERE sid = ?", (now, _digest(sid)))
        return str(name)

    def revoke(self, sid: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE sid = ?", (_digest(sid),))

    def revoke_user(self, user_name: str) -> int:
        """End every session of ``user_name`` (e.g. after a password change); returns how many."""
        with self._db() as db:
            return db.execute("DELETE FROM sessions WHERE user_name = ?", (user_name,)).rowcount

    # throttling -----------------------------------------------------------------------------

    def locked_for(self, user_name: str, address: str) -> float:
        """Seconds until a log-in of ``user_name`` from ``address`` may be tried (0: now)."""
        now = self.clock()
        with self._db() as db:
            rows = db.execute(
                "SELECT locked_until FROM login_failures WHERE (scope = ? AND subject = ?) "
                "OR (scope = ? AND subject = ?)",
                (USER, user_name, ADDRESS, address),
            ).fetchall()
        return max([0.0, *(until - now for (until,) in rows)])

    def record_failure(self, user_name: str, address: str) -> float:
        """Count a failed log-in for the name and the address; returns the lock now in force."""
        now = self.clock()
        policy = self.policy
        frees = {USER: policy.free_failures_per_user, ADDRESS: policy.free_failures_per_address}
        lock = 0.0
        with self._db() as db:
            for scope, subject in ((USER, user_name), (ADDRESS, address)):
                row = db.execute(
                    "SELECT failures FROM login_failures WHERE scope = ? AND subject = ?",
                    (scope, subject),
                ).fetchone()
                failures = (row[0] if row else 0) + 1
                wait = self.policy.lock_s(failures, frees[scope])
                db.execute(
                    "INSERT INTO login_failures VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (scope, subject) DO UPDATE SET "
                    "failures = excluded.failures, locked_until = excluded.locked_until",
                    (scope, subject, failures, now + wait),
                )
                lock = max(lock, wait)
        return lock

    def record_success(self, user_name: str) -> None:
        """A correct password clears the name's counter (the address keeps its count, so one
        valid account cannot be used to reset the guessing of others)."""
        with self._db() as db:
            db.execute(
                "DELETE FROM login_failures WHERE scope = ? AND subject = ?", (USER, user_name)
            )
