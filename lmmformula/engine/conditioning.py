"""A start for unstructured terms whose columns are nearly collinear (a random slope on a covariate far from 0).

An unstructured term's covariance is unchanged in meaning by an invertible transformation of its columns: with
``Z_k = Z~_k (I_L (x) T^-1)``, i.e. columns ``X_k T`` within each level, ``u_k ~ N(0, I_L (x) Sigma)`` gives the
same ``V`` as ``u~_k ~ N(0, I_L (x) Sigma~)`` with ``Sigma = T Sigma~ T'``.  The likelihood is the same function
on the two parameterisations, but the AI iterations are not: on columns ``[1, x]`` with ``x`` near 1000 the
relative Cholesky factor of lme4's parameterisation (Bates et al. 2015, eq. 5) makes the average information
so ill-conditioned that its Newton decrement falls below ``tol`` far from the optimum (lme4's optimizers stop
short there as well).  With ``T = sqrt(n) R^-1`` from the thin QR factorisation ``X_k = QR`` the columns
``X_k T`` are orthogonal with unit root mean square.

:func:`fit_conditioned` fits the model with such columns for every unstructured term whose columns are nearly
collinear, and maps the estimate and the iteration history back (``Lk`` = the lower factor of
``T Lk~ (T Lk~)'``, by a QR factorisation, which also holds for a singular ``Sigma~``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from ..covariance import BlockCovariance
from .mme import MixedModelEquations
from .reml import SINGULAR_TOL, OptimizerResult, fit_variance_parameters

__all__ = ["COLLINEAR_LIMIT", "collinear_terms", "fit_conditioned"]

# Condition number of a term's columns scaled to unit root mean square above which the term is conditioned:
# [1, x] with x ~ N(c, 1) has about 4 c^2 (sleepstudy's [1, Days] 12, ChickWeight's [1, Time] 12, Orthodont's
# [1, age] 99).  On 90-row data the plain iterations reached the optimum up to c = 100 (4e4) and stopped short
# from c = 300 on; on 14 rows (a property test's example) they stopped 0.37 short at c = 30 and needed twice
# the iterations at c = 10 (about 400).
COLLINEAR_LIMIT = 200.0


def collinear_terms(mme: MixedModelEquations, limit: float = COLLINEAR_LIMIT) -> dict[int, np.ndarray]:
    """``{k: T}`` for the unstructured terms (``|``, ``us``; no known or structured grouping) whose columns
    scaled to unit root mean square have a condition number above ``limit``; ``X_k T`` has orthogonal columns
    of unit root mean square."""
    out = {}
    for k, (blk, cov) in enumerate(zip(mme.blocks, mme.covariances)):
        if not (type(cov) is BlockCovariance and cov.correlated and cov.m > 1
                and blk.known is None and blk.grid is None):
            continue
        X = np.asarray(blk.X, dtype=float)
        rms = np.sqrt(np.mean(X**2, axis=0))
        if not np.all(rms > 0):
            continue
        Xn = X / rms
        if np.linalg.cond(Xn.T @ Xn) <= limit:
            continue
        R = np.linalg.qr(X, mode="r")
        if np.min(np.abs(np.diag(R))) <= 1e-10 * np.max(np.abs(np.diag(R))):
            continue  # columns linearly dependent: no transformation helps
        out[k] = np.linalg.inv(R) * np.sqrt(X.shape[0])
    return out


def _conditioned_equations(mme: MixedModelEquations, transforms: dict[int, np.ndarray]) -> MixedModelEquations:
    """The same model with the columns of each term ``k`` in ``transforms`` replaced by ``X_k T``."""
    blocks = list(mme.blocks)
    for k, T in transforms.items():
        blk = blocks[k]
        per_level = sp.kron(sp.identity(blk.n_levels, format="csr"), sp.csr_matrix(T), format="csr")
        blocks[k] = dataclasses.replace(blk, X=np.asarray(blk.X, dtype=float) @ T, Z=(blk.Z @ per_level).tocsc())
    return MixedModelEquations(mme.y, mme.X, tuple(blocks), mme.covariances, mme.residual, reml=mme.reml,
                               dense_below=mme.dense_below, sparse_X=mme.cross.sparse_X)


def _to_original(mme: MixedModelEquations, transforms: dict[int, np.ndarray], theta) -> np.ndarray:
    """Map ``theta`` of the conditioned model to the original one: ``Lk Lk' = (T Lk~)(T Lk~)'``."""
    out = np.array(theta, dtype=float)
    for k, T in transforms.items():
        cov = mme.covariances[k]
        t0, t1 = mme.theta_offsets[k], mme.theta_offsets[k + 1]
        L = np.linalg.qr((T @ cov.factor(out[t0:t1])).T, mode="r").T  # M = L Q: M M' = L L'
        L *= np.where(np.diag(L) < 0.0, -1.0, 1.0)[None, :]
        out[t0:t1] = [L[r, c] for r, c in cov.theta_positions]
    return mme.canonical(out)


def fit_conditioned(mme: MixedModelEquations, theta0: np.ndarray, **options) -> OptimizerResult | None:
    """Fit through the conditioned parameterisation (module docstring), or None when no term needs it or the
    conditioned iterations do not converge (the caller then iterates in the original parameterisation).

    The Newton decrement ``s' AI^-1 s`` is invariant under a change of parameters with an invertible Jacobian,
    so the conditioned fit's convergence holds for the original parameters; iterating there again would only
    add rounding (at ``x`` near 1e4 the original average information has a condition number near 1e16).

    Parameters
    ----------
    mme : MixedModelEquations
    theta0 : ndarray
        Starting value of the original model; the conditioned terms start at the identity instead.
    **options
        Passed to :func:`~lmmformula.engine.reml.fit_variance_parameters` (``algorithm``, ``max_iter``, ``tol``,
        ``verbose``).
    """
    transforms = collinear_terms(mme)
    if not transforms:
        return None
    start = np.array(theta0, dtype=float)
    for k in transforms:
        start[mme.theta_offsets[k]:mme.theta_offsets[k + 1]] = mme.covariances[k].initial_theta()
    if options.get("verbose"):
        names = ", ".join(mme.blocks[k].name for k in sorted(transforms))
        options.get("printer", print)(f"nearly collinear columns in term {names}: iterating on orthogonalised "
                                      "columns (the same model); theta below is in that parameterisation")
    fit = fit_variance_parameters(_conditioned_equations(mme, transforms), start, **options)
    if not fit.converged:
        return None
    theta = _to_original(mme, transforms, fit.theta)
    history = tuple(dataclasses.replace(r, theta=tuple(float(x) for x in _to_original(mme, transforms, r.theta)))
                    for r in fit.history)
    lower, upper = mme.lower, mme.upper
    bounds = tuple(int(i) for i in np.flatnonzero((np.isfinite(lower) & (theta <= lower + SINGULAR_TOL))
                                                  | (theta >= upper - SINGULAR_TOL)))
    return dataclasses.replace(fit, theta=theta, history=history, at_boundary=bounds,
                               conditioned=tuple(sorted(transforms)))
