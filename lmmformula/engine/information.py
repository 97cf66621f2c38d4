"""Average information of the covariance parameters on their natural scale (for standard errors)."""

from __future__ import annotations

import numpy as np

from .mme import Evaluation, MixedModelEquations

__all__ = ["variance_information"]


def variance_information(mme: MixedModelEquations, ev: Evaluation) -> np.ndarray:
    """Average information for the covariance parameters on their natural scale.

    Parameters are, per term, the entries of ``Sigma_k`` listed by
    :attr:`BlockCovariance.parameters`, then the residual variance ``sigma^2``, then the residual
    correlations ``rho``.  ``dV/dSigma_k[a,b] = Z_k (I (x) E_ab) Z_k'`` (``E_ab`` symmetric 0/1),
    ``dV/dsigma^2 = R~`` and ``dV/drho = sigma^2 dR~/drho``; the working variates are ``q = dV P y`` with
    ``P y = W e / sigma^2``, and
    ``AI = Q' P Q / 2`` (Gilmour, Thompson & Cullis 1995).  Its inverse estimates the
    sampling covariance of the estimates (REML: with ``P``; ML: with ``V^-1``).
    """
    Zte = mme.Z.T @ ev.w_resid
    cols = []
    for k, (blk, cov) in enumerate(zip(mme.blocks, mme.covariances)):
        base = mme.offsets[k] + np.arange(blk.n_levels) * cov.m
        for a, b in cov.parameters:
            w = np.zeros(mme.q)
            w[base + a] += Zte[base + b]
            if a != b:
                w[base + b] += Zte[base + a]
            cols.append(mme.Z @ mme.k_times(w))
    cols.append(ev.resid.copy())
    rho = np.tanh(mme.eta(ev.theta))
    for j in range(mme.n_eta):  # d/drho = d/deta / (1 - rho^2)
        cols.append(ev.sigma2 * mme._eta_variate(ev, j) / (1.0 - rho[j] ** 2))
    Q = np.column_stack(cols) / ev.sigma2
    PQ = mme.project(ev, Q)
    ai = Q.T @ PQ / (2.0 * ev.sigma2)
    return 0.5 * (ai + ai.T)
