"""Log-in hardening (issue 10): no published key, safe redirects, server-side log-out,
lock-out per name and address, and the same password work for known and unknown names."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask.sessions import SecureCookieSessionInterface

from dashboard import create_app
from pipelines.credentials import SESSION_KEY_FILE, CredentialsError, session_key
from pipelines.errors import SettingsError
from pipelines.sessions import AUTH_STATE_FILE, AuthState, LoginPolicy
from pipelines.settings import Settings
from pipelines.users import add_user, authenticate, load_users
from tests.dashboard.conftest import PASSWORDS, StoreIds, settings_for
from tests.dashboard.helpers import login


class Clock:
    """A hand-moved clock for lock-outs and session expiry (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(settings: Settings, clock: Clock) -> Any:
    app = create_app(settings)
    state = AuthState(settings.data_dir / AUTH_STATE_FILE, clock=clock)
    app.server.config["FIELDTRACE_AUTH_STATE"] = state
    return app


def _client(app: Any, address: str = "127.0.0.1") -> Any:
    client = app.server.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


# --------------------------------------------------------------------------- the session key


def test_there_is_no_default_session_key() -> None:
    assert Settings.model_fields["secret_key"].default is None


def test_the_key_is_random_private_and_kept_in_the_data_dir(store_root: Path) -> None:
    settings = settings_for(store_root)
    first = create_app(settings).server.secret_key
    key_file = store_root / SESSION_KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert first == key_file.read_text().strip()
    assert len(first) == 64
    assert create_app(settings).server.secret_key == first  # every worker signs alike
    other = store_root / "other"
    assert session_key(settings_for(store_root, data_dir=other)) != first


def test_a_short_explicit_key_is_refused(store_root: Path) -> None:
    with pytest.raises(SettingsError, match="secret_key has 11 characters; at least 32"):
        settings_for(store_root, secret_key="test-secret")


def test_a_key_file_others_can_read_is_refused(store_root: Path) -> None:
    settings = settings_for(store_root)
    session_key(settings)
    (store_root / SESSION_KEY_FILE).chmod(0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        create_app(settings)


def test_a_cookie_signed_with_the_settings_default_opens_nothing(app: Any) -> None:
    forger = SecureCookieSessionInterface()
    fake = type("FakeApp", (), {})()
    fake.secret_key = str(Settings.model_fields["secret_key"].default)
    fake.config = app.server.config
    serializer = forger.get_signing_serializer(fake)  # type: ignore[arg-type]
    assert serializer is not None
    client = _client(app)
    for payload in ({"ft_user": "dispatch"}, {"ft_sid": "guess"}):
        client.set_cookie("session", serializer.dumps(payload))
        assert client.get("/_dash-layout").status_code == 401


# --------------------------------------------------------------------------- redirects

EVIL_NEXT = [
    "/%09/evil.example",
    "/%0a/evil.example",
    "/%0d/evil.example",
    "/%0D%0A/evil.example",
    "/%00/evil.example",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "%5C%5Cevil.example",
    "/%5Cevil.example",
    "\\/evil.example",
    "https://evil.example",
    "https:evil.example",
    "//evil.example/%2F..",
    "javascript:alert(1)",
    "%20//evil.example",
    "/%20/evil.example",
    "/%E3%80%80/evil.example",
    "evil.example",
    "",
    "/" + "a" * 3000,
]


@pytest.mark.parametrize("raw", EVIL_NEXT)
def test_login_never_redirects_off_site(app: Any, raw: str) -> None:
    client = _client(app)
    form = {"username": "dispatch", "password": PASSWORDS["dispatch"]}
    response = client.post(f"/login?next={raw}", data=form)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location == "/", (raw, location)
    page = client.get(f"/login?next={raw}").get_data(as_text=True)
    assert 'name="next" value="/"' in page


@pytest.mark.parametrize(
    "good", ["/alerts", "/ticket?id={ticket}", "/alerts?alert={alert}&x=%2F%2Fa"]
)
def test_login_keeps_same_site_paths(app: Any, ids: StoreIds, good: str) -> None:
    good = good.format(ticket=ids.at_door_ticket, alert=ids.sent_alert)
    client = _client(app)
    form = {"username": "dispatch", "password": PASSWORDS["dispatch"], "next": good}
    location = client.post("/login", data=form).headers["Location"]
    assert location == good
    assert urlsplit(location).netloc == ""


# --------------------------------------------------------------------------- log-out


def test_a_session_cookie_is_dead_after_log_out(app: Any) -> None:
    client = _client(app)
    assert login(client, "dispatch", PASSWORDS["dispatch"]).status_code == 302
    cookie = client.get_cookie("session").value
    assert client.get("/_dash-layout").status_code == 200
    client.get("/logout")
    stolen = _client(app)
    stolen.set_cookie("session", cookie)
    assert stolen.get("/_dash-layout").status_code == 401
    assert stolen.get("/alerts").status_code == 302  # back to the log-in page


def test_log_out_in_one_worker_ends_the_session_in_another(settings: Settings) -> None:
    worker_a, worker_b = create_app(settings), create_app(settings)
    client = worker_a.server.test_client()
    assert login(client, "analyst", PASSWORDS["analyst"]).status_code == 302
    cookie = client.get_cookie("session").value
    other = worker_b.server.test_client()
    other.set_cookie("session", cookie)
    assert other.get("/_dash-layout").status_code == 200
    client.get("/logout")
    assert other.get("/_dash-layout").status_code == 401


def test_idle_sessions_expire(app: Any, clock: Clock) -> None:
    client = _client(app)
    login(client, "dispatch", PASSWORDS["dispatch"])
    clock.now += LoginPolicy().idle_timeout_s - 1
    assert client.get("/_dash-layout").status_code == 200
    clock.now += LoginPolicy().idle_timeout_s + 1
    assert client.get("/_dash-layout").status_code == 401


# --------------------------------------------------------------------------- lock-out


def test_thirty_wrong_passwords_lock_the_name_out(app: Any, clock: Clock) -> None:
    client = _client(app)
    codes = [login(client, "dispatch", f"guess-{i}").status_code for i in range(30)]
    assert codes[:5] == [401] * 5  # the free allowance
    assert codes[5] == 401  # the 6th failure sets the first lock ...
    assert set(codes[6:]) == {429}  # ... and every try inside a lock is refused unchecked
    locked = login(client, "dispatch", PASSWORDS["dispatch"])
    assert locked.status_code == 429  # even the right password waits
    assert int(locked.headers["Retry-After"]) >= 1
    assert b"Too many failed log-ins" in locked.data
    clock.now += 2  # the first lock is 1 s
    assert login(client, "dispatch", PASSWORDS["dispatch"]).status_code == 302


def test_the_lock_doubles_and_is_capped() -> None:
    policy = LoginPolicy()
    waits = [policy.lock_s(n, policy.free_failures_per_user) for n in range(1, 20)]
    assert waits[:5] == [0.0] * 5
    assert waits[5:10] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert max(waits) == policy.max_lock_s


def test_unknown_names_lock_out_like_known_ones(app: Any) -> None:
    client = _client(app)
    known = [login(client, "dispatch", "x").status_code for _ in range(7)]
    unknown = [login(client, "nobody-here", "x").status_code for _ in range(7)]
    assert known == unknown == [401] * 6 + [429]


def test_one_address_is_limited_across_names(app: Any, clock: Clock) -> None:
    assert LoginPolicy().free_failures_per_address == 20  # 3 here keeps the test short
    policy = LoginPolicy(free_failures_per_address=3)
    path = app.server.config["FIELDTRACE_AUTH_STATE"].path
    app.server.config["FIELDTRACE_AUTH_STATE"] = AuthState(path, policy=policy, clock=clock)
    client = _client(app, "10.1.2.3")
    for i in range(policy.free_failures_per_address + 1):
        clock.now += 3600  # every name's own lock has passed
        assert login(client, f"user-{i}", "x").status_code == 401
    assert login(client, "analyst", PASSWORDS["analyst"]).status_code == 429
    elsewhere = _client(app, "10.9.9.9")
    assert login(elsewhere, "analyst", PASSWORDS["analyst"]).status_code == 302


def test_a_success_clears_the_names_counter(app: Any) -> None:
    client = _client(app)
    for _ in range(5):
        login(client, "dispatch", "x")
    assert login(client, "dispatch", PASSWORDS["dispatch"]).status_code == 302
    assert [login(client, "dispatch", "x").status_code for _ in range(6)] == [401] * 6


# --------------------------------------------------------------------------- equal work


class CountingCheck:
    """The real werkzeug check, counted (the test counts hash work, not wall time)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, password_hash: str, password: str) -> bool:
        from werkzeug.security import check_password_hash

        self.calls.append(password_hash.split("$", 1)[0])
        return check_password_hash(password_hash, password)


def test_known_and_unknown_names_cost_one_hash_of_the_same_kind(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    add_user(path, "alice", "analyst", "right-password")
    users = load_users(path)
    counts = {}
    for name, password in (("alice", "wrong"), ("alice", "right-password"), ("bob", "wrong")):
        check = CountingCheck()
        result = authenticate(users, name, password, check=check)
        assert (result is not None) == (password == "right-password" and name == "alice")
        counts[name, password] = check.calls
    methods = {tuple(calls) for calls in counts.values()}
    assert len(methods) == 1  # the same number of checks, with the same method and cost
    (calls,) = methods
    assert len(calls) == 1
    assert calls[0].startswith("scrypt:")


def test_replacing_a_user_ends_their_open_sessions(app: Any, settings: Settings) -> None:
    from typer.testing import CliRunner

    from cli.users import users_app

    client = _client(app)
    login(client, "dispatch", PASSWORDS["dispatch"])
    assert client.get("/_dash-layout").status_code == 200
    env = {"FIELDTRACE_USERS_FILE": str(settings.users_file),
           "FIELDTRACE_DATA_DIR": str(settings.data_dir)}  # fmt: skip
    args = ["add", "dispatch", "--role", "dispatcher", "--password", "a-new-password"]
    result = CliRunner().invoke(users_app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "(1 open session(s) ended)" in " ".join(result.output.split())
    assert client.get("/_dash-layout").status_code == 401
