"""The app factory."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, dcc, html

from dashboard import ids
from dashboard.context import AppContext
from dashboard.pages import load_pages
from pipelines.settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> Dash:
    """Build a fresh Dash app over the store named in ``settings``."""
    ctx = AppContext(settings or load_settings())
    app = Dash(__name__, title="FieldTrace", suppress_callback_exceptions=True,
               update_title="FieldTrace · loading…")
    pages = load_pages()
    app.layout = html.Div(
        [
            dcc.Location(id=ids.URL, refresh=False),
            html.Header(
                [
                    html.Span("FieldTrace", className="brand"),
                    html.Nav(
                        [dcc.Link(p.name, href=p.path, className="nav-link") for p in pages
                         if p.in_menu],
                        id=ids.NAV,
                    ),
                ],
                className="topbar",
            ),
            html.Main(id=ids.PAGE, className="page"),
        ]
    )
    by_path = {p.path: p for p in pages}

    @app.callback(Output(ids.PAGE, "children"), Input(ids.URL, "pathname"),
                  Input(ids.URL, "search"))
    def route(pathname: str | None, search: str | None) -> Any:
        page = by_path.get(pathname or "/") or by_path.get("/")
        if page is None:
            return html.Div("Not found", className="empty")
        return page.layout(search=search or "")

    for page in pages:
        page.register(app, ctx)
    app.server.config["FIELDTRACE_CONTEXT"] = ctx
    return app
