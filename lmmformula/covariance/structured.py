"""Structured covariance among the columns of a random term: ``ar1(...)``, ``cs(...)``, ``toep(...)``, ``ma(...)``.

For ``ar1(0 + time | subject)`` the effects of one subject have ``Sigma = sigma_g^2 C(rho)`` with ``C`` a
:class:`~lmmformula.covariance.correlation.Correlation` on the term's columns (in column order, as glmmTMB).
The engine works with the relative factor ``Lk = tau chol(C(rho))`` (``Sigma / sigma^2 = Lk Lk'``), so the
parameters are ``theta = (tau, atanh rho_1, ...)``; ``tau >= 0`` may reach 0 (a singular fit).

The engine differentiates with respect to the entries of ``Lk``; the chain rule uses

    dLk/dtau = chol(C),     dLk/drho_j = tau L Phi(L^-1 (dC/drho_j) L^-T)      (L = chol(C))

where ``Phi`` keeps the lower triangle and halves the diagonal (the derivative of a Cholesky factor,
Murray 2016, eq. 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .correlation import Correlation

__all__ = ["StructuredCovariance", "cholesky_derivative"]


def cholesky_derivative(L: np.ndarray, dA: np.ndarray) -> np.ndarray:
    """``dL`` for ``A = L L'`` perturbed by ``dA``: ``L Phi(L^-1 dA L^-T)``."""
    X = scipy.linalg.solve_triangular(L, dA, lower=True)
    X = scipy.linalg.solve_triangular(L, X.T, lower=True).T
    phi = np.tril(X)
    phi[np.diag_indices_from(phi)] *= 0.5
    return L @ phi


@dataclass(frozen=True)
class StructuredCovariance:
    """``Sigma = sigma_g^2 C(rho)`` among the ``m`` columns of a random term.

    Attributes
    ----------
    columns : tuple of str
    correlation : Correlation
        Model on the columns (``size == len(columns)``).
    label : str
        Name used in ``rho(<label>)`` (the variable of the term's left side).
    """

    columns: tuple[str, ...]
    correlation: Correlation
    label: str

    structured = True

    @property
    def m(self) -> int:
        return len(self.columns)

    @property
    def n_theta(self) -> int:
        return 1 + self.correlation.n_params

    @property
    def element_positions(self) -> tuple[tuple[int, int], ...]:
        """Entries of ``Lk`` that vary: the whole lower triangle, column-major."""
        return tuple((r, c) for c in range(self.m) for r in range(c, self.m))

    @property
    def lower_bounds(self) -> np.ndarray:
        lo = [np.arctanh(b[0]) for b in self.correlation.rho_bounds()]
        return np.array([0.0] + lo)

    @property
    def upper_bounds(self) -> np.ndarray:
        hi = [np.arctanh(b[1]) for b in self.correlation.rho_bounds()]
        return np.array([np.inf] + hi)

    def initial_theta(self) -> np.ndarray:
        """``tau = 1`` and correlations of 0.5 (AR1: 0.5^lag), away from the ridge at ``rho = 0`` where the
        structure's variance and an independent residual are confounded."""
        return np.concatenate([[1.0], np.arctanh(self.correlation.initial_rho(0.5))])

    def rho(self, theta: np.ndarray) -> np.ndarray:
        return np.tanh(np.asarray(theta, dtype=float)[1:])

    def _chol(self, theta: np.ndarray) -> np.ndarray:
        return np.linalg.cholesky(self.correlation.matrix(self.rho(theta)))

    def factor(self, theta: np.ndarray) -> np.ndarray:
        """``Lk = tau chol(C(rho))``."""
        return theta[0] * self._chol(theta)

    def elements(self, theta: np.ndarray) -> np.ndarray:
        L = self.factor(theta)
        return np.array([L[r, c] for r, c in self.element_positions])

    def element_jacobian(self, theta: np.ndarray) -> np.ndarray:
        """``d Lk[r, c] / d theta`` (rows: :attr:`element_positions`)."""
        theta = np.asarray(theta, dtype=float)
        L = self._chol(theta)
        rho = self.rho(theta)
        cols = [L]
        for j, dC in enumerate(self.correlation.derivatives(rho)):
            cols.append(theta[0] * (1.0 - rho[j] ** 2) * cholesky_derivative(L, dC))
        return np.array([[D[r, c] for D in cols] for r, c in self.element_positions])

    def canonical(self, theta: np.ndarray) -> np.ndarray:
        """``tau >= 0`` (the sign of ``Lk`` does not change ``Sigma``) and correlations within bounds."""
        theta = np.array(theta, dtype=float)
        theta[0] = abs(theta[0])
        theta[1:] = np.clip(theta[1:], self.lower_bounds[1:], self.upper_bounds[1:])
        return theta

    def below_diagonal(self, t: int) -> list[int]:
        return []

    def em_theta(self, sigma_rel: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """EM update of ``tau`` with the correlations held: ``tau^2 = tr(C^-1 S) / m``."""
        C = self.correlation.matrix(self.rho(theta))
        out = np.array(theta, dtype=float)
        out[0] = np.sqrt(max(np.trace(np.linalg.solve(C, sigma_rel)) / self.m, 0.0))
        return out

    def parameter_names(self) -> tuple[str, ...]:
        return ("variance",) + self.correlation.names(self.label)

    def natural_values(self, theta: np.ndarray, sigma2: float) -> np.ndarray:
        """``(sigma_g^2, rho_1, ...)``."""
        return np.concatenate([[sigma2 * theta[0] ** 2], self.rho(theta)])

    def natural_derivatives(self, theta: np.ndarray, sigma2: float) -> list[np.ndarray]:
        """``dSigma/d sigma_g^2 = C`` and ``dSigma/d rho_j = sigma_g^2 dC/d rho_j``."""
        rho = self.rho(theta)
        var = sigma2 * theta[0] ** 2
        return [self.correlation.matrix(rho)] + [var * d for d in self.correlation.derivatives(rho)]
