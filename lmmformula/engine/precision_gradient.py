"""Analytic gradient of the REML/ML deviance in the parameters that enter through precision matrices: the
residual structure's ``eta`` and the structured groupings' ``kappa`` (:func:`grouping_gradient`).

With ``V = sigma^2 (Z Lam K~ Lam'Z' + R~)``, ``W = R~^-1`` and ``dR~ = -R~ dW R~``:

    d(-2 l)/d eta_j = tr(P~ dR~) + e' dW e / sigma^2

    tr(P~ dR~) = -tr(R~ dW) + tr(Cvv^-1 Lam'Z' dW Z Lam) + tr(Sb^-1 F' dW F)          (REML)

(the last as ``tr(H' dW H)``, ``H = F L^-T``, ``Sb = L L'``: a sparse product, no ``p x p`` inverse)

where ``F = X - Z Lam B`` (the fixed-effect columns after absorbing the random effects, ``B = Cvv^-1 Lam'Z'WX``),
``e = y - X b - Z u`` and ``P~ = sigma^2 P``; ML drops the last trace (``V~^-1`` in place of ``P~``).
``tr(R~ dW)`` needs ``R~`` only on the pattern of ``dW`` (products of the dimensions' correlations), and
``tr(Cvv^-1 .)`` only on the pattern of ``Cvv`` (the selected inverse).  With ``sigma^2`` profiled out
(``sigma^2 = r2 / dof``) the second term is ``dof e'dWe / r2`` (envelope theorem).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from ..sparsepattern import values_on
from .selinv import column_dots

__all__ = ["residual_gradient", "grouping_gradient", "precision_derivatives"]


def precision_derivatives(residual, eta: np.ndarray, h: float = 1e-6) -> list[np.ndarray]:
    """``dW/d eta_j`` for every residual parameter as values on the residual precision's pattern: analytic, or
    central differences of the observed precision (a Schur complement) for very long dimensions with
    unobserved cells."""
    dW = residual.precision_derivatives(eta)
    if dW is not None:
        return dW
    out = []
    for j in range(np.size(eta)):
        e = np.zeros(np.size(eta))
        e[j] = h
        out.append((residual.precision_values(np.asarray(eta) + e)[0]
                    - residual.precision_values(np.asarray(eta) - e)[0]) / (2.0 * h))
    return out


def _trace(S, M: sp.csc_matrix) -> float:
    """``tr(S M)`` for a symmetric ``M`` whose pattern lies in the stored pattern of ``S``."""
    if M.shape[0] == 0:
        return 0.0
    if not sp.issparse(S):
        C = M.tocoo()
        return float(S[C.row, C.col] @ C.data)
    idx = np.arange(M.shape[0])
    return float(column_dots(S, M.tocsc(), idx, idx).sum())


def _row_dots(H: np.ndarray, rows: np.ndarray, cols: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """``(H H')[rows_k, cols_k]`` for every k, in chunks of about ``chunk`` products."""
    out = np.empty(rows.size)
    step = max(1, chunk // max(H.shape[1], 1))
    for start in range(0, rows.size, step):
        r, c = rows[start:start + step], cols[start:start + step]
        out[start:start + step] = np.einsum("ij,ij->i", H[r], H[c])
    return out


def _lam_s_lam(mme, theta: np.ndarray, S) -> np.ndarray:
    """``Lam S Lam'`` on the pattern of ``Z'WZ`` (values in its CSC order)."""
    if mme._cvv_map is not None:
        return mme._cvv_map.adjoint(mme.lam_values(theta), mme.selected_on_cvv(S))
    lam = mme.lam(theta)
    pattern = mme.cross.ztwz_pattern
    if sp.issparse(S):
        return values_on(lam @ S @ lam.T, mme.cross.pattern_keys, strict=False)
    M = np.asarray(lam @ np.asarray(lam @ S).T).T
    cols = np.repeat(np.arange(pattern.shape[1]), np.diff(pattern.indptr))
    return M[pattern.indices, cols]


def residual_gradient(mme, ev, S, derivatives: list[np.ndarray], sigma2: float | None = None) -> np.ndarray:
    """``d(-2 l)/d eta`` (profiled over ``sigma^2`` unless ``sigma2`` is given), eq. in the module docstring.

    Every term is a trace ``tr(T dW)`` with ``dW`` on the fixed pattern of ``W``, so ``T`` is formed once, on
    that pattern, and each parameter costs one dot product with the values of its ``dW``:
    ``T = -R~ + (Lam Cvv^-1 Lam' through Z) + (F Sb^-1 F') + coef e e'`` at the stored positions of W.

    Parameters
    ----------
    mme : MixedModelEquations
    ev : Evaluation
        At the parameters of interest.
    S : selected inverse of ``Cvv`` at ``ev.theta``.
    derivatives : list of ndarray
        Values of ``dW/d eta_j`` on the pattern of W.
    sigma2 : float, optional
    """
    cross = mme.cross
    rows, cols = cross.w_rows, cross.w_cols
    dof = mme.n - mme.p if mme.reml else mme.n
    coef = dof / ev.pwrss if sigma2 is None else 1.0 / sigma2
    eta = mme.eta(ev.theta)
    # -tr(R~ dW_j) = d log|R~_oo| / d eta_j, in closed form (None: very long dimensions with unobserved cells)
    log_det_terms = mme.residual.observed_log_det_derivatives(eta)
    T = coef * ev.resid[rows] * ev.resid[cols]
    if log_det_terms is None:
        T -= mme.residual.covariance_values(eta)
    if mme.q:
        T += cross.zz.adjoint(_lam_s_lam(mme, ev.theta, S))
    if mme.reml and mme.p:
        if mme.q == 0 and cross.sparse_X is not None:
            # GLS with indicator columns: tr(Sb^-1 X'dWX) through the map of X'WX
            sb_inv, _ = scipy.linalg.lapack.dpotri(ev.schur_chol, lower=True)
            T += cross.xx.adjoint_lower(sb_inv)
        else:  # tr(Sb^-1 F'dWF) = tr(H' dW H) with H = F Sb^{-T/2}: no p x p inverse
            F = mme.X - mme.Z @ mme.lam_times(ev.theta, ev.B) if mme.q else mme.X
            H = scipy.linalg.solve_triangular(ev.schur_chol, np.asarray(F).T, lower=True, check_finite=False).T
            T += _row_dots(H, rows, cols)
    out = np.array([float(T @ dw) for dw in derivatives])
    if log_det_terms is not None:
        out += log_det_terms
    return out


def grouping_gradient(mme, ev, S, sigma2: float | None = None) -> np.ndarray:
    """``d(-2 l)/d kappa`` for the parameters of structured groupings (``K~^-1(kappa)`` in the MME).

    With ``D = dK~^-1/dkappa_j`` (added to ``Cvv`` unscaled) and ``K~^-1 v`` in the penalty,

        d(-2 l)/d kappa_j = tr(Cvv^-1 D) + tr(Sb^-1 B'DB) + d log|K~|/d kappa_j + v'Dv / sigma^2

    (``tr(Sb^-1 B'DB) = tr(A'DA)`` with ``A = B Sb^{-T/2}``; ML drops it; profiled: ``dof / r2`` for
    ``1 / sigma^2``).
    """
    dof = mme.n - mme.p if mme.reml else mme.n
    coef = dof / ev.pwrss if sigma2 is None else 1.0 / sigma2
    kappa = mme.kappa(ev.theta)
    A = mme.absorbed_fixed(ev) if mme.reml and mme.p else None
    out = np.zeros(mme.n_kappa)
    for j in range(mme.n_kappa):
        D = mme.levels.derivative(kappa, j)
        g = _trace(S, D) + mme.levels.log_det_derivative(kappa, j) + coef * float(ev.v @ (D @ ev.v))
        if A is not None:
            g += float(np.sum(A * (D @ A)))
        out[j] = g
    return out
