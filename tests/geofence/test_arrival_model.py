"""The verdicts' position model: closed forms against brute-force integration, and its shape."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geofence.arrival_model import (
    ErrorModel,
    ar1_factor,
    hermite_misjudgement,
    position_probabilities,
    stop_sigma_m,
)
from geofence.errors import ThresholdError

MODEL = ErrorModel()


def _brute_force(d: float, sigma: float, model: ErrorModel, site_r: float) -> tuple[float, float]:
    """Posterior masses within 5 m and ``site_r`` on a fine polar grid over the true position
    (prior density × Gaussian likelihood of evidence at (d, 0)); independent of the closed
    forms."""
    r = np.concatenate([np.linspace(0, 60, 1200), np.linspace(60, model.away_radius_m, 1500)])
    r = np.unique(r)
    theta = np.linspace(0, 2 * np.pi, 361)[:-1]
    rr, tt = np.meshgrid(r, theta, indexing="ij")
    x, y = rr * np.cos(tt), rr * np.sin(tt)
    door2 = model.door_sigma_m**2
    prior = (
        model.prior_at_door * np.exp(-(rr**2) / (2 * door2)) / (2 * np.pi * door2)
        + model.prior_on_site * (rr <= site_r) / (np.pi * site_r**2)
        + model.prior_away * (rr <= model.away_radius_m) / (np.pi * model.away_radius_m**2)
    )
    like = np.exp(-((x - d) ** 2 + y**2) / (2 * sigma**2))
    dens = prior * like * rr  # polar area element r dr dθ
    ring = np.trapezoid(dens, theta, axis=1) + dens[:, 0] * (theta[1] - theta[0])
    cum = np.concatenate([[0.0], np.cumsum(np.diff(r) * (ring[1:] + ring[:-1]) / 2)])
    total = cum[-1]
    return float(np.interp(5.0, r, cum) / total), float(np.interp(site_r, r, cum) / total)


@pytest.mark.parametrize(
    ("d", "sigma"),
    [(0.5, 3.4), (6.0, 3.4), (12.0, 3.4), (20.0, 4.0), (30.0, 8.0), (45.0, 10.0), (4.9, 0.6)],
)
def test_closed_form_matches_brute_force(d: float, sigma: float) -> None:
    p_in, p_site = position_probabilities(
        np.array([d]), np.array([sigma]), radius_m=5.0, site_radius_m=25.0, model=MODEL
    )
    want_in, want_site = _brute_force(d, sigma, MODEL, 25.0)
    assert p_in[0] == pytest.approx(want_in, abs=0.003)
    assert p_site[0] == pytest.approx(want_site, abs=0.003)


def test_no_evidence_gives_the_prior_and_impossible_evidence_gives_zero() -> None:
    p_in, p_site = position_probabilities(
        np.array([np.nan, 3.0, 5_000.0]),
        np.array([3.0, np.nan, 3.0]),
        radius_m=5.0,
        site_radius_m=25.0,
        model=MODEL,
    )
    prior_in = MODEL.prior_at_door * (1 - math.exp(-12.5)) + 0.02 * (5 / 25) ** 2 + 0.03 * 25e-6
    assert p_in[:2] == pytest.approx([prior_in, prior_in])
    assert p_site[:2] == pytest.approx([0.95 + 0.02 + 0.03 * 625e-6] * 2)
    assert (p_in[2], p_site[2]) == (0.0, 0.0)


def test_probabilities_fall_with_distance_and_within_never_exceeds_on_site() -> None:
    d = np.linspace(0.0, 200.0, 401)
    p_in, p_site = position_probabilities(
        d, np.full_like(d, 3.4), radius_m=5.0, site_radius_m=25.0, model=MODEL
    )
    assert np.all(np.diff(p_in) <= 1e-9)
    assert np.all(np.diff(p_site) <= 1e-9)
    assert np.all(p_in <= p_site + 1e-12)
    assert p_site[0] > 0.999
    assert p_site[-1] < 1e-6


def test_mixture_weights_average_the_components() -> None:
    d = np.array([40.0])
    one = position_probabilities(
        d, np.array([[4.0, 12.0]]), radius_m=5.0, site_radius_m=25.0, model=MODEL,
        weights=np.array([0.5, 0.5]),
    )  # fmt: skip
    assert 0.0 < one[1][0] < 1.0  # neither the tight nor the loose σ alone
    factors, weights = hermite_misjudgement(MODEL)
    assert weights.sum() == pytest.approx(1.0)
    # E[exp(-η)²] of the lognormal: the quadrature integrates it exactly enough
    assert (weights * factors**2).sum() == pytest.approx(math.exp(2 * 0.35**2), rel=1e-6)


@pytest.mark.parametrize(("n", "want"), [(1, 1.0), (3, math.sqrt(2.74)), (10_000, math.sqrt(19))])
def test_ar1_factor(n: int, want: float) -> None:
    assert ar1_factor(np.array([float(n)]), 0.9)[0] == pytest.approx(want, rel=2e-3)
    assert ar1_factor(np.array([float(n)]), 0.0)[0] == 1.0


def test_stop_sigma_keeps_the_bias_however_many_fixes() -> None:
    s = stop_sigma_m(np.array([0.0, 0.5]), np.array([500.0, 500.0]), MODEL)
    assert s[0] == pytest.approx(8.0 / math.sqrt(6.0))
    assert s[1] > s[0]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ar1_phi": 1.0}, "ar1_phi"),
        ({"bias_max_m": -1.0}, "bias_max_m"),
        ({"away_radius_m": 0.0}, "away_radius_m"),
        ({"prior_at_door": 0.9, "prior_on_site": 0.2}, "prior_at_door"),
    ],
)
def test_bad_model_parameters_are_named(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ThresholdError, match=field):
        ErrorModel(**kwargs)
