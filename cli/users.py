"""``fieldtrace users ...``: manage dashboard log-ins (mounted by the main CLI)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli import common
from pipelines.settings import Settings
from pipelines.store.location import FileLocation, StoreLocation

# pipelines.users and pipelines.sessions (password hashing, werkzeug) are imported inside
# the commands, so other ``fieldtrace`` commands do not pay for them at start-up.

users_app = typer.Typer(name="users", help="Dashboard users and roles.", no_args_is_help=True)
_out = Console()

DEMO_USERS: tuple[tuple[str, str], ...] = (
    ("dispatch", "dispatcher"),
    ("analyst", "analyst"),
    ("warehouse", "warehouse:WH-1"),
)


def _settings() -> Settings:
    return common.settings()


def _first_warehouse(location: StoreLocation) -> str:
    """The store's first warehouse id, so the demo warehouse user sees real orders."""
    from pipelines.errors import StoreError
    from pipelines.store.gateway import Store

    if isinstance(location, FileLocation) and not location.path.exists():
        return "WH-1"
    try:
        with Store(location, read_only=True) as store:
            found = store.scalar("SELECT min(warehouse_id) FROM warehouses")
    except StoreError:
        return "WH-1"
    return str(found) if found else "WH-1"


@users_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Log-in name.")],
    role: Annotated[str, typer.Option("--role", help="dispatcher | analyst | warehouse:<id>")],
    password: Annotated[
        str | None, typer.Option("--password", help="Generated and printed when omitted.")
    ] = None,
) -> None:
    """Add (or replace) a user; a replaced user's open sessions end at once."""
    from pipelines.sessions import AUTH_STATE_FILE, AuthState
    from pipelines.users import UsersError, add_user

    s = _settings()
    try:
        user, pw = add_user(s.users_file, name, role, password)
    except UsersError as exc:
        raise typer.BadParameter(str(exc)) from exc
    ended = AuthState(s.data_dir / AUTH_STATE_FILE).revoke_user(user.name)
    shown = pw if password is None else "(as given)"
    _out.print(
        f"user {user.name} role {user.role} password {shown} -> {s.users_file}"
        + (f" ({ended} open session(s) ended)" if ended else "")
    )


@users_app.command("list")
def list_users() -> None:
    """List users and roles (never the hashes)."""
    from pipelines.users import load_users

    s = _settings()
    table = Table(title=str(s.users_file))
    table.add_column("user")
    table.add_column("role")
    for user in load_users(s.users_file).values():
        table.add_row(user.name, str(user.role))
    _out.print(table)


@users_app.command("demo")
def demo(
    warehouse: Annotated[
        str | None, typer.Option(help="Warehouse id for the warehouse user.")
    ] = None,
) -> None:
    """Create one demo user per role and print their log-ins."""
    from pipelines.users import add_user

    s = _settings()
    warehouse = warehouse or _first_warehouse(s.store_location)
    table = Table(title=f"demo log-ins ({s.users_file})")
    for col in ("user", "password", "role"):
        table.add_column(col)
    for name, role in DEMO_USERS:
        if warehouse and role.startswith("warehouse:"):
            role = f"warehouse:{warehouse}"
        user, pw = add_user(s.users_file, name, role, None)
        table.add_row(user.name, pw, str(user.role))
    _out.print(table)
