"""Bearing band-energy rule: synthetic impacts, rule validation, and the CWRU records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from geofence.bearing import (
    DEFAULT_RULE,
    BandRule,
    evaluate_bearing,
    sliding_windows,
)
from geofence.spectrum import SKF_6205_2RS, SpectrumError, fault_frequencies_hz
from tests.geofence.test_spectrum import CWRU_SLICES, FS_HZ, make_impacts


def test_sliding_windows_shape_and_short_record() -> None:
    x = np.arange(12_000, dtype=np.float64)
    w = sliding_windows(x, sample_rate_hz=FS_HZ, window_s=0.5, step_s=0.25)
    assert w.shape == (3, 6_000)
    assert w[1, 0] == 3_000
    short = sliding_windows(x[:100], sample_rate_hz=FS_HZ, window_s=0.5, step_s=0.25)
    assert short.shape == (1, 100)


@pytest.mark.parametrize(
    ("band", "expected"),
    [("BPFI", "BPFI"), ("BPFO", "BPFO"), ("BSF", "BSF")],
)
def test_impacts_at_a_fault_line_cross_that_band(band: str, expected: str) -> None:
    rate = fault_frequencies_hz(1797, SKF_6205_2RS).as_mapping()[band]
    verdict = evaluate_bearing(
        make_impacts(rate), sample_rate_hz=FS_HZ, rpm=1797, geometry=SKF_6205_2RS
    )
    assert verdict.band == expected
    assert verdict.windows_over[expected] == 3
    assert verdict.rule == "bearing_band_energy"
    assert verdict.rule_version == "1"


def test_noise_crosses_nothing_and_evidence_is_json_ready() -> None:
    noise = np.random.default_rng(3).normal(0, 1.0, 12_000)
    verdict = evaluate_bearing(noise, sample_rate_hz=FS_HZ, rpm=1797, geometry=SKF_6205_2RS)
    assert verdict.crossed == ()
    assert verdict.band is None
    evidence = verdict.evidence()
    spectrum = evidence["spectrum"]
    assert isinstance(spectrum, dict)
    assert max(spectrum["freq_hz"]) <= DEFAULT_RULE.max_spectrum_hz
    assert len(spectrum["freq_hz"]) == len(spectrum["amplitude"])
    assert set(evidence["window_ratios"]) == {"BPFI", "BPFO", "BSF"}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bands": ("BPFX",)}, "bands=\\['BPFX'\\]"),
        ({"window_s": 0.0}, "window_s=0.0"),
        ({"min_windows": 0}, "min_windows=0"),
        ({"baseline_window_hz": 3.0}, "baseline_window_hz=3.0"),
    ],
)
def test_band_rule_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SpectrumError, match=message):
        BandRule(**kwargs)  # type: ignore[arg-type]


def test_evaluate_rejects_bad_rpm_and_label() -> None:
    with pytest.raises(SpectrumError, match="rpm=0"):
        evaluate_bearing(np.ones(100), sample_rate_hz=FS_HZ, rpm=0, geometry=SKF_6205_2RS)
    assert BandRule(version="2").label == "bearing_band_energy@2"


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("record", "band"),
    [("IR007", "BPFI"), ("IR021", "BPFI"), ("OR007", "BPFO"), ("B007", None)],
)
def test_cwru_records_cross_the_seeded_band(realdata: Path, record: str, band: str | None) -> None:
    name, rpm = CWRU_SLICES[record]
    samples = pl.read_csv(realdata / "cwru_bearing_12k_slices" / name)["DE_g"].to_numpy()
    verdict = evaluate_bearing(samples, sample_rate_hz=FS_HZ, rpm=rpm, geometry=SKF_6205_2RS)
    print(f"\nCWRU {record}: peak band ratios {verdict.peak_ratio}, crossed {verdict.crossed}")
    assert verdict.band == band
    if band is None:  # the ball fault: nothing at the inner- or outer-race band
        assert "BPFI" not in verdict.crossed
        assert "BPFO" not in verdict.crossed
    else:
        assert verdict.crossed == (band,)
        assert verdict.peak_ratio[band] >= 5 * DEFAULT_RULE.min_ratio
