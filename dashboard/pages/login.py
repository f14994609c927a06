"""The log-in page: plain server-rendered HTML, so it works before any Dash request is allowed."""

from __future__ import annotations

from markupsafe import escape


def render_login(*, next_path: str = "/", error: str | None = None) -> str:
    message = f'<p class="login-error" id="login-error">{escape(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>FieldTrace · log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/assets/fieldtrace.css"></head>
<body class="login-body"><form class="login-card" id="login-form" method="post" action="/login">
<h1 class="brand-dark">FieldTrace</h1><p class="muted">Log in to continue</p>{message}
<input type="hidden" name="next" value="{escape(next_path)}">
<label>User <input id="login-username" name="username" autocomplete="username" required></label>
<label>Password <input id="login-password" name="password" type="password"
 autocomplete="current-password" required></label>
<button id="login-submit" type="submit">Log in</button>
<p class="muted small">Create log-ins with <code>fieldtrace users add NAME --role ROLE</code>
 or <code>fieldtrace users demo</code>.</p></form></body></html>"""
