"""Satterthwaite denominator degrees of freedom for fixed-effect contrasts.

For a contrast ``l'b`` with ``f(psi) = l' Cov(b; psi) l`` and ``psi = (theta, sigma)``,

    df = 2 f(psi_hat)^2 / (grad f' A grad f),     A = 2 H^-1,

where ``H`` is the Hessian of the deviance ``-2 l(theta, sigma)`` at the optimum
(Satterthwaite 1946; Kuznetsova, Brockhoff & Christensen 2017, lmerTest eqs. 5-7).
``H`` is obtained by central differences of the analytic gradient, ``grad f`` by
central differences of ``Cov(b) = sigma^2 Sb(theta)^-1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ..engine import MixedModelEquations, NotPositiveDefinite

__all__ = ["SatterthwaiteState", "satterthwaite_state", "contrast_df"]


@dataclass(frozen=True)
class SatterthwaiteState:
    """Quantities shared by every contrast of one fit."""

    vcov: np.ndarray            # Cov(b) at the optimum (p x p)
    jacobian: np.ndarray        # d Cov(b) / d psi_i, shape (k, p, p)
    A: np.ndarray               # asymptotic covariance of psi_hat = 2 H^-1 (k x k); NaN if H is indefinite


def _step(x: float) -> float:
    return 1e-4 * max(abs(x), 0.05)


def _schur_inverse(mme: MixedModelEquations, theta: np.ndarray) -> np.ndarray:
    ev = mme.evaluate(theta)
    inv = scipy.linalg.solve_triangular(ev.schur_chol, np.eye(mme.p), lower=True)
    return inv.T @ inv


def satterthwaite_state(mme: MixedModelEquations, theta: np.ndarray, sigma2: float) -> SatterthwaiteState:
    """Hessian of the deviance in ``(theta, sigma)`` and the Jacobian of ``Cov(b)``."""
    theta = np.asarray(theta, dtype=float)
    sigma = float(np.sqrt(sigma2))
    psi = np.append(theta, sigma)
    k = psi.size

    def grad(x):
        g = mme.full_gradient(x[:-1], x[-1] ** 2)
        g[-1] *= 2.0 * x[-1]  # d/dsigma = 2 sigma d/dsigma^2
        return g

    Sinv = _schur_inverse(mme, theta)
    jac = np.empty((k, mme.p, mme.p))
    try:
        H = np.empty((k, k))
        for i in range(k):
            h = _step(psi[i])
            e = np.zeros(k)
            e[i] = h
            H[:, i] = (grad(psi + e) - grad(psi - e)) / (2.0 * h)
        for i in range(k - 1):
            h = _step(theta[i])
            e = np.zeros(k - 1)
            e[i] = h
            jac[i] = sigma2 * (_schur_inverse(mme, theta + e) - _schur_inverse(mme, theta - e)) / (2.0 * h)
    except (np.linalg.LinAlgError, NotPositiveDefinite):
        # a difference step leaves the admissible region (an estimate on the edge of positive
        # definiteness): the curvature, hence the df, is not available
        mme.factor_at(theta)
        return SatterthwaiteState(vcov=sigma2 * Sinv, jacobian=np.zeros((k, mme.p, mme.p)),
                                  A=np.full((k, k), np.nan))
    jac[k - 1] = 2.0 * sigma * Sinv
    H = 0.5 * (H + H.T)
    w, V = np.linalg.eigh(H)
    scale = max(abs(w).max(), 1e-300)
    if w.min() < -1e-6 * scale:
        A = np.full((k, k), np.nan)  # not at a maximum: the df are undefined
    else:
        good = w > 1e-10 * scale
        A = 2.0 * (V[:, good] / w[good]) @ V[:, good].T
    mme.factor_at(theta)  # leave the factor at the optimum
    return SatterthwaiteState(vcov=sigma2 * Sinv, jacobian=jac, A=A)


def contrast_df(state: SatterthwaiteState, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variance and Satterthwaite df of each row of ``L`` (contrasts ``L b``)."""
    L = np.atleast_2d(np.asarray(L, dtype=float))
    var = np.einsum("rp,pq,rq->r", L, state.vcov, L)
    g = np.einsum("rp,kpq,rq->rk", L, state.jacobian, L)
    denom = np.einsum("rk,kl,rl->r", g, state.A, g)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(np.isnan(denom), np.nan, np.where(denom > 0, 2.0 * var**2 / denom, np.inf))
    return var, df
