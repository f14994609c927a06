"""The app factory: layout per request (menu filtered by role), router, auth and page callbacks."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from dash import Dash, Input, Output, State, dcc, html, set_props
from werkzeug.exceptions import HTTPException

from dashboard import ids
from dashboard.auth import ALL_ROLES, current_principal, guard, install_auth, is_guarded
from dashboard.context import AppContext
from dashboard.pages import Page, load_pages
from pipelines.errors import FieldTraceError
from pipelines.settings import Settings, load_settings

log = logging.getLogger(__name__)


def _shell(pages: list[Page]) -> html.Div:
    principal = current_principal()
    links = [
        dcc.Link(p.name, href=p.path, className="nav-link", id=f"nav-{p.name.lower()}")
        for p in pages
        if p.in_menu and principal is not None and principal.may(p.roles)
    ]
    badge: list[Any] = []
    if principal is not None:
        badge = [html.Span(principal.label, className="user-label")]
        if principal.kind != "open":
            badge.append(html.A("Log out", href="/logout", className="nav-link"))
    return html.Div(
        [
            dcc.Location(id=ids.URL, refresh="callback-nav"),
            html.Header(
                [
                    html.Span("FieldTrace", className="brand"),
                    html.Nav(links, id=ids.NAV),
                    html.Div(badge, id=ids.USER_BADGE, className="user-badge"),
                ],
                className="topbar",
            ),
            html.Div(id=ids.ERROR_BANNER, className="error-banner", hidden=True, role="alert"),
            html.Main(id=ids.PAGE, className="page"),
        ]
    )


def _guard_page_callbacks(app: Dash, page: Page, before: set[str]) -> None:
    """Safety net: wrap any callback a page registered without ``guard`` in the page's roles."""
    for key in set(app.callback_map) - before:
        entry = app.callback_map[key]
        if "callback" not in entry:
            continue  # clientside: runs in the browser, no server function to guard
        if not is_guarded(entry["callback"]):
            log.warning(
                "callback %s of page %s had no guard; guarding with %s",
                key,
                page.path,
                sorted(page.roles),
            )
            entry["callback"] = guard(page.roles)(entry["callback"])


def callback_error(exc: Exception) -> None:
    """Dash's global callback error handler: no callback ever answers 500 or shows a traceback.

    HTTP errors (the guard's 401/403) pass through. A FieldTrace error is a message for the user
    (bad input, unknown id); anything else is logged here with its traceback and an error id,
    and the user sees only the id. The outputs are left as they were."""
    if isinstance(exc, HTTPException):
        raise exc
    if isinstance(exc, FieldTraceError):
        message = str(exc)
        log.info("callback refused input: %s", exc)
    else:
        error_id = uuid.uuid4().hex[:8]
        log.exception("callback failed (error id %s)", error_id)
        message = f"That view could not be built from this input (error id {error_id})."
    set_props(ids.ERROR_BANNER, {"children": message, "hidden": False})


def create_app(settings: Settings | None = None) -> Dash:
    """Build a fresh Dash app over the store named in ``settings``."""
    settings = settings or load_settings()
    ctx = AppContext(settings)
    app = Dash(
        __name__,
        title="FieldTrace",
        suppress_callback_exceptions=True,
        update_title="FieldTrace · loading…",
        on_error=callback_error,
    )
    install_auth(app, settings)
    pages = load_pages()
    app.layout = lambda: _shell(pages)
    by_path = {p.path: p for p in pages}

    @app.callback(
        Output(ids.PAGE, "children"), Input(ids.URL, "pathname"), State(ids.URL, "search")
    )
    @guard(ALL_ROLES)
    def route(pathname: str | None, search: str | None) -> Any:
        set_props(ids.ERROR_BANNER, {"hidden": True})
        page = by_path.get(pathname or "/") or by_path.get("/")
        if page is None:
            return html.Div("Not found", className="empty")
        principal = current_principal()
        if principal is None or not principal.may(page.roles):
            return html.Div(
                f"Your role may not open {page.name}.", className="empty", id="forbidden"
            )
        return page.layout(search=search or "")

    for page in pages:
        before = set(app.callback_map)
        page.register(app, ctx)
        _guard_page_callbacks(app, page, before)
    app.server.config["FIELDTRACE_CONTEXT"] = ctx
    return app
