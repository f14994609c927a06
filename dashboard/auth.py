"""Log-in, sessions and the server-side role guard of every callback.

- ``install_auth(app, settings)`` adds ``/login`` and ``/logout`` and a ``before_request`` gate:
  without a session, page requests are redirected to the log-in page and Dash's JSON endpoints
  (``/_dash-layout``, ``/_dash-dependencies``, ``/_dash-update-component``) answer 401.
- The session is Flask's signed cookie, signed with ``pipelines.credentials.session_key``
  (``settings.secret_key`` or a random key kept in the data directory; never a published one).
  It holds only a random session id; ``pipelines.sessions.AuthState`` says whether that id is
  live and whose it is, so log-out ends the session on the server and an old cookie is dead.
  The role is re-read from ``settings.users_file`` on every request, so a removed user or a
  changed role takes effect at once.
- Log-in: unknown and known names cost one password check each (same time); failed log-ins
  are counted per name and per address and locked out with a doubling wait (429); ``next``
  redirects only to same-site relative paths.
- ``guard(roles)`` wraps every callback: it aborts with 401/403 unless the current principal
  has one of ``roles``. The menu hides pages too, but the guard is what enforces access.
- Warehouse users are scoped by ``Principal.warehouse_id`` on the server; callbacks pass it to
  the view functions, never a value taken from the browser.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import flask
from dash import Dash
from werkzeug.exceptions import Forbidden, Unauthorized

from dashboard.pages.login import render_login
from pipelines.credentials import session_key
from pipelines.sessions import AUTH_STATE_FILE, AuthState
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
_SESSION_KEY = "ft_sid"
_MAX_NEXT_CHARS = 2048


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
    if "ft_principal" not in flask.g:  # one session look-up per request
        flask.g.ft_principal = _lookup_principal()
    principal: Principal | None = flask.g.ft_principal
    return principal


def auth_state() -> AuthState:
    """The app's server-side session and lock-out state."""
    state: AuthState = flask.current_app.config["FIELDTRACE_AUTH_STATE"]
    return state


def _lookup_principal() -> Principal | None:
    sid = flask.session.get(_SESSION_KEY)
    if not isinstance(sid, str):
        return None
    name = auth_state().session_user(sid)
    if name is None:
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
    """Only same-site relative paths, else ``/`` (no open redirect).

    Browsers drop tabs and newlines from URLs and read ``\\`` as ``/``, so ``/<TAB>/evil`` and
    ``/\\evil`` would become ``//evil`` (another site): any control, space or separator
    character and any backslash is refused, then the path must start with exactly one ``/``
    and carry no scheme or host.
    """
    if not target or len(target) > _MAX_NEXT_CHARS or "\\" in target:
        return "/"
    if any(unicodedata.category(c)[0] in "CZ" for c in target):
        return "/"
    if not target.startswith("/") or target.startswith("//"):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _client_address() -> str:
    return flask.request.remote_addr or "unknown"


def install_auth(app: Dash, settings: Settings) -> None:
    """Wire sessions, the log-in routes and the request gate into ``app.server``."""
    server = app.server
    server.secret_key = session_key(settings)
    server.config.update(
        FIELDTRACE_SETTINGS=settings,
        FIELDTRACE_USERS=_UserDirectory(settings.users_file),
        FIELDTRACE_AUTH_STATE=AuthState(settings.data_dir / AUTH_STATE_FILE),
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
        name = flask.request.form.get("username", "")
        address = _client_address()
        state = auth_state()
        wait_s = state.locked_for(name, address)
        if wait_s > 0:
            return _locked(next_path, wait_s)
        directory: _UserDirectory = server.config["FIELDTRACE_USERS"]
        user = authenticate(directory.users(), name, flask.request.form.get("password", ""))
        if user is None:
            state.record_failure(name, address)
            return render_login(next_path=next_path, error="Unknown user or wrong password"), 401
        state.record_success(name)
        old = flask.session.get(_SESSION_KEY)
        if isinstance(old, str):
            state.revoke(old)
        flask.session.clear()
        flask.session[_SESSION_KEY] = state.open_session(user.name)
        return flask.redirect(next_path)

    @server.route("/logout")  # type: ignore[untyped-decorator]
    def _logout() -> Any:
        sid = flask.session.get(_SESSION_KEY)
        if isinstance(sid, str):
            auth_state().revoke(sid)
        flask.session.clear()
        return flask.redirect("/login")


def _locked(next_path: str, wait_s: float) -> Any:
    seconds = max(1, math.ceil(wait_s))
    error = f"Too many failed log-ins; try again in {seconds} s"
    response = flask.make_response(render_login(next_path=next_path, error=error), 429)
    response.headers["Retry-After"] = str(seconds)
    return response
