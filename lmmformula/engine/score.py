"""Score and average information of the REML/ML objective: the derivatives half of the mixed model equations.

:class:`ScoreMixin` is mixed into :class:`~lmmformula.engine.mme.MixedModelEquations`, which supplies the
evaluation (``evaluate``, ``lam``, ``products``, ``project``, ``factor_at``, ...).  Gradients in the relative
Cholesky elements come from traces on the selected inverse (``_score_terms``), chained to structured terms'
parameters; gradients in correlation parameters come from :mod:`~lmmformula.engine.precision_gradient`; the
average information uses working variates (Gilmour, Thompson & Cullis 1995).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from .precision_gradient import grouping_gradient, precision_derivatives, residual_gradient
from .selinv import column_dots

__all__ = ["ScoreMixin", "Derivatives"]


@dataclass(frozen=True)
class Derivatives:
    """Score and average information with respect to theta, profiled over sigma^2."""

    gradient: np.ndarray     # d deviance / d theta
    ai: np.ndarray           # average information (log-likelihood scale), Schur complement over sigma^2
    selected_inverse: object  # Cvv^-1 on the pattern of its factor (sparse) or in full (dense)


class ScoreMixin:
    """Derivatives of the profiled (or unprofiled) deviance; see the module docstring."""

    def derivatives(self, ev) -> Derivatives:
        """Gradient of the profiled deviance and the average information in theta.

        For ``theta_i = Lk[r, s]``, ``dV/dtheta_i = sigma^2 Z (Lam_i Lam' + Lam Lam_i') Z'`` and

            tr(P dV_i)  = 2 tr(S_v. W~'Z Lam_i)                          (S = C*^-1, W~ = [X, Z Lam])
            y'P dV_i Py = (2 / sigma^2) (Z'e)' Lam_i v
            d(-2l)/dtheta_i = tr(P dV_i) - y'P dV_i P y

        (ML: ``S_v.`` is replaced by ``[0, Cvv^-1]``; with a residual structure ``Z'e`` is ``Z'We``.)
        The average information uses the working variates ``q_i = dV_i P y = Z (Lam_i v + Lam Lam_i' Z'We)``
        (Gilmour, Thompson & Cullis 1995), ``AI_ij = q_i' P q_j / 2``, with ``sigma^2`` eliminated by a
        Schur complement.  For a grouping parameter kappa_j or a residual parameter eta_j the gradient is a
        central difference of the exact objective; the working variates are in :meth:`precision_variates`.
        """
        S = self.factor_at(ev.theta).selected_inverse()
        g_theta, Q = self._theta_score(ev, S, ev.sigma2)
        grad = np.concatenate([g_theta, self._eta_gradient(ev.theta, ev=ev, S=S)])
        if self.n_kappa + self.n_eta:
            Q = np.column_stack([Q, self.precision_variates(ev)])
            self.factor_at(ev.theta)
        PQ = self.project(ev, Q)
        eQ = ev.w_resid @ Q
        ai = (Q.T @ PQ - np.outer(eQ, eQ) / ev.pwrss) / (2.0 * ev.sigma2)
        return Derivatives(gradient=grad, ai=0.5 * (ai + ai.T), selected_inverse=S)

    def _theta_score(self, ev, S, sigma2: float, variates: bool = True):
        """Gradient of the deviance in theta (at ``sigma2``) and the working variates (n x n_theta).

        Computed for the elements of the factors, then chained through :meth:`element_jacobian`
        (the gradient by ``J'g``, the variates by ``Q J``: both are linear in ``dLam``).
        """
        trace, quad, Q = self._score_terms(ev, S, variates)
        g = 2.0 * trace - 2.0 * quad / sigma2
        J = self.element_jacobian(ev.theta)
        if J is not None:
            g = J.T @ g
            Q = Q @ J if variates else None
        return g, Q

    def _score_terms(self, ev, S, variates: bool = True):
        """``tr(S_v. W~'Z Lam_i)``, ``(Z'e)' Lam_i v`` and the working variates for every element i."""
        if not self._pairs:
            return np.zeros(0), np.zeros(0), (np.zeros((self.n, 0)) if variates else None)
        prod = self.products(ev.theta)
        n_el = len(self._pairs)
        if self._cvv_map is not None:  # tr(S Lam' Z'WZ Lam_i) as one gather-and-sum over the map's triplets
            trace = self._cvv_map.element_traces(self.lam_values(ev.theta), prod.ZtWZ.data, self.selected_on_cvv(S),
                                                 self._lambda_element_index, n_el)
        else:
            Fv = (self.lam_t(ev.theta) @ prod.ZtWZ).tocsc()
            if not sp.issparse(S):
                Fv = Fv.toarray()  # the dense path slices columns of Fv once per element
            trace = np.array([column_dots(S, Fv, xs, ys).sum() for xs, ys in self._pairs])
        Zte = self.Zt @ ev.w_resid
        use_fixed = self.reml and self.p
        if use_fixed:
            W = scipy.linalg.cho_solve((ev.schur_chol, True), ev.B.T, check_finite=False).T  # B Sb^-1 (q x p)
            H = np.asarray((prod.ZtWZ @ self.lam_times(ev.theta, ev.B))).T - prod.ZtWX.T  # B'Fv - Fb (p x q)
        quad = np.zeros(n_el)
        Q = np.zeros((self.n, n_el)) if variates else None
        for i, (xs, ys) in enumerate(self._pairs):
            if use_fixed:
                trace[i] += np.einsum("tp,pt->", W[xs], H[:, ys])
            quad[i] = Zte[ys] @ ev.v[xs]
            if not variates:
                continue
            lam_i_v = np.zeros(self.q)
            lam_i_v[ys] = ev.v[xs]
            lam_it_zte = np.zeros(self.q)
            lam_it_zte[xs] = Zte[ys]
            Q[:, i] = self.Z @ (lam_i_v + self.lam_times(ev.theta, self.k_times(lam_it_zte, ev.theta)))
        return trace, quad, Q

    def residual_derivatives(self, theta: np.ndarray) -> list[np.ndarray]:
        """Values of ``dW/d eta_j`` on the pattern of W for every residual parameter at ``theta`` (cached for
        the last value)."""
        key = tuple(float(x) for x in self.eta(theta))
        if self._dw_cache is None or self._dw_cache[0] != key:
            self._dw_cache = (key, precision_derivatives(self.residual, np.asarray(key)))
        return self._dw_cache[1]

    def _eta_gradient(self, theta: np.ndarray, sigma2: float | None = None, ev=None,
                      S=None) -> np.ndarray:
        """Gradient of the (profiled, or at ``sigma2``) deviance in the precision parameters, analytic:
        structured groupings' kappa (:func:`~lmmformula.engine.precision_gradient.grouping_gradient`) and the
        residual's eta (:func:`~lmmformula.engine.precision_gradient.residual_gradient`)."""
        out = np.zeros(self.n_kappa + self.n_eta)
        if self.n_eta or self.n_kappa:
            if ev is None:
                ev = self.evaluate(theta)
                S = self.factor_at(theta).selected_inverse()
            if self.n_eta:
                out[self.n_kappa:] = residual_gradient(self, ev, S, self.residual_derivatives(theta), sigma2)
            if self.n_kappa:
                out[:self.n_kappa] = grouping_gradient(self, ev, S, sigma2)
        return out

    def _kappa_variate(self, ev, j: int) -> np.ndarray:
        """Working variate of grouping parameter j (``dV_j P y / sigma^2``):
        ``Z Lam (dK~/dkappa) Lam'Z'We = -Z Lam K~ (dK~^-1/dkappa) v`` (using ``K~^-1 v = Lam'Z'We`` at the
        solution of the MME)."""
        dK = self.levels.derivative(self.kappa(ev.theta), j)
        return -self.Z @ self.lam_times(ev.theta, self.k_times(dK @ ev.v, ev.theta))

    def precision_variates(self, ev) -> np.ndarray:
        """Working variates of the grouping then the residual parameters, n x (n_kappa + n_eta); a residual
        parameter's is ``dV_j P y / sigma^2 = -R~ (dW/d eta_j) e``."""
        cols = [self._kappa_variate(ev, j) for j in range(self.n_kappa)]
        if self.n_eta:
            cols.append(self._eta_variates(ev))
        return np.column_stack(cols) if cols else np.zeros((self.n, 0))

    def _eta_variates(self, ev) -> np.ndarray:
        """Working variates of the residual parameters (see :meth:`precision_variates`)."""
        rows, cols = self.cross.w_rows, self.cross.w_cols  # dW e as a sum over the stored entries of dW
        dWe = np.column_stack([np.bincount(rows, weights=dw * ev.resid[cols], minlength=self.n)
                               for dw in self.residual_derivatives(ev.theta)])
        return -self.cross.covariance_times(self.eta(ev.theta), dWe)

    def profiled_gradient(self, theta: np.ndarray) -> np.ndarray:
        """Gradient of the profiled deviance at ``theta`` (no AI, no EM step)."""
        ev = self.evaluate(theta)
        S = self.factor_at(theta).selected_inverse()
        g_theta, _ = self._theta_score(ev, S, ev.sigma2, variates=False)
        return np.concatenate([g_theta, self._eta_gradient(theta, ev=ev, S=S)])

    def full_gradient(self, theta: np.ndarray, sigma2: float) -> np.ndarray:
        """Gradient of the unprofiled deviance ``-2 l(theta, sigma^2)`` with respect to ``(theta, sigma^2)``.

        ``d/dtheta_i = 2 tr(S_v. W~'Z Lam_i) - 2 (Z'e)' Lam_i v / sigma^2`` (the trace and ``e, v`` do
        not depend on ``sigma^2``) and ``d/dsigma^2 = dof / sigma^2 - r2 / sigma^4``.
        """
        ev = self.evaluate(theta)
        S = self.factor_at(theta).selected_inverse()
        g_theta, _ = self._theta_score(ev, S, sigma2, variates=False)
        eta_grad = self._eta_gradient(theta, sigma2, ev=ev, S=S)
        dof = self.n - self.p if self.reml else self.n
        return np.concatenate([g_theta, eta_grad, [dof / sigma2 - ev.pwrss / sigma2**2]])
