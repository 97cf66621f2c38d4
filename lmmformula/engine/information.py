"""Average information of the covariance parameters on their natural scale (for standard errors)."""

from __future__ import annotations

import numpy as np

from .mme import Evaluation, MixedModelEquations

__all__ = ["variance_information"]


def variance_information(mme: MixedModelEquations, ev: Evaluation) -> np.ndarray:
    """Average information for the covariance parameters on their natural scale.

    Parameters are, per term, its natural parameters (the entries of ``Sigma_k`` listed by
    :attr:`BlockCovariance.parameters`, or a structured term's variance and correlations), then the
    residual variance ``sigma^2``, then the structured groupings' ``kappa`` and the residual structure's
    ``eta`` (callers map them to
    reported values by the delta method).  ``dV/dpsi = Z_k (I (x) dSigma_k/dpsi) Z_k'`` (``E_ab`` symmetric 0/1 for an entry),
    ``dV/dsigma^2 = R~`` and ``dV/deta = sigma^2 dR~/deta``; the working variates are ``q = dV P y`` with
    ``P y = W e / sigma^2``, and
    ``AI = Q' P Q / 2`` (Gilmour, Thompson & Cullis 1995).  Its inverse estimates the
    sampling covariance of the estimates (REML: with ``P``; ML: with ``V^-1``).
    """
    Zte = mme.Z.T @ ev.w_resid
    cols = []
    for k, (blk, cov) in enumerate(zip(mme.blocks, mme.covariances)):
        t0, t1 = mme.theta_offsets[k], mme.theta_offsets[k + 1]
        zte = Zte[mme.offsets[k]:mme.offsets[k + 1]].reshape(blk.n_levels, cov.m)
        for D in cov.natural_derivatives(ev.theta[t0:t1], ev.sigma2):
            w = np.zeros(mme.q)
            w[mme.offsets[k]:mme.offsets[k + 1]] = (zte @ D).ravel()
            cols.append(mme.Z @ mme.k_times(w, ev.theta))
    cols.append(ev.resid.copy())
    Q = np.column_stack(cols + [ev.sigma2 * mme.precision_variates(ev)]) / ev.sigma2
    PQ = mme.project(ev, Q)
    ai = Q.T @ PQ / (2.0 * ev.sigma2)
    return 0.5 * (ai + ai.T)
