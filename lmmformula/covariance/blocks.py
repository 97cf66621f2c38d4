"""Covariance of the effects within one level of a random term.

A term with ``m`` columns has effects ``u_l ~ N(0, Sigma)`` for each level
``l``, independent across levels, so ``G_k = I_L (x) Sigma``.  The engine
works with the relative Cholesky factor ``Sigma / sigma^2 = Lk Lk'`` whose
lower-triangular entries are the parameters ``theta`` (lme4's
parameterisation, Bates et al. 2015, eq. 5); diagonal entries are bounded
below by 0, so a variance may reach 0 (a singular fit) without failing.

``|`` gives an unstructured ``Sigma`` (m(m+1)/2 parameters); ``||`` gives a
diagonal one (m parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BlockCovariance"]


@dataclass(frozen=True)
class BlockCovariance:
    """Parameterisation of one term's ``m x m`` covariance.

    Attributes
    ----------
    columns : tuple of str
        Effect names (``"(Intercept)"``, ``"Days"``).
    correlated : bool
        Unstructured when True, diagonal when False.
    """

    columns: tuple[str, ...]
    correlated: bool = True

    structured = False

    @property
    def m(self) -> int:
        return len(self.columns)

    @property
    def element_positions(self) -> tuple[tuple[int, int], ...]:
        """Entries of ``Lk`` that vary: the parameters themselves."""
        return self.theta_positions

    def elements(self, theta: np.ndarray) -> np.ndarray:
        return np.asarray(theta, dtype=float)

    @property
    def upper_bounds(self) -> np.ndarray:
        return np.full(self.n_theta, np.inf)

    @property
    def theta_positions(self) -> tuple[tuple[int, int], ...]:
        """``(row, col)`` of each theta entry in ``Lk``, column-major lower triangle (lme4's order)."""
        if not self.correlated:
            return tuple((a, a) for a in range(self.m))
        return tuple((r, c) for c in range(self.m) for r in range(c, self.m))

    @property
    def n_theta(self) -> int:
        return len(self.theta_positions)

    @property
    def lower_bounds(self) -> np.ndarray:
        """0 for diagonal entries of ``Lk``, -inf for off-diagonal ones."""
        return np.array([0.0 if r == c else -np.inf for r, c in self.theta_positions])

    def initial_theta(self) -> np.ndarray:
        """Identity relative covariance (lme4's starting value)."""
        return np.array([1.0 if r == c else 0.0 for r, c in self.theta_positions])

    def factor(self, theta: np.ndarray) -> np.ndarray:
        """``Lk`` from ``theta``."""
        L = np.zeros((self.m, self.m))
        for value, (r, c) in zip(theta, self.theta_positions):
            L[r, c] = value
        return L

    def canonical(self, theta: np.ndarray) -> np.ndarray:
        """Same covariance with non-negative diagonal: a column of ``Lk`` with a negative diagonal is negated.

        ``Lk Lk'`` is unchanged by negating a column, so a step that carries a diagonal entry
        through 0 is reflected instead of being clamped onto the bound.
        """
        theta = np.array(theta, dtype=float)
        positions = self.theta_positions
        for t, (r, c) in enumerate(positions):
            if r == c and theta[t] < 0:
                for u, (r2, c2) in enumerate(positions):
                    if c2 == c:
                        theta[u] = -theta[u]
        return theta

    def below_diagonal(self, t: int) -> list[int]:
        """Theta indices below the diagonal entry ``t`` in the same column of ``Lk``."""
        r, c = self.theta_positions[t]
        return [u for u, (r2, c2) in enumerate(self.theta_positions) if c2 == c and r2 > r] if r == c else []

    def em_theta(self, sigma_rel: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """``theta`` with ``Lk Lk' = sigma_rel`` (nearest PSD matrix when it is not PD): the EM update."""
        S = 0.5 * (sigma_rel + sigma_rel.T)
        if not self.correlated:
            return np.sqrt(np.clip(np.diag(S), 0.0, None))
        w, V = np.linalg.eigh(S)
        w = np.clip(w, 0.0, None)
        S = (V * w) @ V.T
        jitter = 1e-12 * max(1.0, float(np.max(np.diag(S))))
        try:
            L = np.linalg.cholesky(S + jitter * np.eye(self.m))
        except np.linalg.LinAlgError:
            L = np.diag(np.sqrt(np.clip(np.diag(S), 0.0, None)))
        return np.array([L[r, c] for r, c in self.theta_positions])

    @property
    def parameters(self) -> tuple[tuple[int, int], ...]:
        """Covariance entries reported as parameters: variances first, then covariances."""
        diag = tuple((a, a) for a in range(self.m))
        if not self.correlated:
            return diag
        return diag + tuple((a, b) for b in range(self.m) for a in range(b + 1, self.m))

    def natural_values(self, theta: np.ndarray, sigma2: float) -> np.ndarray:
        """The entries of ``Sigma = sigma^2 Lk Lk'`` listed by :attr:`parameters`."""
        L = self.factor(theta)
        S = sigma2 * (L @ L.T)
        return np.array([S[a, b] for a, b in self.parameters])

    def natural_derivatives(self, theta: np.ndarray, sigma2: float) -> list[np.ndarray]:
        """``dSigma / dSigma[a, b]``: the symmetric 0/1 matrix ``E_ab``."""
        out = []
        for a, b in self.parameters:
            E = np.zeros((self.m, self.m))
            E[a, b] = E[b, a] = 1.0
            out.append(E)
        return out

    def parameter_names(self) -> tuple[str, ...]:
        """``variance`` for a scalar term, else ``var(x)`` and ``cov(x,z)`` (``(Intercept)`` -> ``Intercept``)."""
        if self.m == 1:
            return ("variance",)
        label = [c[1:-1] if c == "(Intercept)" else c for c in self.columns]
        names = []
        for a, b in self.parameters:
            names.append(f"var({label[a]})" if a == b else f"cov({label[b]},{label[a]})")
        return tuple(names)
