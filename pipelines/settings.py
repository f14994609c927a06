"""One typed settings object, read from ``FIELDTRACE_*`` variables and an optional TOML file.

Precedence (highest first): explicit overrides, environment variables
(``FIELDTRACE_STORE_PATH``, nested with ``__`` as in ``FIELDTRACE_THRESHOLDS__ARRIVAL_RADIUS_M``),
the TOML file (``FIELDTRACE_CONFIG`` or ``./fieldtrace.toml``), then the defaults below.
Every field is documented in README.md; ``tests/test_conventions.py`` keeps that true.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipelines.errors import SettingsError
from pipelines.store.location import LakeLocation, StoreLocation, parse_location

DEFAULT_CONFIG_FILE = Path("fieldtrace.toml")
MIN_SECRET_KEY_CHARS = 32


class Thresholds(BaseModel):
    """Named thresholds, each with its unit in its name."""

    arrival_radius_m: float = Field(5.0, description="An arrival counts within this distance.")
    accuracy_k: float = Field(1.0, description="Sigmas of reported accuracy added to distance.")
    reject_margin_k: float = Field(
        2.0, description="Sigmas subtracted from a fix's distance before it counts as off site."
    )
    site_radius_m: float = Field(
        25.0, description="ON_SITE: within this distance of the customer (>= arrival radius)."
    )
    on_site_min_p: float = Field(
        0.95, ge=0.0, le=1.0, description="ON_SITE needs P(on site) at least this."
    )
    reject_max_p: float = Field(
        0.01, ge=0.0, le=1.0, description="REJECTED needs P(on site) at most this."
    )
    prior_at_door_p: float = Field(
        0.95, ge=0.0, le=1.0, description="Model prior: share of taps made at the door."
    )
    prior_on_site_p: float = Field(
        0.02, ge=0.0, le=1.0, description="Model prior: share made elsewhere on site."
    )
    gps_bias_max_m: float = Field(
        8.0, ge=0.0, description="Model: largest per-visit multipath bias of phone GPS."
    )
    max_fix_gap_s: float = Field(120.0, description="Nearest fix must be within ±this of event.")
    max_accuracy_m: float = Field(25.0, description="Fixes worse than this cannot decide.")
    max_speed_mps: float = Field(70.0, description="Implied speeds above this are jumps/spoofs.")
    stop_max_diameter_m: float = Field(15.0, description="Stop detection: max diameter.")
    stop_min_duration_s: float = Field(120.0, description="Stop detection: min duration.")
    stop_min_fixes: int = Field(3, description="A stop centroid needs at least this many fixes.")
    uwb_max_error_m: float = Field(0.5, description="UWB positions worse than this are ignored.")
    earliest_valid_year: int = Field(1990, description="Times before this year are rejected.")
    future_tolerance_s: float = Field(300.0, description="Times this far past now are rejected.")

    @property
    def max_fix_gap(self) -> timedelta:
        return timedelta(seconds=self.max_fix_gap_s)

    @model_validator(mode="after")
    def _in_range(self) -> Thresholds:
        """Every threshold is finite; distances, durations and speeds are > 0."""
        for name, value in self.__dict__.items():
            if not math.isfinite(value):
                raise ValueError(f"{name}={value} is not a finite number")
            if name.endswith(("_m", "_s", "_mps")) and value <= 0:
                raise ValueError(f"{name}={value} must be > 0")
            if value < 0:
                raise ValueError(f"{name}={value} must be >= 0")
        return self


class Settings(BaseSettings):
    """Everything FieldTrace can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="FIELDTRACE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    store_path: Path = Field(Path("data/fieldtrace.duckdb"), description="The DuckDB store file.")
    store_url: str | None = Field(
        None,
        description="A shared DuckLake store, e.g. "
        "ducklake:postgresql://127.0.0.1:5432/fieldtrace_lake?data=/srv/fieldtrace/lake; "
        "when set it is used instead of store_path.",
    )
    data_dir: Path = Field(Path("data"), description="Demo files, caches and users live here.")
    basemap_style: str = Field(
        "open-street-map",
        description="Plotly map style (open-street-map, white-bg, carto-positron, ...).",
    )
    basemap_tiles_url: str | None = Field(
        None, description="Self-hosted XYZ raster tiles, e.g. http://tiles.local/{z}/{x}/{y}.png."
    )
    basemap_datum: Literal["WGS84", "GCJ02", "BD09"] = Field(
        "WGS84",
        description=(
            "Datum of the basemap tiles: WGS84 (OpenStreetMap, Carto), GCJ02 (AMap, Tencent) "
            "or BD09 (Baidu). Every map converts the WGS84 points it draws into it."
        ),
    )
    timezone: str = Field("Asia/Shanghai", description="Zone assumed for naive input times.")
    thresholds: Thresholds = Field(default_factory=Thresholds)
    users_file: Path = Field(Path("data/users.toml"), description="Dashboard users (hashed).")
    secret_key: str | None = Field(
        None,
        description="Signs session cookies (>= 32 characters). Unset: a random key is made at "
        "first start and kept in data_dir/session.key (0600).",
    )
    webhook_secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Webhook HMAC secret per warehouse id (prefer the environment or the file).",
    )
    webhook_secrets_file: Path | None = Field(
        None,
        description="TOML [webhook_secrets] per warehouse id, mode 0600. Unset: "
        "data_dir/webhook_secrets.toml when it exists.",
    )
    refresh_interval_s: int = Field(30, description="Dispatch map auto-refresh interval.")
    http_timeout_s: float = Field(10.0, description="HTTP feed timeout per request.")
    http_retries: int = Field(4, description="HTTP retries on 429/5xx/timeouts.")
    http_cache_dir: Path = Field(Path("data/cache/http"), description="HTTP response cache.")
    h3_resolution: int = Field(9, description="H3 resolution stored on every GPS fix.")
    auth_mode: Literal["login", "open"] = Field(
        "login", description="'open' disables login (local analysis only)."
    )

    bus_url: str = Field(
        "nats://127.0.0.1:4222", description="NATS server with JetStream (the event bus)."
    )
    bus_prefix: str = Field(
        "fieldtrace",
        pattern=r"^[a-z][a-z0-9_-]*$",
        description="First subject token and stream-name prefix on the bus.",
    )
    bus_duplicate_window_s: float = Field(
        3600.0, description="JetStream de-duplication window for Nats-Msg-Id (phone retries)."
    )
    bus_timeout_s: float = Field(2.0, description="Wait at most this for a publish ack.")
    receiver_host: str = Field("127.0.0.1", description="Interface the live receivers bind.")
    osmand_port: int = Field(5055, description="Port of the OsmAnd (Traccar) position receiver.")
    events_port: int = Field(8070, description="Port of the CloudEvents receiver /api/v1/events.")
    mqtt_url: str = Field("mqtt://127.0.0.1:1883", description="MQTT broker for IoT readings.")
    devices_file: Path = Field(
        Path("data/devices.toml"), description="Known OsmAnd devices, technician and token hash."
    )
    api_keys_file: Path = Field(
        Path("data/api_keys.toml"), description="CloudEvents API keys (hashed) and their types."
    )
    writer_max_batch_s: float = Field(1.0, description="A live writer commits at least this often.")
    writer_max_batch_msgs: int = Field(2000, description="Most bus messages in one write.")
    writer_ack_wait_s: float = Field(
        30.0, description="A message a writer took but did not ack returns after this."
    )

    @field_validator("basemap_datum", mode="before")
    @classmethod
    def _datum_spelling(cls, value: object) -> object:
        """Accept the spellings the ingest accepts (``gcj-02``, ``bd09``, ``wgs 84``)."""
        if isinstance(value, str):
            key = "".join(ch for ch in value.lower() if ch.isalnum())
            return {"wgs84": "WGS84", "gcj02": "GCJ02", "bd09": "BD09"}.get(key, value)
        return value

    @field_validator("store_url")
    @classmethod
    def _lake_url(cls, value: str | None) -> str | None:
        if value is not None and not isinstance(parse_location(value), LakeLocation):
            raise ValueError(f"store_url={value!r} is not a ducklake:postgresql://... location")
        return value

    @property
    def store_location(self) -> StoreLocation:
        """Where the store is: the DuckLake of ``store_url`` when set, else ``store_path``."""
        return parse_location(self.store_url if self.store_url else self.store_path)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone={value!r} is not an IANA zone name") from exc
        return value

    @field_validator("secret_key")
    @classmethod
    def _strong_key(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_SECRET_KEY_CHARS:
            raise ValueError(
                f"secret_key has {len(value)} characters; at least {MIN_SECRET_KEY_CHARS} "
                "(or leave it unset for a random key kept in the data directory)"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = Path(os.environ.get("FIELDTRACE_CONFIG", DEFAULT_CONFIG_FILE))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings; a bad value raises SettingsError naming the field."""
    if "FIELDTRACE_CONFIG" in os.environ and not Path(os.environ["FIELDTRACE_CONFIG"]).is_file():
        raise SettingsError(f"FIELDTRACE_CONFIG={os.environ['FIELDTRACE_CONFIG']} does not exist")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(f"invalid FieldTrace settings: {_named(exc)}") from exc
    except ValueError as exc:
        raise SettingsError(f"invalid FieldTrace settings: {exc}") from exc


def _named(exc: ValidationError) -> str:
    """Each bad value as ``FIELDTRACE_NAME='value': why`` (the variable a user would set)."""
    parts = []
    for err in exc.errors():
        name = "FIELDTRACE_" + "__".join(str(p) for p in err["loc"]).upper()
        why = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{name}={err.get('input')!r}: {why}")
    return "; ".join(parts)
