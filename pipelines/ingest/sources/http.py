"""The one HTTP client of FieldTrace's feeds (httpx): timeouts, retries, a response cache.

* Timeout per request: ``settings.http_timeout_s``.
* Retries (``settings.http_retries``) on 429, 5xx, timeouts and broken transfers (a body
  shorter than its Content-Length), with exponential backoff ``backoff_base_s × 2^attempt``
  capped at ``max_backoff_s``; a 429's ``Retry-After`` (seconds or HTTP date) is honoured, up
  to ``max_backoff_s``.
* Other 4xx fail at once. Every failure is a ``FetchError`` naming the URL, the attempts and
  the last status or error.
* Bodies must be valid JSON (``expect_json``); a truncated or invalid body is a FetchError.
* Cache: a successful body is stored under ``settings.http_cache_dir`` keyed by
  sha256(method, url, sorted params); written to a temp file and renamed, so a cache entry is
  whole or absent. Polling feeds pass ``use_cache=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from pipelines.errors import FetchError
from pipelines.settings import Settings

BACKOFF_BASE_S = 0.5
MAX_BACKOFF_S = 30.0
USER_AGENT = "FieldTrace/0.1 (+feeds)"


@dataclass(frozen=True)
class Fetched:
    url: str
    body: bytes
    from_cache: bool
    attempts: int


def cache_key(method: str, url: str, params: Mapping[str, Any] | None = None) -> str:
    items = sorted((str(k), str(v)) for k, v in (params or {}).items())
    return hashlib.sha256(json.dumps([method.upper(), url, items]).encode()).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class FeedClient:
    """GET JSON feeds with retries and a cache; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        backoff_base_s: float = BACKOFF_BASE_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.backoff_base_s = backoff_base_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._client = httpx.Client(
            timeout=settings.http_timeout_s,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=True,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> FeedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cache_path(self, url: str, params: Mapping[str, Any] | None) -> Path:
        return Path(self.settings.http_cache_dir) / f"{cache_key('GET', url, params)}.json"

    def get(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        *,
        use_cache: bool = True,
        expect_json: bool = True,
    ) -> Fetched:
        cached = self._cache_path(url, params)
        if use_cache and cached.is_file():
            return Fetched(url, cached.read_bytes(), True, 0)
        attempts = self.settings.http_retries + 1
        last = "no attempt made"
        for attempt in range(attempts):
            wait = min(self.backoff_base_s * 2**attempt, self.max_backoff_s)
            try:
                resp = self._client.get(url, params=dict(params or {}))
                body = resp.read()
            except httpx.TimeoutException as exc:
                last = f"timed out after {self.settings.http_timeout_s} s ({type(exc).__name__})"
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                last = f"broken or truncated transfer ({exc})"
            except httpx.TransportError as exc:
                last = f"connection failed ({exc})"
            else:
                if resp.status_code == 429 or resp.status_code >= 500:
                    last = f"HTTP {resp.status_code}"
                    after = _retry_after_s(resp.headers.get("Retry-After"))
                    if after is not None:
                        wait = min(after, self.max_backoff_s)
                elif resp.status_code >= 400:
                    raise FetchError(
                        f"GET {resp.url}: HTTP {resp.status_code}: "
                        f"{body[:200].decode('utf-8', 'replace')}"
                    )
                else:
                    if expect_json:
                        self._check_json(str(resp.url), body, resp.headers.get("Content-Length"))
                    if use_cache:
                        write_atomic(cached, body)
                    return Fetched(str(resp.url), body, False, attempt + 1)
            if attempt + 1 < attempts:
                self._sleep(wait)
        raise FetchError(f"GET {url}: failed after {attempts} attempt(s); last error: {last}")

    @staticmethod
    def _check_json(url: str, body: bytes, length: str | None) -> None:
        try:
            json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FetchError(
                f"GET {url}: response body is not valid JSON (truncated?): got "
                f"{len(body)} bytes, Content-Length {length or 'unknown'}: "
                f"{exc}"
            ) from exc
