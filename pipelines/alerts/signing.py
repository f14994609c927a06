"""The webhook signature scheme shared by the deliverer and the reference receiver (pure).

``X-FieldTrace-Signature: v2=<hex HMAC-SHA256(secret, message)>`` where ``message`` is::

    b"v2\\n" + timestamp + b"\\n" + idempotency_key + b"\\n" + body

The timestamp (``X-FieldTrace-Timestamp``, unix seconds) and the ``Idempotency-Key`` are both
signed, and the body carries the CloudEvent ``id``; so every field a receiver de-duplicates on
is covered. The key may not contain a newline, which keeps the message unambiguous.
See docs/WEBHOOKS.md.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from pipelines.errors import FieldTraceError

SCHEME: Final = "v2"
SIGNATURE_HEADER: Final = "X-FieldTrace-Signature"
TIMESTAMP_HEADER: Final = "X-FieldTrace-Timestamp"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"


class SignatureInputError(FieldTraceError, ValueError):
    """A value cannot be signed unambiguously."""


def signed_message(timestamp: int, idempotency_key: str, body: bytes) -> bytes:
    """The exact bytes the HMAC covers."""
    if "\n" in idempotency_key or "\r" in idempotency_key:
        raise SignatureInputError(f"{IDEMPOTENCY_HEADER}={idempotency_key!r} has a line break")
    return f"{SCHEME}\n{timestamp}\n{idempotency_key}\n".encode() + body


def sign(secret: str, timestamp: int, idempotency_key: str, body: bytes) -> str:
    """``v2=<hex HMAC-SHA256>`` over timestamp, idempotency key and body."""
    message = signed_message(timestamp, idempotency_key, body)
    return f"{SCHEME}=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: int, idempotency_key: str, body: bytes, given: str) -> bool:
    """True when ``given`` is the signature of these values (constant-time comparison)."""
    try:
        expected = sign(secret, timestamp, idempotency_key, body)
    except SignatureInputError:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
