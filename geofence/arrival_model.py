"""The stated position model behind the arrival verdicts' probabilities (pure, vectorized).

Question: where was the technician (true position ``x``, metres from the customer point) when
they tapped "arrived"? Answer: ``P(|x| <= radius_m)`` and ``P(|x| <= site_radius_m)`` given one
piece of evidence ``e`` at distance ``d`` from the customer point.

Evidence error ``e - x`` (isotropic 2D Gaussian, per-axis standard deviation ``tau``):

* **Stop centroid** (``centroid_se_m`` = ``se`` over ``n`` fixes): an unknown per-visit
  multipath bias plus the centroid's noise. The bias is modelled as a Gaussian with the second
  moment of a uniform 0-``bias_max_m`` magnitude (per axis ``bias_max_m / sqrt(6)``), because
  every fix of one stationary spell shares it and no amount of averaging removes it. The noise
  is AR(1) with coefficient ``ar1_phi`` per fix, so the independent-fix ``se`` understates it by
  ``ar1_factor(n)``: ``tau² = (bias_max_m²/6) + (ar1_factor(n)·se)² / 2``.
* **GPS fix** (reported ``accuracy_m``): the receiver's 68 % radius of its whole error
  (bias included), misjudged by a lognormal factor ``exp(N(0, accuracy_misjudgement_sigma²))``:
  ``tau = accuracy_m·exp(-η) / 1.51``, integrated over η by Gauss-Hermite quadrature. With
  σ = 0.35 the true error exceeds the reported accuracy about a third of the time.
* **UWB** (``error_m``, radial RMS): no bias, ``tau = error_m / sqrt(2)``.

Prior on ``x`` (where technicians who tap "arrived" are), a mixture:

* at the door: ``N(0, door_sigma_m²)`` per axis, weight ``prior_at_door``;
* elsewhere on site: uniform over the disc of ``site_radius_m``, weight ``prior_on_site``;
* away: uniform over the disc of ``away_radius_m``, the remaining weight.

Every term is closed form with the noncentral chi-square CDF (``P(|N(μ, v·I)| <= R)``), so the
posterior needs no grid. Without evidence the probabilities are the prior's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from geofence.errors import ThresholdError

FloatArray = npt.NDArray[np.float64]
R68_PER_SIGMA: Final = math.sqrt(-2.0 * math.log(0.32))  # 68 % radius of a 2D Gaussian, in σ
_HERMITE_NODES: Final = 9
_CERTAIN_SIGMAS: Final = 9.0


@dataclass(frozen=True)
class ErrorModel:
    """Parameters of the stated model (metres; probabilities in [0, 1])."""

    bias_max_m: float = 8.0
    ar1_phi: float = 0.9
    accuracy_misjudgement_sigma: float = 0.35
    door_sigma_m: float = 1.0
    away_radius_m: float = 1000.0
    prior_at_door: float = 0.95
    prior_on_site: float = 0.02

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.ar1_phi < 1.0:
            problems.append(f"ar1_phi={self.ar1_phi} (expected 0 <= phi < 1)")
        for name in ("bias_max_m", "accuracy_misjudgement_sigma"):
            if not getattr(self, name) >= 0.0:
                problems.append(f"{name}={getattr(self, name)} (expected >= 0)")
        for name in ("door_sigma_m", "away_radius_m"):
            if not getattr(self, name) > 0.0:
                problems.append(f"{name}={getattr(self, name)} (expected > 0)")
        priors = (self.prior_at_door, self.prior_on_site)
        if not all(0.0 <= p <= 1.0 for p in priors) or sum(priors) > 1.0:
            problems.append(
                f"prior_at_door={self.prior_at_door}, prior_on_site={self.prior_on_site} "
                "(expected each in [0, 1], sum <= 1)"
            )
        if problems:
            raise ThresholdError(f"ErrorModel: {'; '.join(problems)}")

    @property
    def prior_away(self) -> float:
        return max(0.0, 1.0 - self.prior_at_door - self.prior_on_site)

    @property
    def bias_sigma_m(self) -> float:
        """Per-axis σ of a Gaussian with the second moment of a uniform 0-max magnitude."""
        return self.bias_max_m / math.sqrt(6.0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prior_away": round(self.prior_away, 9)}


def ar1_factor(n_fixes: FloatArray, phi: float) -> FloatArray:
    """How much the independent-fix standard error understates the error of a mean of ``n``
    AR(1) samples: ``sqrt(n·Var(mean) / σ²)`` (1 for n <= 1 or phi = 0)."""
    n = np.maximum(np.asarray(n_fixes, dtype=np.float64), 1.0)
    if phi == 0.0:
        return np.ones_like(n)
    ratio = (1.0 + phi) / (1.0 - phi) - 2.0 * phi * (1.0 - phi**n) / (n * (1.0 - phi) ** 2)
    return np.sqrt(np.maximum(ratio, 1.0))


def stop_sigma_m(se_m: FloatArray, n_fixes: FloatArray, model: ErrorModel) -> FloatArray:
    """Per-axis σ of a stop centroid's error: shared bias plus AR(1)-corrected noise."""
    noise = ar1_factor(n_fixes, model.ar1_phi) * np.asarray(se_m, dtype=np.float64)
    return np.sqrt(model.bias_sigma_m**2 + noise**2 / 2.0)


def hermite_misjudgement(model: ErrorModel) -> tuple[FloatArray, FloatArray]:
    """(factors ``exp(-η_k)``, weights ``w_k``) integrating over ``η ~ N(0, σ²)``."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(_HERMITE_NODES)
    factors = np.exp(-model.accuracy_misjudgement_sigma * nodes)
    return factors.astype(np.float64), (weights / weights.sum()).astype(np.float64)


def _disc_cdf(radius_m: float, centre_m: FloatArray, sigma_m: FloatArray) -> FloatArray:
    """``P(|N(centre, σ²·I)| <= radius)`` in 2D (noncentral chi-square, 2 dof).

    Exactly 1 or 0 where the disc lies ``_CERTAIN_SIGMAS`` σ inside or outside the radius
    (below 1e-18 from the exact value); the noncentral chi-square CDF runs on the rest only.
    """
    out = np.where(centre_m - _CERTAIN_SIGMAS * sigma_m >= radius_m, 0.0, 1.0)
    doubt = np.abs(centre_m - radius_m) < _CERTAIN_SIGMAS * sigma_m
    if doubt.any():
        from scipy.special import chndtr  # ~0.1 s to import: only where it is needed

        s, c = sigma_m[doubt], centre_m[doubt]
        out[doubt] = chndtr((radius_m / s) ** 2, 2.0, (c / s) ** 2)
    return np.asarray(out, dtype=np.float64)


def position_probabilities(
    distance_m: FloatArray,
    sigma_m: FloatArray,
    *,
    radius_m: float,
    site_radius_m: float,
    model: ErrorModel,
    weights: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray]:
    """``(P(|x| <= radius_m), P(|x| <= site_radius_m))`` per row (see the module docstring).

    ``distance_m``: (n,) evidence-to-customer distance; ``sigma_m``: (n,) or (n, k) per-axis
    evidence σ, k mixture components with ``weights`` (k,). A row with NaN distance or σ has no
    evidence: the prior's probabilities. A row whose evidence is impossible under every
    component (beyond ``away_radius_m`` by many σ) gets 0 and 0.
    """
    d = np.asarray(distance_m, dtype=np.float64)[:, None]
    s = np.asarray(sigma_m, dtype=np.float64)
    s = s[:, None] if s.ndim == 1 else s
    w = np.ones(s.shape[1]) / s.shape[1] if weights is None else np.asarray(weights, np.float64)
    blind = np.isnan(d[:, 0]) | np.isnan(s).any(axis=1)
    d, s = np.where(np.isnan(d), 0.0, d), np.where(np.isnan(s), 1.0, np.maximum(s, 1e-6))
    door2, site_r, away_r = model.door_sigma_m**2, site_radius_m, model.away_radius_m
    radii = (radius_m, site_radius_m)

    # at the door: evidence ~ N(0, (door² + τ²) I); x | e ~ N(e·door²/T², door²τ²/T²)
    t2 = door2 + s * s
    like_door = np.exp(-(d * d) / (2.0 * t2)) / (2.0 * np.pi * t2)
    post_sd = np.sqrt(door2 * s * s / t2)
    post_mu = d * door2 / t2
    # uniform discs: ∫_disc N(e - x) dx / area = P(|N(e, τ²)| <= R) / (πR²); the disc CDFs
    # at radius_m and site_radius_m serve both discs (each is at most the disc's radius)
    site_area, away_area = np.pi * site_r**2, np.pi * away_r**2
    flat_d, flat_s = np.broadcast_to(d, s.shape).ravel(), s.ravel()

    def cdf(r: float) -> FloatArray:
        return _disc_cdf(r, flat_d, flat_s).reshape(s.shape)

    cdf_r = {r: cdf(r) for r in {*radii, away_r}}
    pa, ps, pw = model.prior_at_door, model.prior_on_site, model.prior_away
    like = pa * like_door + ps * cdf_r[site_r] / site_area + pw * cdf_r[away_r] / away_area
    total = (w * like).sum(axis=1)
    probs = []
    for r in radii:
        door_in = _disc_cdf(r, post_mu.ravel(), post_sd.ravel()).reshape(s.shape)
        mass = (
            pa * like_door * door_in
            + ps * cdf_r[min(r, site_r)] / site_area
            + pw * cdf_r[min(r, away_r)] / away_area
        )
        inside = (w * mass).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(total > 0.0, inside / total, 0.0)
        prior = (
            pa * float(1.0 - math.exp(-(r * r) / (2.0 * door2)))
            + ps * min(r / site_r, 1.0) ** 2
            + pw * min(r / away_r, 1.0) ** 2
        )
        probs.append(np.clip(np.where(blind, prior, p), 0.0, 1.0))
    return probs[0], probs[1]
