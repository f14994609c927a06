"""The one error base of ``pipelines``; every subclass also inherits a builtin."""

from __future__ import annotations


class FieldTraceError(Exception):
    """Base of every error raised by ``pipelines``."""


class SettingsError(FieldTraceError, ValueError):
    """A setting or configuration file is invalid."""


class StoreError(FieldTraceError, RuntimeError):
    """The DuckDB store could not do what was asked."""


class UnknownTableError(StoreError, KeyError):
    """A table name is not part of the FieldTrace schema."""


class SourceFormatError(FieldTraceError, ValueError):
    """A file or response cannot be parsed at all (nothing is written)."""


class FetchError(FieldTraceError, ConnectionError):
    """An HTTP feed failed after its retries."""


class BusError(FieldTraceError, ConnectionError):
    """The event bus (NATS JetStream) is unreachable or did not acknowledge a publish."""


class EventFormatError(FieldTraceError, ValueError):
    """A live message (OsmAnd request, CloudEvent, MQTT payload) is malformed; names the field."""


class OptionError(FieldTraceError, ValueError):
    """An option or declared value is out of range (checked before anything is read)."""


class StoreBusyError(StoreError):
    """Another process holds the DuckDB store's lock; the message names it when DuckDB does."""


class NotFoundError(FieldTraceError, LookupError):
    """A named thing (a batch, an order...) is not in the store."""
