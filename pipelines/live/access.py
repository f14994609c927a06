"""Who may send: known OsmAnd devices (with optional tokens) and CloudEvents API keys.

Both live in TOML files named by settings (``devices_file``, ``api_keys_file``); secrets are
stored as SHA-256 hex digests, never in clear, and there are no default keys::

    # devices.toml
    [devices."48241179"]
    technician_id = "T0007"
    token_sha256 = "9f86d0..."        # optional: then the device must send its token

    # api_keys.toml
    [keys.ticketing]
    sha256 = "2c26b4..."
    types = ["fieldtrace.ticket.*"]   # fnmatch patterns of the event types it may publish

Keys are random and long, so a plain SHA-256 is enough (no password stretching needed); a
lookup by digest compares nothing in clear.
"""

from __future__ import annotations

import fnmatch
import hashlib
import secrets
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import SettingsError


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A fresh random key or token (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Device:
    device_id: str
    technician_id: str
    token_sha256: str | None = None


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    types: tuple[str, ...]

    def allows(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.types)


@dataclass(frozen=True)
class Access:
    """The devices and API keys the receivers accept."""

    devices: dict[str, Device] = field(default_factory=dict)
    keys_by_digest: dict[str, ApiKey] = field(default_factory=dict)

    def key_for(self, secret: str | None) -> ApiKey | None:
        return None if not secret else self.keys_by_digest.get(sha256_hex(secret))


def _read_toml(path: Path) -> dict[str, object]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from exc


def load_access(devices_file: Path, api_keys_file: Path) -> Access:
    """Read both files (a missing file means: none known)."""
    return Access(load_devices(devices_file), load_keys(api_keys_file))


def load_devices(devices_file: Path) -> dict[str, Device]:
    devices: dict[str, Device] = {}
    raw_devices = _read_toml(devices_file).get("devices", {})
    if not isinstance(raw_devices, dict):
        raise SettingsError(f"{devices_file}: [devices] must be a table")
    for device_id, entry in raw_devices.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("technician_id"), str):
            raise SettingsError(f"{devices_file}: devices.{device_id}.technician_id is missing")
        token = entry.get("token_sha256")
        devices[str(device_id)] = Device(str(device_id), entry["technician_id"], token)
    return devices


def load_keys(api_keys_file: Path) -> dict[str, ApiKey]:
    """API keys by their SHA-256 digest."""
    keys: dict[str, ApiKey] = {}
    raw_keys = _read_toml(api_keys_file).get("keys", {})
    if not isinstance(raw_keys, dict):
        raise SettingsError(f"{api_keys_file}: [keys] must be a table")
    for name, entry in raw_keys.items():
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        types = entry.get("types") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or len(digest) != 64:
            raise SettingsError(f"{api_keys_file}: keys.{name}.sha256 must be 64 hex digits")
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise SettingsError(f"{api_keys_file}: keys.{name}.types must be a list of strings")
        keys[digest] = ApiKey(str(name), digest, tuple(types))
    return keys


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_devices(path: Path, devices: list[Device]) -> None:
    """Write a devices file (used by the simulator and by operators' scripts)."""
    lines = []
    for d in devices:
        lines.append(f"[devices.{_toml_str(d.device_id)}]")
        lines.append(f"technician_id = {_toml_str(d.technician_id)}")
        if d.token_sha256:
            lines.append(f"token_sha256 = {_toml_str(d.token_sha256)}")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def _write_keys(path: Path, keys: list[ApiKey]) -> None:
    lines = []
    for k in keys:
        lines.append(f"[keys.{_toml_str(k.name)}]")
        lines.append(f"sha256 = {_toml_str(k.sha256)}")
        lines.append(f"types = [{', '.join(_toml_str(t) for t in k.types)}]")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def set_api_key(path: Path, name: str, types: list[str]) -> str:
    """Create (or replace) the key ``name`` allowed to publish ``types``; only its digest is
    stored, and the secret is returned once."""
    secret = new_secret()
    keys = [k for k in load_keys(path).values() if k.name != name]
    keys.append(ApiKey(name, sha256_hex(secret), tuple(types)))
    _write_keys(path, keys)
    return secret


add_api_key = set_api_key


class AccessCache:
    """The access files, re-read when they change (checked at most every ``every_s``)."""

    def __init__(self, devices_file: Path, api_keys_file: Path, every_s: float = 1.0) -> None:
        self.files = (devices_file, api_keys_file)
        self.every_s = every_s
        self._checked = 0.0
        self._stamp = self._mtimes()
        self.access = load_access(*self.files)

    def _mtimes(self) -> tuple[float, float]:
        out = [f.stat().st_mtime if f.is_file() else 0.0 for f in self.files]
        return out[0], out[1]

    def get(self) -> Access:
        now = time.monotonic()
        if now - self._checked >= self.every_s:
            self._checked = now
            stamp = self._mtimes()
            if stamp != self._stamp:
                self._stamp = stamp
                self.access = load_access(*self.files)
        return self.access
