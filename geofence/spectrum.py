"""Vibration spectra and rolling-bearing fault frequencies.

Pure numpy/scipy: arrays in, arrays or polars frames out.

Which spectrum to use: a localized bearing defect produces a train of short impacts at the
defect frequency that excite a structural resonance (kHz). The *plain* amplitude spectrum shows
mostly the resonance and shaft harmonics; the defect rate sits in the *envelope* of the signal.
``envelope_spectrum`` (Hilbert envelope, optionally after a band-pass around the resonance) is
therefore the one to feed ``mark_fault_peaks`` for BPFI/BPFO/BSF; on the CWRU 12 kHz drive-end
records it shows BPFI (inner race) and BPFO (outer race) as the top envelope lines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy import ndimage, signal

from geofence.errors import GeofenceError

FloatArray = npt.NDArray[np.float64]
WindowName = Literal["hann", "hamming", "blackman", "boxcar"]

PEAK_SCHEMA: Final = {
    "freq_hz": pl.Float64,
    "amplitude": pl.Float64,
    "baseline": pl.Float64,
    "ratio_to_baseline": pl.Float64,
    "match": pl.String,
    "fault": pl.String,
    "harmonic": pl.Int64,
    "target_hz": pl.Float64,
    "offset_hz": pl.Float64,
}


class SpectrumError(GeofenceError, ValueError):
    """A spectrum input has the wrong shape or an impossible value."""


@dataclass(frozen=True, slots=True)
class BearingGeometry:
    """Rolling-element bearing geometry (diameters in mm; any consistent unit works)."""

    n_balls: int
    ball_diameter_mm: float
    pitch_diameter_mm: float
    contact_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.n_balls < 1:
            raise SpectrumError(f"BearingGeometry: n_balls={self.n_balls}, expected >= 1")
        if not 0 < self.ball_diameter_mm < self.pitch_diameter_mm:
            raise SpectrumError(
                f"BearingGeometry: ball_diameter_mm={self.ball_diameter_mm}, expected "
                f"0 < ball diameter < pitch_diameter_mm={self.pitch_diameter_mm}"
            )


# SKF 6205-2RS JEM, the CWRU drive-end bearing: 0.3126 in balls on a 1.537 in pitch circle.
SKF_6205_2RS: Final = BearingGeometry(
    n_balls=9, ball_diameter_mm=7.94, pitch_diameter_mm=39.04, contact_angle_deg=0.0
)


@dataclass(frozen=True, slots=True)
class FaultFrequencies:
    """Characteristic defect frequencies at one shaft speed, in Hz.

    ``bsf_hz`` follows the CWRU/most-vendor table convention: the *ball defect* frequency,
    i.e. twice the ball spin rate (a spall on a ball strikes both races once per spin).
    """

    shaft_hz: float
    ftf_hz: float
    bsf_hz: float
    bpfo_hz: float
    bpfi_hz: float

    def as_mapping(self) -> dict[str, float]:
        """``{'shaft', 'FTF', 'BSF', 'BPFO', 'BPFI'}`` → Hz, ready for ``mark_fault_peaks``."""
        return {
            "shaft": self.shaft_hz,
            "FTF": self.ftf_hz,
            "BSF": self.bsf_hz,
            "BPFO": self.bpfo_hz,
            "BPFI": self.bpfi_hz,
        }


def fault_frequencies_hz(rpm: float, geometry: BearingGeometry) -> FaultFrequencies:
    """Kinematic defect frequencies for an outer race fixed and an inner race turning at ``rpm``.

    With ``d`` ball diameter, ``D`` pitch diameter, ``φ`` contact angle, ``n`` balls and
    ``f_r`` the shaft rate: FTF = f_r/2 (1 − d/D cos φ); BPFO = n·FTF;
    BPFI = n f_r/2 (1 + d/D cos φ); BSF = f_r D/d (1 − (d/D cos φ)²).
    """
    if not math.isfinite(rpm) or rpm < 0:
        raise SpectrumError(f"fault_frequencies_hz: rpm={rpm}, expected a finite value >= 0")
    shaft_hz = rpm / 60.0
    ratio = geometry.ball_diameter_mm / geometry.pitch_diameter_mm
    ratio_c = ratio * math.cos(math.radians(geometry.contact_angle_deg))
    return FaultFrequencies(
        shaft_hz=shaft_hz,
        ftf_hz=shaft_hz / 2.0 * (1.0 - ratio_c),
        bsf_hz=shaft_hz / ratio * (1.0 - ratio_c**2),
        bpfo_hz=geometry.n_balls * shaft_hz / 2.0 * (1.0 - ratio_c),
        bpfi_hz=geometry.n_balls * shaft_hz / 2.0 * (1.0 + ratio_c),
    )


def _as_signal(samples: npt.ArrayLike, sample_rate_hz: float, who: str) -> FloatArray:
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise SpectrumError(f"{who}: samples has shape {x.shape}, expected 1-D with >= 2 values")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise SpectrumError(f"{who}: sample {bad} is {x[bad]}, expected a finite value")
    if not (math.isfinite(sample_rate_hz) and sample_rate_hz > 0):
        raise SpectrumError(f"{who}: sample_rate_hz={sample_rate_hz}, expected > 0")
    return x


def amplitude_spectrum(
    samples: npt.ArrayLike,
    *,
    sample_rate_hz: float,
    window: WindowName = "hann",
) -> tuple[FloatArray, FloatArray]:
    """Single-sided amplitude spectrum: a sine of amplitude A at a bin centre reads A.

    The mean is removed, the window's coherent gain is divided out, and bins other than DC and
    Nyquist are doubled. Resolution is ``sample_rate_hz / len(samples)``.
    """
    x = _as_signal(samples, sample_rate_hz, "amplitude_spectrum")
    x = x - x.mean()
    taper = signal.get_window(window, x.size, fftbins=True)
    spectrum = np.asarray(np.abs(np.fft.rfft(x * taper)) / taper.sum(), dtype=np.float64)
    spectrum[1 : (x.size + 1) // 2] *= 2.0
    freq_hz = np.asarray(np.fft.rfftfreq(x.size, d=1.0 / sample_rate_hz), dtype=np.float64)
    return freq_hz, spectrum


def envelope_spectrum(
    samples: npt.ArrayLike,
    *,
    sample_rate_hz: float,
    band_hz: tuple[float, float] | None = None,
    window: WindowName = "hann",
) -> tuple[FloatArray, FloatArray]:
    """Amplitude spectrum of the Hilbert envelope ``|x + i·H(x)|`` (envelope analysis).

    ``band_hz`` band-passes first (4th-order Butterworth, zero phase) around the resonance the
    impacts excite; ``None`` uses the full band, which suffices for the CWRU drive-end records.
    """
    x = _as_signal(samples, sample_rate_hz, "envelope_spectrum")
    x = x - x.mean()
    if band_hz is not None:
        low, high = band_hz
        if not 0 < low < high < sample_rate_hz / 2:
            raise SpectrumError(
                f"envelope_spectrum: band_hz={band_hz}, expected 0 < low < high < "
                f"{sample_rate_hz / 2} (Nyquist)"
            )
        sos = signal.butter(4, [low, high], btype="bandpass", fs=sample_rate_hz, output="sos")
        x = signal.sosfiltfilt(sos, x)
    envelope = np.abs(signal.hilbert(x))
    return amplitude_spectrum(envelope, sample_rate_hz=sample_rate_hz, window=window)


def _match_targets(
    peak_hz: FloatArray, fault_freqs: Mapping[str, float], max_harmonic: int, tolerance_hz: float
) -> tuple[list[str | None], list[str | None], list[int | None], list[float | None]]:
    names = list(fault_freqs)
    if not names:
        none: list[None] = [None] * peak_hz.size
        return list(none), list(none), list(none), list(none)
    base = np.array([fault_freqs[n] for n in names], dtype=np.float64)
    harmonics = np.arange(1, max_harmonic + 1)
    targets = (base[:, None] * harmonics[None, :]).ravel()  # (faults × harmonics)
    order = np.tile(harmonics, base.size).astype(np.float64)  # harmonic of each target
    distance = np.abs(peak_hz[:, None] - targets[None, :])  # (peaks, targets)
    within = distance <= tolerance_hz * order[None, :]
    # A harmonic goes preferably to a family whose fundamental is itself a peak: at 1797 rpm
    # 323 Hz is 2xBPFI (324.4) on an inner-race record and 3xBPFO (322.1) on an outer-race one.
    fundamental_seen = within[:, order == 1].any(axis=0)  # (faults,)
    unseen = np.repeat(~fundamental_seen, max_harmonic).astype(np.float64)
    cost = np.where(within, unseen[None, :] * 1e9 + distance, np.inf)
    best = np.argmin(cost, axis=1)
    hit = within[np.arange(peak_hz.size), best]
    fault: list[str | None] = []
    match: list[str | None] = []
    harmonic: list[int | None] = []
    target: list[float | None] = []
    for ok, idx in zip(hit, best, strict=True):
        if not ok:
            fault.append(None)
            match.append(None)
            harmonic.append(None)
            target.append(None)
            continue
        name, k = names[idx // max_harmonic], int(harmonics[idx % max_harmonic])
        fault.append(name)
        match.append(name if k == 1 else f"{k}x{name}")
        harmonic.append(k)
        target.append(float(targets[idx]))
    return match, fault, harmonic, target


def mark_fault_peaks(
    freq_hz: npt.ArrayLike,
    amplitude: npt.ArrayLike,
    *,
    fault_freqs: Mapping[str, float],
    tolerance_hz: float = 2.0,
    baseline_window_hz: float = 20.0,
    factor: float = 3.0,
    max_harmonic: int = 3,
    min_freq_hz: float = 5.0,
    max_freq_hz: float | None = None,
) -> pl.DataFrame:
    """Peaks standing above a running-median baseline, each matched to a fault line.

    The baseline is a median filter ``baseline_window_hz`` wide (robust to the peaks
    themselves). A peak is a local maximum in ``[min_freq_hz, max_freq_hz]`` with
    ``amplitude > factor × baseline``. Each peak gets the nearest of ``k × f`` for
    ``f`` in ``fault_freqs`` and ``k`` in ``1..max_harmonic`` within ``k × tolerance_hz`` (a
    speed error grows with the harmonic); when several lines qualify, a family whose
    fundamental is itself among the peaks wins, then the nearest line. ``match`` reads like
    ``"BPFI"`` or ``"2xBPFI"`` (null when none). Sorted by descending ``ratio_to_baseline``.
    Columns: see ``PEAK_SCHEMA``.
    """
    f = np.asarray(freq_hz, dtype=np.float64)
    a = np.asarray(amplitude, dtype=np.float64)
    if f.ndim != 1 or f.shape != a.shape or f.size < 3:
        raise SpectrumError(
            f"mark_fault_peaks: freq_hz {f.shape} and amplitude {a.shape} must be equal 1-D "
            "arrays of >= 3 bins"
        )
    for name, value in fault_freqs.items():
        if not (math.isfinite(value) and value > 0):
            raise SpectrumError(f"mark_fault_peaks: fault_freqs[{name!r}]={value}, expected > 0")
    if max_harmonic < 1 or tolerance_hz < 0 or factor <= 0:
        raise SpectrumError(
            f"mark_fault_peaks: max_harmonic={max_harmonic}, tolerance_hz={tolerance_hz}, "
            f"factor={factor}; expected >= 1, >= 0, > 0"
        )
    df_hz = float(np.median(np.diff(f)))
    size = max(3, round(baseline_window_hz / df_hz) | 1)
    baseline = ndimage.median_filter(a, size=size, mode="nearest")
    peaks, _ = signal.find_peaks(a)
    upper = np.inf if max_freq_hz is None else max_freq_hz
    keep = (f[peaks] >= min_freq_hz) & (f[peaks] <= upper)
    keep &= a[peaks] > factor * np.maximum(baseline[peaks], np.finfo(np.float64).tiny)
    peaks = peaks[keep]
    match, fault, harmonic, target = _match_targets(
        f[peaks], fault_freqs, max_harmonic, tolerance_hz
    )
    frame = pl.DataFrame(
        {
            "freq_hz": f[peaks],
            "amplitude": a[peaks],
            "baseline": baseline[peaks],
            "ratio_to_baseline": a[peaks] / baseline[peaks],
            "match": match,
            "fault": fault,
            "harmonic": harmonic,
            "target_hz": target,
        },
        schema={k: v for k, v in PEAK_SCHEMA.items() if k != "offset_hz"},
    )
    return frame.with_columns(offset_hz=pl.col("freq_hz") - pl.col("target_hz")).sort(
        "ratio_to_baseline", descending=True
    )
