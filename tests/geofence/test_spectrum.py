"""Bearing fault frequencies, spectra, peak marking, and the CWRU 12 kHz drive-end records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
import scipy.io

from geofence.errors import GeofenceError
from geofence.spectrum import (
    PEAK_SCHEMA,
    SKF_6205_2RS,
    BearingGeometry,
    SpectrumError,
    amplitude_spectrum,
    envelope_spectrum,
    fault_frequencies_hz,
    mark_fault_peaks,
)

FloatArray = npt.NDArray[np.float64]
FS_HZ = 12_000.0


# --------------------------------------------------------------------------- builders


def make_tone(
    freqs_amps: list[tuple[float, float]], *, seconds: float = 1.0, fs_hz: float = FS_HZ
) -> FloatArray:
    t = np.arange(int(seconds * fs_hz)) / fs_hz
    return np.asarray(sum(a * np.sin(2 * np.pi * f * t) for f, a in freqs_amps), dtype=np.float64)


def make_impacts(
    rate_hz: float, *, resonance_hz: float = 3000.0, seconds: float = 1.0, noise: float = 0.05
) -> FloatArray:
    """Decaying resonance bursts repeating at ``rate_hz`` (a bearing defect), plus noise."""
    t = np.arange(int(seconds * FS_HZ)) / FS_HZ
    phase = np.mod(t, 1.0 / rate_hz)
    burst = np.exp(-phase * 800.0) * np.sin(2 * np.pi * resonance_hz * phase)
    return np.asarray(burst + np.random.default_rng(1).normal(0, noise, t.size), dtype=np.float64)


# --------------------------------------------------------------------------- fault frequencies


@pytest.mark.parametrize(
    ("rpm", "field", "expected_hz"),
    [
        (1797, "shaft_hz", 29.95),
        (1797, "bpfi_hz", 162.2),  # CWRU table: 5.4152 × shaft
        (1797, "bpfo_hz", 107.4),  # 3.5848 × shaft
        (1797, "bsf_hz", 141.2),  # 4.7135 × shaft (ball-defect convention)
        (1797, "ftf_hz", 11.9),  # 0.39828 × shaft
        (1796, "bpfo_hz", 107.3),
        (0, "bpfi_hz", 0.0),
    ],
)
def test_fault_frequencies_match_cwru_table(rpm: float, field: str, expected_hz: float) -> None:
    freqs = fault_frequencies_hz(rpm, SKF_6205_2RS)
    assert getattr(freqs, field) == pytest.approx(expected_hz, abs=0.06)


def test_fault_frequencies_contact_angle_and_mapping() -> None:
    angled = BearingGeometry(
        n_balls=9, ball_diameter_mm=7.94, pitch_diameter_mm=39.04, contact_angle_deg=40.0
    )
    flat = fault_frequencies_hz(1800, SKF_6205_2RS)
    tilted = fault_frequencies_hz(1800, angled)
    assert tilted.bpfi_hz < flat.bpfi_hz
    assert tilted.bpfo_hz > flat.bpfo_hz
    assert flat.bpfi_hz + flat.bpfo_hz == pytest.approx(9 * flat.shaft_hz)
    assert set(flat.as_mapping()) == {"shaft", "FTF", "BSF", "BPFO", "BPFI"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_balls": 0, "ball_diameter_mm": 7.0, "pitch_diameter_mm": 39.0}, "n_balls=0"),
        (
            {"n_balls": 9, "ball_diameter_mm": 40.0, "pitch_diameter_mm": 39.0},
            "ball_diameter_mm=40.0",
        ),
    ],
)
def test_bearing_geometry_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(SpectrumError, match=message) as info:
        BearingGeometry(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, GeofenceError)
    assert isinstance(info.value, ValueError)


def test_fault_frequencies_reject_negative_rpm() -> None:
    with pytest.raises(SpectrumError, match="rpm=-5"):
        fault_frequencies_hz(-5, SKF_6205_2RS)


# --------------------------------------------------------------------------- spectra


@pytest.mark.parametrize("window", ["hann", "hamming", "blackman", "boxcar"])
def test_amplitude_spectrum_reads_sine_amplitude(window: str) -> None:
    freq, amp = amplitude_spectrum(
        make_tone([(50.0, 2.0), (1200.0, 0.5)]) + 3.0,
        sample_rate_hz=FS_HZ,
        window=window,  # type: ignore[arg-type]
    )
    assert freq[1] == pytest.approx(1.0)
    assert freq[-1] == pytest.approx(6000.0)
    assert amp[np.argmin(np.abs(freq - 50))] == pytest.approx(2.0, rel=1e-3)
    assert amp[np.argmin(np.abs(freq - 1200))] == pytest.approx(0.5, rel=1e-3)
    assert amp[0] < 1e-9  # mean removed


def test_envelope_spectrum_recovers_impact_rate() -> None:
    samples = make_impacts(107.0)
    for band in (None, (2000.0, 4000.0)):
        freq, amp = envelope_spectrum(samples, sample_rate_hz=FS_HZ, band_hz=band)
        in_band = (freq > 20) & (freq < 500)
        assert freq[in_band][np.argmax(amp[in_band])] == pytest.approx(107.0, abs=1.0)
    plain_freq, plain_amp = amplitude_spectrum(samples, sample_rate_hz=FS_HZ)
    assert (
        abs(plain_freq[np.argmax(plain_amp)] - 107.0) > 1000
    )  # the raw spectrum shows the resonance


@pytest.mark.parametrize(
    ("samples", "kwargs", "message"),
    [
        (np.zeros((3, 3)), {}, r"samples has shape \(3, 3\)"),
        (np.array([0.0, np.nan, 1.0]), {}, "sample 1 is nan"),
        (np.zeros(10), {"sample_rate_hz": 0.0}, "sample_rate_hz=0.0"),
        (np.zeros(100), {"band_hz": (10.0, 7000.0)}, r"band_hz=\(10.0, 7000.0\)"),
    ],
)
def test_spectrum_input_errors(
    samples: FloatArray, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"sample_rate_hz": FS_HZ} | kwargs
    with pytest.raises(SpectrumError, match=message):
        envelope_spectrum(samples, **args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- peak marking

FAULTS = {"BPFO": 107.4, "BPFI": 162.2}


@pytest.mark.parametrize(
    ("tones", "expected_matches"),
    [
        ([(162.0, 1.0)], {162.0: "BPFI"}),
        ([(107.0, 1.0), (215.0, 0.5)], {107.0: "BPFO", 215.0: "2xBPFO"}),
        ([(324.0, 1.0)], {324.0: "2xBPFI"}),  # no fundamental seen: the nearest line wins
        # 323 Hz is 2xBPFI (324.4) and 3xBPFO (322.2) within tolerance: the family whose
        # fundamental is present takes it.
        ([(162.0, 1.0), (323.0, 0.5)], {162.0: "BPFI", 323.0: "2xBPFI"}),
        ([(107.0, 1.0), (323.0, 0.5)], {107.0: "BPFO", 323.0: "3xBPFO"}),
        ([(250.0, 1.0)], {250.0: None}),  # a peak above baseline that matches nothing
        ([(166.0, 1.0)], {166.0: None}),  # outside the ±2 Hz tolerance
        ([], {}),
    ],
)
def test_mark_fault_peaks_table(
    tones: list[tuple[float, float]], expected_matches: dict[float, str | None]
) -> None:
    rng = np.random.default_rng(5)
    samples = make_tone(tones) + rng.normal(0, 0.01, int(FS_HZ))
    freq, amp = amplitude_spectrum(samples, sample_rate_hz=FS_HZ)
    peaks = mark_fault_peaks(freq, amp, fault_freqs=FAULTS, tolerance_hz=2.0, factor=10.0)
    assert peaks.schema == pl.Schema(PEAK_SCHEMA)
    assert dict(zip(peaks["freq_hz"], peaks["match"], strict=True)) == expected_matches
    assert (peaks["ratio_to_baseline"] > 10).all()


def test_mark_fault_peaks_respects_frequency_limits_and_empty_faults() -> None:
    noise = np.random.default_rng(2).normal(0, 0.01, int(FS_HZ))
    samples = make_tone([(3.0, 1.0), (162.0, 1.0), (900.0, 1.0)]) + noise
    freq, amp = amplitude_spectrum(samples, sample_rate_hz=FS_HZ)
    peaks = mark_fault_peaks(
        freq, amp, fault_freqs={}, factor=10.0, min_freq_hz=5.0, max_freq_hz=600.0
    )
    assert peaks["freq_hz"].to_list() == [162.0]
    assert peaks["match"].to_list() == [None]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fault_freqs": {"BPFI": -1.0}}, r"fault_freqs\['BPFI'\]=-1.0"),
        ({"fault_freqs": FAULTS, "max_harmonic": 0}, "max_harmonic=0"),
    ],
)
def test_mark_fault_peaks_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SpectrumError, match=message):
        mark_fault_peaks(np.arange(10.0), np.ones(10), **kwargs)  # type: ignore[arg-type]


def test_mark_fault_peaks_shape_error() -> None:
    with pytest.raises(SpectrumError, match="must be equal 1-D"):
        mark_fault_peaks(np.arange(10.0), np.ones(9), fault_freqs=FAULTS)


# --------------------------------------------------------------------------- real data

CWRU_SLICES = {
    "IR007": ("IR007_0_X105_first1s.csv", 1797),
    "IR021": ("IR021_0_X209_first1s.csv", 1797),
    "OR007": ("OR007_centered_at_6_0_X130_first1s.csv", 1796),
    "B007": ("B007_0_X118_first1s.csv", 1796),
}


def cwru_envelope_peaks(samples: FloatArray, rpm: float) -> pl.DataFrame:
    freq, amp = envelope_spectrum(samples, sample_rate_hz=FS_HZ)
    faults = fault_frequencies_hz(rpm, SKF_6205_2RS).as_mapping()
    return mark_fault_peaks(
        freq,
        amp,
        fault_freqs=faults,
        tolerance_hz=2.0,
        factor=10.0,
        max_harmonic=5,
        max_freq_hz=600.0,
    )


def strongest(peaks: pl.DataFrame, match: str) -> tuple[float, float] | None:
    rows = peaks.filter(pl.col("match") == match)
    return None if rows.is_empty() else (rows["freq_hz"][0], rows["ratio_to_baseline"][0])


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("record", "must_mark", "must_not_mark"),
    [
        ("IR007", "BPFI", "BPFO"),
        ("IR021", "BPFI", "BPFO"),
        ("OR007", "BPFO", "BPFI"),
        # Ball fault: a weak 162 Hz envelope line (ratio ≈ 6.7) stays below factor 10 and no BSF
        # line stands out either: the ball fault does not show clearly (a known CWRU trait).
        ("B007", None, "BPFI"),
    ],
)
def test_cwru_envelope_marks_the_seeded_fault(
    realdata: Path, record: str, must_mark: str | None, must_not_mark: str
) -> None:
    name, rpm = CWRU_SLICES[record]
    samples = pl.read_csv(realdata / "cwru_bearing_12k_slices" / name)["DE_g"].to_numpy()
    assert samples.size == 12_000
    peaks = cwru_envelope_peaks(samples, rpm)
    found = {m: strongest(peaks, m) for m in ("BPFI", "BPFO", "BSF", "shaft")}
    print(f"\nCWRU {record} @ {rpm} rpm, DE 1 s envelope: (Hz, ratio) {found}")
    print(peaks.head(6).select("freq_hz", "ratio_to_baseline", "match"))
    if must_mark is not None:
        hit = found[must_mark]
        assert hit is not None
        target = fault_frequencies_hz(rpm, SKF_6205_2RS).as_mapping()[must_mark]
        assert abs(hit[0] - target) <= 2.0
        assert hit[1] >= 20.0
        assert peaks["match"][0] == must_mark  # the strongest envelope line
    assert found[must_not_mark] is None
    if record == "B007":
        assert found["BSF"] is None


@pytest.mark.realdata
def test_cwru_full_mat_record_inner_race(realdata: Path) -> None:
    mat = scipy.io.loadmat(str(realdata / "cwru_bearing_12k_slices" / "IR007_0_full_original.mat"))
    samples = np.asarray(mat["X105_DE_time"][:, 0], dtype=np.float64)
    rpm = float(mat["X105RPM"][0, 0])
    assert samples.size == 121_265
    assert rpm == 1797
    peaks = cwru_envelope_peaks(samples, rpm)
    hit = strongest(peaks, "BPFI")
    print(f"\nCWRU IR007 full .mat ({samples.size} samples): BPFI peak (Hz, ratio) {hit}")
    assert hit is not None
    assert abs(hit[0] - 161.7) < 0.3
    assert hit[1] > 100
    assert peaks["match"][0] == "BPFI"
    assert strongest(peaks, "2xBPFI") is not None
