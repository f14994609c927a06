"""Vibration recordings → ``vibration_series`` rows (one row per channel).

Formats (IoT readings in long form are the native ``csv``/``parquet``):

* ``vibration_csv``: a header, optional ``sample``/``time_s`` index columns, and one numeric
  column per channel (CWRU slices: ``sample,time_s,DE_g,FE_g,BA_g``);
* ``mat``: MATLAB 5 files via ``scipy.io.loadmat``; every 1-D numeric array of 2+ samples is a
  channel, and a scalar variable ending in ``RPM`` gives the shaft speed (CWRU ``X105RPM``).

Declared with ``IngestOptions.extra`` (CLI ``--device``, ``--sample-rate-hz``, ``--rpm``):
``device`` (default: the file stem), ``sample_rate_hz`` (else 1 / median step of ``time_s``,
else an error), ``rpm`` (else the file's), ``start_ts`` (else the MAT header's creation date,
else the file's modification time, UTC). ``series_id = "<device>:<file stem>:<channel>"``.
A channel with a value that is not a finite number is quarantined whole (rule ``not_finite``
or ``type``, naming the first bad sample) — a waveform with a hole is not a waveform.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.errors import SourceFormatError
from pipelines.ingest.contract import QUARANTINE_SCHEMA, IngestOptions, ParsedBatch
from pipelines.ingest.kinds import KindSpec
from pipelines.ingest.sources import register
from pipelines.ingest.sources.text import read_delimited

INDEX_COLUMNS = ("sample", "time_s", "time", "t", "index")
_MAT_DATE = re.compile(r"Created on:\s*(\w{3} \w{3}\s+\d+ \d\d:\d\d:\d\d \d{4})")


def _declared_start(path: Path, opts: IngestOptions, header_date: str | None = None) -> str:
    if opts.extra.get("start_ts"):
        return str(opts.extra["start_ts"])
    if header_date:
        return header_date
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()


def _series_rows(
    path: Path,
    opts: IngestOptions,
    channels: dict[str, np.ndarray],
    rate: float | None,
    rpm: Any,
    start: str,
    fmt: str,
    text_bad: dict[str, tuple[int, str]] | None = None,
) -> ParsedBatch:
    device = str(opts.extra.get("device") or path.stem)
    rate = opts.extra.get("sample_rate_hz") or rate
    if rate is None:
        raise SourceFormatError(f"{path}: no sample rate; pass --sample-rate-hz (e.g. 12000)")
    rpm = opts.extra.get("rpm") if opts.extra.get("rpm") is not None else rpm
    rows, rejects = [], []
    for n, (name, values) in enumerate(channels.items(), start=1):
        sid = f"{device}:{path.stem}:{name}"
        bad_text = (text_bad or {}).get(name)
        finite = np.isfinite(values)
        if bad_text is not None or not finite.all():
            idx, val = bad_text or (int(np.argmin(finite)) + 1, str(values[~finite][0]))
            rule = "type" if bad_text else "not_finite"
            rejects.append(
                {
                    "_row": n,
                    "rule": rule,
                    "field": name,
                    "raw": sid,
                    "reason": f"{path.name} channel {name} sample {idx}: {val!r} is not a "
                    "finite number; the series is quarantined whole",
                }
            )
            continue
        rows.append(
            {
                "_row": n,
                "series_id": sid,
                "device_id": device,
                "start_ts": start,
                "sample_rate_hz": float(rate),
                "rpm": None if rpm is None else float(rpm),
                "channel": name,
                "samples": values.astype(np.float64).tolist(),
            }
        )
    frame = pl.DataFrame(
        rows,
        schema={
            "_row": pl.Int64,
            "series_id": pl.String,
            "device_id": pl.String,
            "start_ts": pl.String,
            "sample_rate_hz": pl.Float64,
            "rpm": pl.Float64,
            "channel": pl.String,
            "samples": pl.List(pl.Float64),
        },
    )
    return ParsedBatch(frame, pl.DataFrame(rejects, schema=QUARANTINE_SCHEMA), len(channels), fmt)


def read_vibration_csv(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    table = read_delimited(path, encoding=opts.encoding)
    if table.rejected.height:
        first = table.rejected.row(0, named=True)
        raise SourceFormatError(f"{path}: {first['reason']}; a waveform file must be regular")
    frame = table.frame
    chans = [c for c in frame.columns if c != "_row" and c.lower() not in INDEX_COLUMNS]
    if not chans:
        raise SourceFormatError(f"{path}: no channel columns besides {', '.join(INDEX_COLUMNS)}")
    channels, text_bad = {}, {}
    for c in chans:
        text = frame[c].str.strip_chars()
        num = text.cast(pl.Float64, strict=False)
        wrong = num.is_null() & text.is_not_null() & (text != "") | text.is_null() | (text == "")
        if wrong.any():
            i = int(wrong.arg_max() or 0)
            text_bad[c] = (i + 1, str(frame[c][i]))
        channels[c] = num.fill_null(np.nan).to_numpy().astype(np.float64)
    rate = None
    tcol = next((c for c in frame.columns if c.lower() in ("time_s", "time", "t")), None)
    if tcol is not None and frame.height > 1:
        steps = np.diff(frame[tcol].cast(pl.Float64, strict=False).to_numpy())
        steps = steps[np.isfinite(steps) & (steps > 0)]
        rate = float(1.0 / np.median(steps)) if steps.size else None
    return _series_rows(
        path, opts, channels, rate, None, _declared_start(path, opts), "vibration_csv", text_bad
    )


def read_mat(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    from scipy.io import loadmat

    with path.open("rb") as fh:
        header_bytes = fh.read(128)
    if b"MATLAB 7.3" in header_bytes:
        # v7.3 files are HDF5 containers; scipy reads MATLAB 4/5 only.
        raise SourceFormatError(
            f"{path}: MATLAB v7.3 (HDF5) .mat file; re-save with `save -v7` or export CSV"
        )
    try:
        mat = loadmat(path, squeeze_me=False)
    except (ValueError, TypeError, OSError) as exc:
        raise SourceFormatError(f"{path}: not a MATLAB 5 .mat file scipy can read: {exc}") from exc
    header = (
        str(mat.get("__header__", b""), "latin-1")
        if isinstance(mat.get("__header__"), bytes)
        else ""
    )
    found = _MAT_DATE.search(header)
    date = (
        datetime.strptime(found.group(1).replace("  ", " "), "%a %b %d %H:%M:%S %Y").isoformat()
        if found
        else None
    )
    channels: dict[str, np.ndarray] = {}
    rpm = None
    for name, value in sorted(mat.items()):
        if name.startswith("__") or not isinstance(value, np.ndarray):
            continue
        if value.dtype.kind not in "iuf":
            continue
        flat = value.ravel().astype(np.float64)
        if name.upper().endswith("RPM") and flat.size == 1:
            rpm = float(flat[0])
        elif flat.size >= 2 and (value.ndim == 1 or min(value.shape) == 1):
            channels[name] = flat
    if not channels:
        raise SourceFormatError(f"{path}: no 1-D numeric channel in the .mat file")
    return _series_rows(path, opts, channels, None, rpm, _declared_start(path, opts, date), "mat")


register("vibration", "vibration_csv", read_vibration_csv)
register("vibration", "mat", read_mat)
