"""Fits of unstructured terms whose columns are nearly collinear (a random slope on a covariate far from 0).

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
``T Lk~ (T Lk~)'``, by a QR factorisation, which also holds for a singular ``Sigma~``).  The results use
:func:`conditioned_view` for quantities that do not depend on the parameterisation but lose precision in the
original one (Satterthwaite and Kenward-Roger df, the shrinkage's effective df), and :func:`natural_map` to carry
the sampling covariance of ``Sigma~``'s entries to ``Sigma``'s.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from ..covariance import BlockCovariance
from .mme import MixedModelEquations
from .reml import OptimizerResult, fit_variance_parameters

__all__ = ["COLLINEAR_LIMIT", "collinear_terms", "conditioned_view", "fit_conditioned", "natural_map"]

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


def _mapped(mme: MixedModelEquations, transforms: dict[int, np.ndarray], theta, inverse: bool = False) -> np.ndarray:
    """``theta`` of the conditioned model mapped to the original one, ``Lk Lk' = (T Lk~)(T Lk~)'`` (with
    ``inverse``: the original mapped to the conditioned one, ``T^-1`` in place of ``T``)."""
    out = np.array(theta, dtype=float)
    for k, T in transforms.items():
        cov = mme.covariances[k]
        t0, t1 = mme.theta_offsets[k], mme.theta_offsets[k + 1]
        M = (np.linalg.inv(T) if inverse else T) @ cov.factor(out[t0:t1])
        L = np.linalg.qr(M.T, mode="r").T  # M = L Q: M M' = L L'
        L *= np.where(np.diag(L) < 0.0, -1.0, 1.0)[None, :]
        out[t0:t1] = [L[r, c] for r, c in cov.theta_positions]
    return mme.canonical(out)


def fit_conditioned(mme: MixedModelEquations, theta0: np.ndarray, *, given_start: bool = False,
                    **options) -> OptimizerResult | None:
    """Fit through the conditioned parameterisation (module docstring); None when no term needs it.

    The Newton decrement ``s' AI^-1 s`` is invariant under a change of parameters with an invertible Jacobian,
    so the conditioned fit's convergence holds for the original parameters; iterating there again would only
    add rounding (at ``x`` near 1e4 the original average information has a condition number near 1e16).  A fit
    that does not converge is returned as it is (mapped), for the caller's warning.

    Parameters
    ----------
    mme : MixedModelEquations
    theta0 : ndarray
        Starting value of the original model.  Unless ``given_start``, the conditioned terms start at the
        identity (of the conditioned columns) instead; a given start is mapped to the conditioned parameters.
    **options
        Passed to :func:`~lmmformula.engine.reml.fit_variance_parameters` (``algorithm``, ``max_iter``, ``tol``,
        ``verbose``).
    """
    transforms = collinear_terms(mme)
    if not transforms:
        return None
    start = np.array(theta0, dtype=float)
    if given_start:
        start = _mapped(mme, transforms, start, inverse=True)
    else:
        for k in transforms:
            start[mme.theta_offsets[k]:mme.theta_offsets[k + 1]] = mme.covariances[k].initial_theta()
    if options.get("verbose"):
        names = ", ".join(mme.blocks[k].written for k in sorted(transforms))
        options.get("printer", print)(f"nearly collinear columns of {names}: iterating on orthogonalised "
                                      "columns (the same model); theta below is in that parameterisation")
    fit = fit_variance_parameters(_conditioned_equations(mme, transforms), start, **options)
    history = tuple(dataclasses.replace(r, theta=tuple(float(x) for x in _mapped(mme, transforms, r.theta)))
                    for r in fit.history)
    theta = _mapped(mme, transforms, fit.theta)
    return dataclasses.replace(fit, theta=theta, history=history, at_boundary=_boundary(mme, transforms, fit, theta),
                               conditioned=tuple(sorted(transforms)))


def _boundary(mme: MixedModelEquations, transforms: dict[int, np.ndarray], fit: OptimizerResult,
              theta: np.ndarray) -> tuple[int, ...]:
    """The conditioned fit's boundary entries, in the original parameters.  A conditioned term is singular when
    its conditioned factor has diagonal entries below ``SINGULAR_TOL`` or its covariance matrix ``Sigma~`` (of
    columns with unit root mean square) eigenvalues below 1e-6 of the largest (the rule for structured terms:
    on orthogonalised columns a rank-deficient ``Sigma~`` need not put a diagonal entry on 0); as many of the
    smallest diagonal entries of the original factor are reported (a relative SD of a slope given the intercept
    at x = 0, far from the data, is tiny in the original parameters without ``Sigma`` being singular, so the
    original values alone cannot tell)."""
    out = set(fit.at_boundary)
    for k in transforms:
        cov, t0, t1 = mme.covariances[k], int(mme.theta_offsets[k]), int(mme.theta_offsets[k + 1])
        L = cov.factor(fit.theta[t0:t1])
        w = np.linalg.eigvalsh(L @ L.T)
        zero = max(sum(1 for i in range(t0, t1) if i in out), int(np.sum(w <= 1e-6 * max(w[-1], 1e-300))))
        out -= set(range(t0, t1))
        diagonal = [t0 + t for t, (r, c) in enumerate(cov.theta_positions) if r == c]
        out |= set(sorted(diagonal, key=lambda i: abs(theta[i]))[:zero])
    return tuple(sorted(out))


def conditioned_view(mme: MixedModelEquations, theta: np.ndarray, terms: tuple[int, ...]):
    """The conditioned equations and their evaluation at the estimates ``theta`` (original parameters) of a fit
    whose ``terms`` were conditioned, for quantities that do not depend on the parameterisation but lose
    precision in the original one (Satterthwaite and Kenward-Roger df), or that map linearly
    (:func:`natural_map`)."""
    transforms = {k: T for k, T in collinear_terms(mme).items() if k in terms}
    if set(transforms) != set(terms):
        raise RuntimeError("the conditioned terms of this fit are not those its equations select")
    conditioned = _conditioned_equations(mme, transforms)
    return conditioned, conditioned.evaluate(_mapped(mme, transforms, theta, inverse=True))


def natural_map(mme: MixedModelEquations, terms: tuple[int, ...], size: int) -> np.ndarray:
    """``J`` (``size x size``) with ``psi = J psi~`` for the natural parameters of :func:`variance_information`
    (each term's ``Sigma`` entries, then ``sigma^2`` and the structure parameters, unchanged): a conditioned
    term has ``Sigma = T Sigma~ T'``, linear in the entries of ``Sigma~``."""
    J = np.eye(size)
    start = 0
    transforms = collinear_terms(mme)
    for k, cov in enumerate(mme.covariances):
        n = len(cov.parameter_names())
        if k in terms:
            pars = cov.parameters
            T = transforms[k]
            block = np.empty((n, n))
            for j, (c, d) in enumerate(pars):
                E = np.zeros((cov.m, cov.m))
                E[c, d] = E[d, c] = 1.0
                S = T @ E @ T.T
                block[:, j] = [S[a, b] for a, b in pars]
            J[start:start + n, start:start + n] = block
        start += n
    return J
