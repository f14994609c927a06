"""Secrets that FieldTrace needs and never ships: the session key and the webhook secrets.

- **Session key** (``session_key``): ``settings.secret_key`` when set (at least 32
  characters), else a random key made at first start and kept in ``data_dir/session.key``
  (mode 0600). Every worker of a deployment reads the same file, so they sign sessions alike.
  A key file that others can read is refused.
- **Webhook secrets** (``WebhookSecrets``): one per warehouse, looked up in order in the
  environment (``FIELDTRACE_WEBHOOK_SECRET_<ID>``, the id upper-cased with non-alphanumerics
  as ``_``), ``settings.webhook_secrets``, then the secrets file (``[webhook_secrets]`` in
  ``settings.webhook_secrets_file`` or ``data_dir/webhook_secrets.toml``, mode 0600). There is
  no default: a warehouse without a secret is refused with ``missing_reason``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from pipelines.errors import FieldTraceError
from pipelines.settings import MIN_SECRET_KEY_CHARS, Settings

SESSION_KEY_FILE: Final = "session.key"
WEBHOOK_SECRETS_FILE: Final = "webhook_secrets.toml"
WEBHOOK_ENV_PREFIX: Final = "FIELDTRACE_WEBHOOK_SECRET_"


class CredentialsError(FieldTraceError, PermissionError):
    """A secret file is unsafe or unreadable, or a secret is missing."""


class MissingWebhookSecretError(CredentialsError, LookupError):
    """A warehouse has no webhook secret configured."""


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise CredentialsError(
            f"{path}: mode {mode:o} lets other users read a secret; run chmod 600 {path}"
        )


def write_private(path: Path, text: str) -> bool:
    """Create ``path`` with ``text``, mode 0600, atomically; False when it already existed.

    The text goes to a private temporary file that is then hard-linked into place, so a
    concurrent reader never sees a half-written key and two starting workers agree on one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def session_key(settings: Settings) -> str:
    """The key that signs session cookies (see the module docstring); never a published one."""
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / SESSION_KEY_FILE
    if not path.exists():
        write_private(path, secrets.token_hex(32) + "\n")
    _check_private(path)
    key = path.read_text().strip()
    if len(key) < MIN_SECRET_KEY_CHARS:
        raise CredentialsError(
            f"{path}: the session key has {len(key)} characters; at least "
            f"{MIN_SECRET_KEY_CHARS} (delete the file to have a new one made)"
        )
    return key


def webhook_env_name(warehouse_id: str) -> str:
    return WEBHOOK_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", warehouse_id.upper())


def missing_reason(warehouse_id: str, secrets_file: Path | None = None) -> str:
    """Why a warehouse's order is refused, and where its secret may come from."""
    where = f"[webhook_secrets] in {secrets_file}" if secrets_file else "the secrets file"
    return (
        f"warehouse {warehouse_id!r} has no webhook secret: set {webhook_env_name(warehouse_id)}, "
        f"settings webhook_secrets, or {where}"
    )


def _read_secrets_file(path: Path) -> dict[str, str]:
    _check_private(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CredentialsError(f"{path}: not valid TOML: {exc}") from exc
    table = data.get("webhook_secrets", {})
    if not isinstance(table, dict) or not all(isinstance(v, str) and v for v in table.values()):
        raise CredentialsError(f"{path}: [webhook_secrets] must map warehouse ids to strings")
    return {str(k): v for k, v in table.items()}


class WebhookSecrets:
    """Per-warehouse webhook secrets: environment, then settings, then the secrets file."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        mapping: Mapping[str, str] | None = None,
        file: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._mapping = dict(settings.webhook_secrets if settings else {})
        self._mapping.update(mapping or {})
        if file is None and settings is not None:
            file = settings.webhook_secrets_file or settings.data_dir / WEBHOOK_SECRETS_FILE
        self.file = file
        self._environ = os.environ if environ is None else environ
        self._from_file: dict[str, str] | None = None

    def _file_secrets(self) -> dict[str, str]:
        if self._from_file is None:
            exists = self.file is not None and self.file.is_file()
            self._from_file = _read_secrets_file(self.file) if exists else {}  # type: ignore[arg-type]
        return self._from_file

    def lookup(self, warehouse_id: str) -> str | None:
        """The secret of ``warehouse_id``, or None when none is configured anywhere."""
        return (
            self._environ.get(webhook_env_name(warehouse_id))
            or self._mapping.get(warehouse_id)
            or self._file_secrets().get(warehouse_id)
            or None
        )

    def require(self, warehouse_id: str) -> str:
        secret = self.lookup(warehouse_id)
        if secret is None:
            raise MissingWebhookSecretError(missing_reason(warehouse_id, self.file))
        return secret

    def missing_reason(self, warehouse_id: str) -> str:
        return missing_reason(warehouse_id, self.file)


def ensure_webhook_secrets(path: Path, warehouse_ids: Iterable[str]) -> list[str]:
    """Give each warehouse without a secret in ``path`` a random one (the demo's receiver and
    deliverer then share them); returns the ids that got a new secret. The file stays 0600."""
    known = _read_secrets_file(path) if path.is_file() else {}
    new = sorted({w for w in warehouse_ids if w not in known})
    if not new:
        return []
    known.update({w: secrets.token_urlsafe(32) for w in new})
    lines = ["# FieldTrace webhook secrets, one per warehouse id. Keep this file mode 0600.", ""]
    lines.append("[webhook_secrets]")
    lines += [f"{json.dumps(w)} = {json.dumps(known[w])}" for w in sorted(known)]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    tmp.replace(path)
    return new
