"""Dashboard users: a TOML file of names, roles and werkzeug password hashes.

File shape (``settings.users_file``)::

    [users.alice]
    role = "dispatcher"
    password_hash = "scrypt:32768:8:1$..."

Roles are ``dispatcher``, ``analyst`` and ``warehouse:<warehouse_id>``.
"""

from __future__ import annotations

import functools
import re
import secrets
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from pipelines.errors import FieldTraceError

ROLE_KINDS: tuple[str, ...] = ("dispatcher", "analyst", "warehouse")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class UsersError(FieldTraceError, ValueError):
    """A users file or a user definition is invalid."""


@dataclass(frozen=True)
class Role:
    """A parsed role: its kind and, for warehouse users, the one warehouse they may see."""

    kind: str
    warehouse_id: str | None = None

    def __str__(self) -> str:
        return f"warehouse:{self.warehouse_id}" if self.kind == "warehouse" else self.kind


def parse_role(text: str) -> Role:
    """``dispatcher`` | ``analyst`` | ``warehouse:<id>`` -> Role; anything else raises."""
    kind, _, rest = text.strip().partition(":")
    if kind in ("dispatcher", "analyst") and not rest:
        return Role(kind)
    if kind == "warehouse" and rest and _NAME.match(rest):
        return Role("warehouse", rest)
    raise UsersError(f"role {text!r} is not one of dispatcher, analyst, warehouse:<warehouse_id>")


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsersError(f"user name {name!r} must match {_NAME.pattern}")
    return name


def load_users(path: Path) -> dict[str, User]:
    """All users of ``path`` (an absent file means no users)."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsersError(f"{path}: not valid TOML: {exc}") from exc
    users: dict[str, User] = {}
    for name, entry in (data.get("users") or {}).items():
        if not isinstance(entry, dict) or "role" not in entry or "password_hash" not in entry:
            raise UsersError(f"{path}: [users.{name}] needs role and password_hash")
        users[name] = User(
            _check_name(name), parse_role(str(entry["role"])), str(entry["password_hash"])
        )
    return users


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def save_users(path: Path, users: dict[str, User]) -> None:
    """Write ``users`` atomically (temp file + rename), readable only by the owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# FieldTrace dashboard users (hashed passwords). Edit with `fieldtrace users`."]
    for name in sorted(users):
        user = users[name]
        lines += [
            "",
            f"[users.{name}]",
            f"role = {_toml_str(str(user.role))}",
            f"password_hash = {_toml_str(user.password_hash)}",
        ]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def add_user(path: Path, name: str, role: str, password: str | None = None) -> tuple[User, str]:
    """Add or replace a user; returns the user and the (possibly generated) password."""
    password = password or secrets.token_urlsafe(12)
    users = load_users(path)
    user = User(_check_name(name), parse_role(role), generate_password_hash(password))
    users[name] = user
    save_users(path, users)
    return user, password


PasswordCheck = Callable[[str, str], bool]


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password, made like real ones, checked for unknown names."""
    return generate_password_hash(secrets.token_urlsafe(16))


def authenticate(
    users: dict[str, User],
    name: str,
    password: str,
    *,
    check: PasswordCheck = check_password_hash,
) -> User | None:
    """The user when ``password`` matches, else None (also for unknown names).

    An unknown name is checked against a dummy hash of the same kind, so known and unknown
    names cost one password check each and take the same time.
    """
    user = users.get(name)
    matched = check(user.password_hash if user else _dummy_hash(), password)
    return user if user is not None and matched else None
