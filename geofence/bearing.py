"""Bearing band-energy rule: does a vibration record cross a fault band (BPFI, BPFO, BSF)?

Pure numpy: samples in, a ``BandVerdict`` out. The rule, in order:

1. ``sliding_windows``  – cut the raw signal into windows of ``window_s`` every ``step_s``.
2. ``band_energies``    – per window, the envelope spectrum (``geofence.spectrum``) as power;
   each band's energy is the power within ``± half_width_hz`` of its fault line, and its
   baseline is the running median power (``baseline_window_hz`` wide) over the same bins.
   ``ratio = energy / baseline`` (dimensionless; a clean line stands at ~1).
3. ``evaluate_bearing`` – a band *crosses* when its ratio reaches ``min_ratio`` in at least
   ``min_windows`` windows. The verdict names the crossed bands (strongest first) and keeps the
   evidence: every window's band values and the envelope spectrum of the strongest window.

Only fundamentals count: harmonics of different faults overlap (at 1797 rpm 2×BPFI ≈ 3×BPFO),
so the fundamental keeps the bands exclusive. On the CWRU 12 kHz drive-end records the ratio
at the seeded fault's line is 350–1,200 and at the other lines ≤ 8 (ball fault included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from geofence.spectrum import (
    BearingGeometry,
    SpectrumError,
    envelope_spectrum,
    fault_frequencies_hz,
)

FloatArray = npt.NDArray[np.float64]

BANDS: Final = ("BPFI", "BPFO", "BSF")


@dataclass(frozen=True, slots=True)
class BandRule:
    """A named, versioned threshold rule on bearing band energy (see module doc)."""

    name: str = "bearing_band_energy"
    version: str = "1"
    bands: tuple[str, ...] = BANDS
    window_s: float = 0.5
    step_s: float = 0.25
    half_width_hz: float = 2.0
    baseline_window_hz: float = 20.0
    min_ratio: float = 50.0
    min_windows: int = 2
    max_spectrum_hz: float = 600.0

    def __post_init__(self) -> None:
        unknown = [b for b in self.bands if b not in BANDS]
        if unknown:
            raise SpectrumError(f"BandRule {self.name}: bands={unknown}, expected some of {BANDS}")
        checks = {
            "window_s": self.window_s > 0,
            "step_s": self.step_s > 0,
            "half_width_hz": self.half_width_hz > 0,
            "baseline_window_hz": self.baseline_window_hz > 2 * self.half_width_hz,
            "min_ratio": self.min_ratio > 0,
            "min_windows": self.min_windows >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise SpectrumError(
                    f"BandRule {self.name}: {name}={getattr(self, name)} is out of range"
                )

    @property
    def label(self) -> str:
        """``name@version``, the rule as a ticket records it."""
        return f"{self.name}@{self.version}"


DEFAULT_RULE: Final = BandRule()


@dataclass(frozen=True, slots=True)
class BandVerdict:
    """Which bands crossed, and the evidence: band values per window and one spectrum."""

    rule: str
    rule_version: str
    crossed: tuple[str, ...]  # strongest first; empty when nothing crossed
    fault_hz: dict[str, float]
    window_ratios: dict[str, list[float]]  # band -> ratio per window
    peak_ratio: dict[str, float]
    windows_over: dict[str, int]
    strongest_window: int
    spectrum_hz: list[float] = field(repr=False)
    spectrum_amplitude: list[float] = field(repr=False)

    @property
    def band(self) -> str | None:
        """The band a ticket is marked at (the strongest crossed band), or None."""
        return self.crossed[0] if self.crossed else None

    def evidence(self) -> dict[str, object]:
        """JSON-ready evidence: rule, band values per window, and the envelope spectrum."""
        return {
            "rule": self.rule,
            "rule_version": self.rule_version,
            "crossed": list(self.crossed),
            "fault_hz": self.fault_hz,
            "window_ratios": self.window_ratios,
            "peak_ratio": self.peak_ratio,
            "windows_over": self.windows_over,
            "strongest_window": self.strongest_window,
            "spectrum": {"freq_hz": self.spectrum_hz, "amplitude": self.spectrum_amplitude},
        }


def sliding_windows(
    samples: npt.ArrayLike, *, sample_rate_hz: float, window_s: float, step_s: float
) -> FloatArray:
    """Windows of ``window_s`` every ``step_s`` as a 2-D view (windows × samples).

    A record shorter than one window gives one window of the whole record."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise SpectrumError(f"sliding_windows: samples has shape {x.shape}, expected 1-D >= 2")
    size = min(x.size, max(2, round(window_s * sample_rate_hz)))
    step = max(1, round(step_s * sample_rate_hz))
    starts = np.arange(0, x.size - size + 1, step)
    return np.asarray(x[starts[:, None] + np.arange(size)[None, :]], dtype=np.float64)


def band_energies(
    freq_hz: FloatArray,
    amplitude: FloatArray,
    fault_hz: dict[str, float],
    *,
    half_width_hz: float,
    baseline_window_hz: float,
) -> dict[str, float]:
    """Band energy over the running-median baseline energy, per band (see module doc)."""
    power = amplitude**2
    df_hz = float(freq_hz[1] - freq_hz[0])
    size = max(3, round(baseline_window_hz / df_hz) | 1)
    baseline = ndimage.median_filter(power, size=size, mode="nearest")
    tiny = np.finfo(np.float64).tiny
    out: dict[str, float] = {}
    for band, hz in fault_hz.items():
        in_band = np.abs(freq_hz - hz) <= max(half_width_hz, df_hz / 2)
        out[band] = float(power[in_band].sum() / max(float(baseline[in_band].sum()), tiny))
    return out


def evaluate_bearing(
    samples: npt.ArrayLike,
    *,
    sample_rate_hz: float,
    rpm: float,
    geometry: BearingGeometry,
    rule: BandRule = DEFAULT_RULE,
) -> BandVerdict:
    """Apply ``rule`` to one raw vibration record (see module doc)."""
    if not (math.isfinite(rpm) and rpm > 0):
        raise SpectrumError(f"evaluate_bearing: rpm={rpm}, expected a finite value > 0")
    faults = fault_frequencies_hz(rpm, geometry).as_mapping()
    fault_hz = {b: faults[b] for b in rule.bands}
    windows = sliding_windows(
        samples, sample_rate_hz=sample_rate_hz, window_s=rule.window_s, step_s=rule.step_s
    )
    ratios: dict[str, list[float]] = {b: [] for b in rule.bands}
    spectra: list[tuple[FloatArray, FloatArray]] = []
    for window in windows:
        freq, amp = envelope_spectrum(window, sample_rate_hz=sample_rate_hz)
        spectra.append((freq, amp))
        values = band_energies(
            freq,
            amp,
            fault_hz,
            half_width_hz=rule.half_width_hz,
            baseline_window_hz=rule.baseline_window_hz,
        )
        for band, value in values.items():
            ratios[band].append(round(value, 3))
    peak = {b: max(v) for b, v in ratios.items()}
    over = {b: sum(r >= rule.min_ratio for r in v) for b, v in ratios.items()}
    crossed = tuple(
        sorted((b for b in rule.bands if over[b] >= rule.min_windows), key=lambda b: -peak[b])
    )
    lead = crossed[0] if crossed else max(peak, key=lambda b: peak[b])
    strongest = int(np.argmax(ratios[lead]))
    freq, amp = spectra[strongest]
    keep = freq <= rule.max_spectrum_hz
    return BandVerdict(
        rule=rule.name,
        rule_version=rule.version,
        crossed=crossed,
        fault_hz={b: round(hz, 3) for b, hz in fault_hz.items()},
        window_ratios=ratios,
        peak_ratio=peak,
        windows_over=over,
        strongest_window=strongest,
        spectrum_hz=[round(float(f), 3) for f in freq[keep]],
        spectrum_amplitude=[float(a) for a in amp[keep]],
    )
