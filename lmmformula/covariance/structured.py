"""Structured covariance among the columns of a random term: ``ar1``, ``cs``, ``toep``, ``ma`` and ``fa``.

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

__all__ = ["StructuredCovariance", "FactorAnalytic", "cholesky_derivative"]


def cholesky_derivative(L: np.ndarray, dA: np.ndarray, L_inv: np.ndarray | None = None) -> np.ndarray:
    """``dL`` for ``A = L L'`` perturbed by ``dA``: ``L Phi(L^-1 dA L^-T)`` (``L_inv`` may be given)."""
    if L_inv is None:
        L_inv = scipy.linalg.solve_triangular(L, np.eye(L.shape[0]), lower=True)
    X = L_inv @ dA @ L_inv.T
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
        L_inv = scipy.linalg.solve_triangular(L, np.eye(self.m), lower=True)
        cols = [L]
        for j, dC in enumerate(self.correlation.derivatives(rho)):
            cols.append(theta[0] * (1.0 - rho[j] ** 2) * cholesky_derivative(L, dC, L_inv))
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


@dataclass(frozen=True)
class FactorAnalytic:
    """Factor-analytic covariance ``Sigma = Lambda Lambda' + Psi`` among the ``m`` columns of a term (``fa(..., k)``).

    ``Lambda`` is ``m x k`` with zeros above its diagonal (``Lambda[i, j] = 0`` for ``j > i``, which fixes the
    rotation) and ``Psi = diag(psi)``, ``psi >= 0``.  Relative to ``sigma^2`` the parameters are the free
    loadings (column-major) and ``s_j >= 1e-4`` with ``psi_j / sigma^2 = s_j^2``; the engine's factor is
    ``Lk = chol(Sigma / sigma^2)``, differentiated through :func:`cholesky_derivative` with
    ``dSigma/dLambda[i, j] = e_i l_j' + l_j e_i'`` and ``dSigma/ds_j = 2 s_j e_j e_j'``.
    """

    columns: tuple[str, ...]
    k: int
    labels: tuple[str, ...]

    structured = True

    @property
    def m(self) -> int:
        return len(self.columns)

    @property
    def loading_positions(self) -> tuple[tuple[int, int], ...]:
        return tuple((i, j) for j in range(self.k) for i in range(j, self.m))

    @property
    def n_theta(self) -> int:
        return len(self.loading_positions) + self.m

    @property
    def element_positions(self) -> tuple[tuple[int, int], ...]:
        return tuple((r, c) for c in range(self.m) for r in range(c, self.m))

    S_MIN = 1e-4  # specific standard deviations relative to sigma: psi >= 1e-8 sigma^2 keeps Sigma invertible

    @property
    def lower_bounds(self) -> np.ndarray:
        """Loadings are free; ``s_j >= 1e-4`` (``psi_j >= 1e-8 sigma^2``), so that ``Sigma`` stays positive
        definite and its Cholesky factor differentiable; an estimate there is reported as singular."""
        return np.concatenate([np.full(len(self.loading_positions), -np.inf), np.full(self.m, self.S_MIN)])

    @property
    def upper_bounds(self) -> np.ndarray:
        return np.full(self.n_theta, np.inf)

    def initial_theta(self) -> np.ndarray:
        """Loadings 0.5 (correlation 0.2 between columns through the first factor), ``s = 0.8``."""
        return np.concatenate([np.full(len(self.loading_positions), 0.5), np.full(self.m, 0.8)])

    def _parts(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta = np.asarray(theta, dtype=float)
        lam = np.zeros((self.m, self.k))
        n_l = len(self.loading_positions)
        for value, (i, j) in zip(theta[:n_l], self.loading_positions):
            lam[i, j] = value
        return lam, theta[n_l:]

    def relative(self, theta: np.ndarray) -> np.ndarray:
        lam, s = self._parts(theta)
        return lam @ lam.T + np.diag(s**2)

    def factor(self, theta: np.ndarray) -> np.ndarray:
        return np.linalg.cholesky(self.relative(theta))

    def elements(self, theta: np.ndarray) -> np.ndarray:
        L = self.factor(theta)
        return np.array([L[r, c] for r, c in self.element_positions])

    def _derivatives(self, lam: np.ndarray, psi_scale: np.ndarray) -> list[np.ndarray]:
        """``e_i l_j' + l_j e_i'`` for each free loading, then ``psi_scale[j] e_j e_j'``."""
        out = []
        for i, j in self.loading_positions:
            D = np.zeros((self.m, self.m))
            D[i, :] += lam[:, j]
            D[:, i] += lam[:, j]
            out.append(D)
        for j in range(self.m):
            D = np.zeros((self.m, self.m))
            D[j, j] = psi_scale[j]
            out.append(D)
        return out

    def _sigma_derivatives(self, theta: np.ndarray) -> list[np.ndarray]:
        lam, s = self._parts(theta)
        return self._derivatives(lam, 2.0 * s)

    def element_jacobian(self, theta: np.ndarray) -> np.ndarray:
        L = self.factor(theta)
        L_inv = scipy.linalg.solve_triangular(L, np.eye(self.m), lower=True)
        cols = [cholesky_derivative(L, D, L_inv) for D in self._sigma_derivatives(theta)]
        return np.array([[D[r, c] for D in cols] for r, c in self.element_positions])

    def canonical(self, theta: np.ndarray) -> np.ndarray:
        """Each factor's sign such that its diagonal loading is >= 0; ``s >= 0``."""
        theta = np.array(theta, dtype=float)
        pos = self.loading_positions
        for j in range(self.k):
            idx = [t for t, (i, jj) in enumerate(pos) if jj == j]
            if theta[idx[0]] < 0:
                theta[idx] = -theta[idx]
        n_l = len(pos)
        theta[n_l:] = np.maximum(np.abs(theta[n_l:]), self.S_MIN)
        return theta

    def below_diagonal(self, t: int) -> list[int]:
        return []

    def em_theta(self, sigma_rel: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """No closed-form EM update: the parameters are left unchanged (AI and Newton steps estimate them)."""
        return np.array(theta, dtype=float)

    def parameter_names(self) -> tuple[str, ...]:
        return (tuple(f"loading{j + 1}({self.labels[i]})" for i, j in self.loading_positions)
                + tuple(f"psi({lab})" for lab in self.labels))

    def natural_values(self, theta: np.ndarray, sigma2: float) -> np.ndarray:
        """Loadings of ``Sigma`` (``sigma`` times the relative ones) and ``psi = sigma^2 s^2``."""
        lam, s = self._parts(theta)
        sigma = np.sqrt(sigma2)
        return np.concatenate([[sigma * lam[i, j] for i, j in self.loading_positions], sigma2 * s**2])

    def natural_derivatives(self, theta: np.ndarray, sigma2: float) -> list[np.ndarray]:
        """``dSigma/dLambda[i, j] = e_i l_j' + l_j e_i'`` (absolute loadings) and ``dSigma/dpsi_j = e_j e_j'``."""
        lam, _ = self._parts(theta)
        return self._derivatives(lam * np.sqrt(sigma2), np.ones(self.m))
