"""Log-in, sessions and the server-side role guard of every callback.

- ``install_auth(app, settings)`` adds ``/login`` and ``/logout`` and a ``before_request`` gate:
  without a session, page requests are redirected to the log-in page and Dash's JSON endpoints
  (``/_dash-layout``, ``/_dash-dependencies``, ``/_dash-update-component``) answer 401.
- The session is Flask's signed cookie (``settings.secret_key``); it holds only the user name.
  The role is re-read from ``settings.users_file`` on every request, so a removed user or a
  changed role takes effect at once.
- ``guard(roles)`` wraps every callback: it aborts with 401/403 unless the current principal
  has one of ``roles``. The menu hides pages too, but the guard is what enforces access.
- Warehouse users are scoped by ``Principal.warehouse_id`` on the server; callbacks pass it to
  the view functions, never a value taken from the browser.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import flask
from dash import Dash
from werkzeug.exceptions import Forbidden, Unauthorized

from dashboard.pages.login import render_login
from pipelines.settings import Settings
from pipelines.users import User, authenticate, load_users

F = TypeVar("F", bound=Callable[..., Any])
ALL_ROLES = frozenset({"dispatcher", "analyst", "warehouse"})
GUARD_ATTR = "__fieldtrace_roles__"
_PUBLIC_PREFIXES = (
    "/login",
    "/logout",
    "/assets/",
    "/_dash-component-suites/",
    "/favicon.ico",
    "/_favicon.ico",
)
_SESSION_KEY = "ft_user"


@dataclass(frozen=True)
class Principal:
    """Who is asking: name, role kind and, for warehouse users, their one warehouse."""

    name: str
    kind: str
    warehouse_id: str | None = None

    def may(self, roles: Iterable[str]) -> bool:
        return self.kind == "open" or self.kind in set(roles)

    @property
    def masks_personal_data(self) -> bool:
        """Warehouse staff never see customer names or addresses."""
        return self.kind == "warehouse"

    @property
    def label(self) -> str:
        return f"{self.name} · {self.kind}" + (f":{self.warehouse_id}" if self.warehouse_id else "")


OPEN_PRINCIPAL = Principal("local", "open")


class _UserDirectory:
    """The users file, re-read when its modification time changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: float | None = None
        self._users: dict[str, User] = {}

    def users(self) -> dict[str, User]:
        stamp = self.path.stat().st_mtime if self.path.exists() else None
        if stamp != self._stamp:
            self._users, self._stamp = load_users(self.path), stamp
        return self._users


def _settings() -> Settings:
    settings: Settings = flask.current_app.config["FIELDTRACE_SETTINGS"]
    return settings


def current_settings() -> Settings:
    """The app's settings inside a request (layouts use it for refresh intervals)."""
    return _settings()


def current_principal() -> Principal | None:
    """The principal of the current request, or None when nobody is logged in."""
    if not flask.has_request_context():
        return None
    if _settings().auth_mode == "open":
        return OPEN_PRINCIPAL
    name = flask.session.get(_SESSION_KEY)
    if not isinstance(name, str):
        return None
    directory: _UserDirectory = flask.current_app.config["FIELDTRACE_USERS"]
    user = directory.users().get(name)
    if user is None:
        return None
    return Principal(user.name, user.role.kind, user.role.warehouse_id)


def require_principal() -> Principal:
    """The current principal; aborts 401 when there is none (use inside guarded callbacks)."""
    principal = current_principal()
    if principal is None:
        raise Unauthorized("log in first")
    return principal


def guard(roles: Iterable[str]) -> Callable[[F], F]:
    """Decorator for callbacks: 401 without a session, 403 without one of ``roles``."""
    allowed = frozenset(roles)

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = require_principal()
            if not principal.may(allowed):
                raise Forbidden(f"role {principal.kind!r} may not use this view")
            return fn(*args, **kwargs)

        setattr(wrapper, GUARD_ATTR, allowed)
        return wrapper  # type: ignore[return-value]

    return decorate


def is_guarded(fn: Callable[..., Any]) -> bool:
    return getattr(fn, GUARD_ATTR, None) is not None


def _safe_next(target: str | None) -> str:
    """Only same-site paths: no scheme, no ``//host`` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def install_auth(app: Dash, settings: Settings) -> None:
    """Wire sessions, the log-in routes and the request gate into ``app.server``."""
    server = app.server
    server.secret_key = settings.secret_key or secrets.token_hex(32)
    server.config.update(
        FIELDTRACE_SETTINGS=settings,
        FIELDTRACE_USERS=_UserDirectory(settings.users_file),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )

    @server.before_request  # type: ignore[untyped-decorator]
    def _gate() -> Any:
        if settings.auth_mode == "open":
            return None
        path = flask.request.path
        if path.startswith(_PUBLIC_PREFIXES) or current_principal() is not None:
            return None
        if path.startswith("/_") or flask.request.method != "GET":
            return flask.jsonify(error="log in first"), 401
        return flask.redirect("/login?next=" + quote(flask.request.full_path.rstrip("?")))

    @server.route("/login", methods=["GET", "POST"])  # type: ignore[untyped-decorator]
    def _login() -> Any:
        next_path = _safe_next(flask.request.values.get("next"))
        if flask.request.method == "GET":
            return render_login(next_path=next_path)
        directory: _UserDirectory = server.config["FIELDTRACE_USERS"]
        user = authenticate(
            directory.users(),
            flask.request.form.get("username", ""),
            flask.request.form.get("password", ""),
        )
        if user is None:
            return render_login(next_path=next_path, error="Unknown user or wrong password"), 401
        flask.session.clear()
        flask.session[_SESSION_KEY] = user.name
        return flask.redirect(next_path)

    @server.route("/logout")  # type: ignore[untyped-decorator]
    def _logout() -> Any:
        flask.session.clear()
        return flask.redirect("/login")
