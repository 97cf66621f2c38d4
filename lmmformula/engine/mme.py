"""Henderson's mixed model equations in scaled form, and the REML/ML objective.

With ``V = sigma^2 (Z Lam Lam' Z' + R~)`` (``G = sigma^2 Lam Lam'``, ``R = sigma^2 R~``, ``W = R~^-1``
sparse; ``W = I`` for independent residuals; below ``Z'Z`` stands for ``Z'WZ`` and so on)
and ``u = Lam v``, Henderson's MME

    [X'R^-1X  X'R^-1Z       ] [b]   [X'R^-1y]
    [Z'R^-1X  Z'R^-1Z + G^-1] [u] = [Z'R^-1y]

become, after multiplying the second block row and column by ``Lam``,

    C* = [X'X       X'Z Lam         ]
         [Lam'Z'X   Lam'Z'Z Lam + I ],

which stays non-singular when a variance is 0 (``Lam`` singular).  The
random block ``Cvv = Lam'Z'Z Lam + I`` is factored sparsely (fixed pattern,
numeric refactorization only); the fixed block is eliminated through the
dense ``p x p`` Schur complement ``Sb = X'X - X'Z Lam Cvv^-1 Lam'Z'X``.

Objective (profiled over sigma^2, lme4's constants; Bates et al. 2015 eqs. 34, 41):

    REML: -2 l = log|Cvv| + log|Sb| + log|R~| + (n-p) [1 + log(2 pi r2 / (n-p))]
    ML:   -2 l = log|Cvv|           + log|R~| +  n    [1 + log(2 pi r2 / n)]

with ``r2 = e'We + |v|^2``, ``e = y - Xb - Z Lam v`` (penalised residual sum of squares).

The parameter vector ``theta`` holds every term's parameters (relative Cholesky entries, or a structured
term's scale and atanh correlations), then the residual structure's parameters ``eta``.
These equal ``log|C| + log|R| + log|G| + y'Py`` of the unscaled equations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from ..covariance import BlockCovariance
from ..covariance.residual import ResidualStructure
from ..design import RandomBlock
from ..sparsepattern import pattern_keys, pattern_of, scatter, values_on
from .crossproducts import CrossProducts, WeightedProducts
from .factor import cholesky_solve, make_factor
from .lamcross import LamCrossMap
from .levels import LevelPrecision, LevelState
from .projections import ProjectionMixin
from .score import ScoreMixin

__all__ = ["MixedModelEquations", "Evaluation"]

LOG2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class Evaluation:
    """Everything known at one value of theta (no derivatives)."""

    theta: np.ndarray
    deviance: float          # -2 log-likelihood (REML or ML), profiled over sigma^2
    sigma2: float
    beta: np.ndarray
    v: np.ndarray            # spherical random effects, u = Lam v
    u: np.ndarray
    resid: np.ndarray        # y - X b - Z u
    w_resid: np.ndarray      # W (y - X b - Z u) = sigma^2 P y
    pwrss: float
    logdet_vv: float
    logdet_schur: float
    logdet_r: float
    schur_chol: np.ndarray   # lower Cholesky factor of Sb (p x p)
    B: np.ndarray            # Cvv^-1 Lam'Z'X  (q x p)


class MixedModelEquations(ScoreMixin, ProjectionMixin):
    """Fixed-pattern assembly and solution of the scaled MME for one model.

    Parameters
    ----------
    y : ndarray (n,)
    X : ndarray (n, p)
    blocks : sequence of RandomBlock
    covariances : sequence of BlockCovariance, one per block
    residual : ResidualStructure, optional
        Residual correlation structure (independent residuals when None).
    reml : bool
    dense_below : int
        Random blocks with at most this many columns use dense LAPACK.
    sparse_X : scipy.sparse.csc_matrix, optional
        ``X`` as a sparse matrix, when it is mostly zeros (see :func:`sparse_if_mostly_zero`).
    """

    def __init__(self, y, X, blocks: tuple[RandomBlock, ...], covariances: tuple[BlockCovariance, ...],
                 residual: ResidualStructure | None = None, *, reml: bool = True, dense_below: int = 400,
                 sparse_X: sp.csc_matrix | None = None):
        self.y = np.asarray(y, dtype=float)
        self.X = np.asarray(X, dtype=float)
        self.n, self.p = self.X.shape
        self.blocks = tuple(blocks)
        self.covariances = tuple(covariances)
        self.reml = reml
        self.Z = sp.hstack([b.Z for b in blocks], format="csc") if blocks else sp.csc_matrix((self.n, 0))
        self.q = self.Z.shape[1]
        self.Zt = self.Z.T.tocsr()  # Z' once: products with it recur in every iteration
        self.offsets = np.cumsum([0] + [b.Z.shape[1] for b in blocks])
        self.theta_offsets = np.cumsum([0] + [c.n_theta for c in covariances])
        self.n_theta = int(self.theta_offsets[-1])
        self.residual = residual
        self._dense_below = dense_below
        self.levels = LevelPrecision(self.blocks, [c.m for c in covariances], dense_below)
        self.n_kappa = self.levels.n_params
        self.n_eta = residual.n_params if residual is not None else 0
        self.n_params = self.n_theta + self.n_kappa + self.n_eta
        bounds = np.concatenate([self.levels.bounds(),
                                 residual.eta_bounds() if residual is not None else np.zeros((0, 2))])
        self.lower = np.concatenate([c.lower_bounds for c in covariances] + [bounds[:, 0]])
        self.upper = np.concatenate([c.upper_bounds for c in covariances] + [bounds[:, 1]])
        self._build_lambda_map()
        self.cross = CrossProducts(self.y, self.X, self.Z, residual, sparse_X)
        lam_s = pattern_of(self._lambda_pattern)
        diagonal = lam_s.nnz == self.q and np.array_equal(lam_s.indices, np.arange(self.q))
        spread = self.cross.ztwz_pattern if diagonal else lam_s.T @ self.cross.ztwz_pattern @ lam_s
        self._lam_diagonal = diagonal  # every term scalar: Lam is a diagonal matrix, applied elementwise
        cpat = (spread + self.levels.pattern()).tocsc()
        cpat.sort_indices()
        self._cvv_pattern = pattern_of(cpat)
        self._cvv_keys = pattern_keys(self._cvv_pattern)
        cross_map = LamCrossMap(self._lambda_pattern, self.cross.ztwz_pattern, self._cvv_keys) if self.q else None
        self._cvv_map = cross_map if cross_map is not None and cross_map.usable else None
        self._kinv_values = None  # K~^-1 on the pattern of Cvv, kept when it does not depend on theta
        self._lam_cache = None
        self._s_gather = None  # (layout of the selected inverse, positions of Cvv's entries in it)
        self._factor = None
        self._factor_theta = None
        self._pairs = self._theta_pairs()
        self._dw_cache = None
        self._theta_scale = None
        self._last_evaluation = None  # the most recent Evaluation (immutable; returned again for the same theta)

    @property
    def dense_below(self) -> int:
        """Random blocks with at most this many columns use dense LAPACK."""
        return self._dense_below

    @property
    def theta_scale(self) -> np.ndarray:
        """The natural unit of each parameter: ``1 / rms`` of the random-effect column an entry of ``Lk``
        multiplies (1 for intercepts and for structured, grouping and residual parameters).  A slope on a
        covariate measured in large units has a small theta at its optimum; boundary snapping and release use
        this unit so that they do not depend on the covariate's units."""
        if self._theta_scale is None:
            scale = np.ones(self.n_params)
            for k, (blk, cov) in enumerate(zip(self.blocks, self.covariances)):
                if cov.structured or not hasattr(cov, "theta_positions"):
                    continue
                rms = np.sqrt(np.mean(np.asarray(blk.X, dtype=float) ** 2, axis=0))
                for t, (r, _) in enumerate(cov.theta_positions):
                    if rms[r] > 0:
                        scale[self.theta_offsets[k] + t] = 1.0 / rms[r]
            self._theta_scale = scale
        return self._theta_scale

    # ---- fixed patterns -------------------------------------------------------------------
    def eta(self, theta: np.ndarray) -> np.ndarray:
        """The residual-structure part of the parameter vector."""
        return np.asarray(theta, dtype=float)[self.n_theta + self.n_kappa:]

    def products(self, theta: np.ndarray) -> WeightedProducts:
        """Residual-weighted cross-products at the residual parameters of ``theta``."""
        return self.cross.at(self.eta(theta))

    def kappa(self, theta: np.ndarray) -> np.ndarray:
        """The parameters of structured groupings (e.g. the correlations of ``(1 | ar1(row):ar1(col))``)."""
        return np.asarray(theta, dtype=float)[self.n_theta:self.n_theta + self.n_kappa]

    def level_state(self, theta: np.ndarray) -> LevelState:
        """``K~^-1`` and ``log|K~|`` at ``theta``."""
        return self.levels.at(self.kappa(theta))

    def k_times(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``K~ x`` (identity unless a grouping is known or structured)."""
        return self.levels.times(self.kappa(theta), x)

    def _build_lambda_map(self) -> None:
        """Pattern of ``Lam`` and, for each stored entry, its index in the vector of factor elements.

        The elements are the entries of every ``Lk`` that vary (:attr:`element_positions`): the
        parameters themselves for an unstructured term, the lower triangle for a structured one.
        """
        rows, cols, eidx = [], [], []
        self.element_offsets = np.cumsum([0] + [len(c.element_positions) for c in self.covariances])
        for k, (blk, cov) in enumerate(zip(self.blocks, self.covariances)):
            m, L, off = cov.m, blk.n_levels, self.offsets[k]
            for t, (r, c) in enumerate(cov.element_positions):
                base = off + np.arange(L) * m
                rows.append(base + r)
                cols.append(base + c)
                eidx.append(np.full(L, self.element_offsets[k] + t))
        if rows:
            r, c, t = (np.concatenate(a) for a in (rows, cols, eidx))
        else:
            r = c = t = np.zeros(0, dtype=np.int64)
        coo = sp.csc_matrix((np.arange(1, r.size + 1, dtype=float), (r, c)), shape=(self.q, self.q))
        coo.sort_indices()
        order = coo.data.astype(np.int64) - 1
        self._lambda_pattern = coo
        self._lambda_element_index = t[order]
        self.structured = any(c.structured for c in self.covariances)

    def elements(self, theta: np.ndarray) -> np.ndarray:
        """The varying entries of every ``Lk`` at ``theta``."""
        theta = np.asarray(theta, dtype=float)
        if not self.structured:
            return theta[:self.n_theta]
        return np.concatenate([np.zeros(0)] + [c.elements(theta[self.theta_offsets[k]:self.theta_offsets[k + 1]])
                                               for k, c in enumerate(self.covariances)])

    def element_jacobian(self, theta: np.ndarray) -> np.ndarray | None:
        """``d elements / d theta`` (block diagonal over terms), or None when it is the identity."""
        if not self.structured:
            return None
        J = np.zeros((int(self.element_offsets[-1]), self.n_theta))
        for k, c in enumerate(self.covariances):
            t0, t1 = self.theta_offsets[k], self.theta_offsets[k + 1]
            e0, e1 = self.element_offsets[k], self.element_offsets[k + 1]
            J[e0:e1, t0:t1] = c.element_jacobian(theta[t0:t1]) if c.structured else np.eye(t1 - t0)
        return J

    def lam_values(self, theta: np.ndarray) -> np.ndarray:
        """The stored values of ``Lam`` at ``theta`` in the CSC order of its pattern (the last ones are kept: an
        iteration asks for them several times), read-only."""
        theta = np.asarray(theta, dtype=float)
        key = theta.tobytes()  # called many times per iteration: a byte comparison is the cheapest check
        cached = self._lam_cache
        if cached is None or cached[0] != key:
            values = self.elements(theta)[self._lambda_element_index]
            values.flags.writeable = False
            cached = self._lam_cache = [key, values, None]
        return cached[1]

    def lam(self, theta: np.ndarray) -> sp.csc_matrix:
        """``Lam`` (block diagonal, ``I_L (x) Lk`` per term) at ``theta`` (kept with :meth:`lam_values`)."""
        values = self.lam_values(theta)
        if self._lam_cache[2] is None:
            out = self._lambda_pattern.copy()
            out.data = values
            self._lam_cache[2] = (out, out.T)
        return self._lam_cache[2][0]

    def lam_t(self, theta: np.ndarray) -> sp.csr_matrix:
        """``Lam'`` at ``theta`` (kept with :meth:`lam`)."""
        self.lam(theta)
        return self._lam_cache[2][1]

    def lam_times(self, theta: np.ndarray, x: np.ndarray, transpose: bool = False) -> np.ndarray:
        """``Lam x`` (``Lam' x`` with ``transpose``) for a vector or the columns of a matrix: elementwise when every
        term is scalar (a diagonal ``Lam``), a sparse product otherwise."""
        if self._lam_diagonal:
            d = self.lam_values(theta)
            return d * x if np.ndim(x) == 1 else d[:, None] * x
        return (self.lam_t(theta) if transpose else self.lam(theta)) @ x

    def _theta_pairs(self):
        """For each element ``Lk[r, s]``: indices (x, y) = ((l, s), (l, r)) over the levels l."""
        pairs = []
        for k, (blk, cov) in enumerate(zip(self.blocks, self.covariances)):
            base = self.offsets[k] + np.arange(blk.n_levels) * cov.m
            for r, s in cov.element_positions:
                pairs.append((base + s, base + r))
        return pairs

    # ---- evaluation ------------------------------------------------------------------------
    def canonical(self, theta: np.ndarray) -> np.ndarray:
        """Theta with every diagonal entry of every ``Lk`` non-negative (same covariance), and residual
        parameters clipped to their bounds."""
        theta = np.array(theta, dtype=float)
        for k, cov in enumerate(self.covariances):
            t0, t1 = self.theta_offsets[k], self.theta_offsets[k + 1]
            theta[t0:t1] = cov.canonical(theta[t0:t1])
        theta[self.n_theta:] = np.clip(theta[self.n_theta:], self.lower[self.n_theta:], self.upper[self.n_theta:])
        return theta

    def below_diagonal(self, i: int) -> list[int]:
        """Global theta indices below diagonal entry ``i`` in its column of ``Lk``."""
        if i >= self.n_theta:
            return []
        k = int(np.searchsorted(self.theta_offsets, i, side="right") - 1)
        t0 = self.theta_offsets[k]
        return [t0 + u for u in self.covariances[k].below_diagonal(i - t0)]

    def cvv(self, theta: np.ndarray, lam: sp.csc_matrix | None = None) -> sp.csc_matrix:
        """``Lam'Z'WZ Lam + K~^-1`` on its fixed pattern (``K~^-1 = I`` unless a grouping is known or structured)."""
        if self._cvv_map is None:
            lam = self.lam(theta) if lam is None else lam
            M = lam.T @ self.products(theta).ZtWZ @ lam + self.level_state(theta).kinv
            return scatter(M, self._cvv_pattern, self._cvv_keys)
        kinv = self._kinv_values
        if kinv is None:
            kinv = values_on(self.level_state(theta).kinv, self._cvv_keys)
            if self.n_kappa == 0:
                self._kinv_values = kinv
        lam_values = self.lam_values(theta) if lam is None else lam.data
        pat = self._cvv_pattern  # its index arrays are shared, never modified: the factor recognises the pattern
        return sp.csc_matrix((self._cvv_map(lam_values, self.products(theta).ZtWZ.data) + kinv, pat.indices,
                              pat.indptr), shape=pat.shape)

    def selected_on_cvv(self, S) -> np.ndarray:
        """Values of the selected inverse ``S`` (sparse on the factor's pattern, or dense) at the stored positions
        of ``Cvv``, which the factor's pattern contains; the gather positions are kept for ``S``'s fixed layout."""
        if not sp.issparse(S):
            if self._s_gather is None or self._s_gather[0] is not None:
                P = self._cvv_pattern
                cols = np.repeat(np.arange(P.shape[1]), np.diff(P.indptr))
                self._s_gather = (None, (P.indices, cols))
            rows, cols = self._s_gather[1]
            return S[rows, cols]
        cached = self._s_gather
        if cached is None or cached[0] is None or not (np.array_equal(cached[0][0], S.indptr)
                                                       and np.array_equal(cached[0][1], S.indices)):
            s_keys = pattern_keys(S)
            pos = np.minimum(np.searchsorted(s_keys, self._cvv_keys), max(s_keys.size - 1, 0))
            if s_keys.size == 0 or np.any(s_keys[pos] != self._cvv_keys):
                raise RuntimeError("the selected inverse does not cover the pattern of Cvv")
            cached = self._s_gather = ((S.indptr.copy(), S.indices.copy()), pos)
        return S.data[cached[1]]

    def factorize(self, theta: np.ndarray, lam: sp.csc_matrix | None = None):
        """Factor ``Cvv`` at ``theta`` (numeric refactorization after the first call)."""
        if self.q == 0:  # no random effects (GLS with a residual structure): an empty block
            if self._factor is None:
                self._factor = make_factor(sp.csc_matrix((0, 0)), self._dense_below)
            self._factor_theta = np.array(theta, dtype=float)
            return self._factor
        A = self.cvv(theta, lam)
        self._factor_theta = None  # a failed refactorization leaves no valid factor behind
        if self._factor is None:
            self._factor = make_factor(A, self._dense_below)
        else:
            self._factor.refactor(A)
        self._factor_theta = np.array(theta, dtype=float)
        return self._factor

    def factor_at(self, theta: np.ndarray):
        """The factorization of ``Cvv`` at ``theta``, refactoring only when it holds another theta."""
        if self._factor_theta is None or not np.array_equal(self._factor_theta, theta):
            self.factorize(theta)
        return self._factor

    def evaluate(self, theta: np.ndarray) -> Evaluation:
        """Solve the MME and compute the profiled objective at ``theta`` (eq. in module docstring)."""
        theta = np.array(theta, dtype=float)  # a private, read-only copy: the cache key and Evaluation.theta
        theta.flags.writeable = False
        last = self._last_evaluation
        if last is not None and np.array_equal(last.theta, theta):
            return last
        ev = self._evaluate(theta)
        self._last_evaluation = ev
        return ev

    def _evaluate(self, theta: np.ndarray) -> Evaluation:
        prod = self.products(theta)
        fac = self.factorize(theta)
        if self.q:
            CvB = np.asarray(self.lam_times(theta, prod.ZtWX, transpose=True))
            rhs_v = self.lam_times(theta, prod.ZtWy, transpose=True)
            cv = fac.solve(rhs_v)
            B = fac.solve(CvB) if self.p else np.zeros((self.q, 0))
        else:
            CvB, rhs_v, cv, B = np.zeros((0, self.p)), np.zeros(0), np.zeros(0), np.zeros((0, self.p))
        schur = prod.XtWX - CvB.T @ B if self.q else prod.XtWX
        if self.p:
            # LAPACK on the Fortran view of the symmetric Sb (overwritten when it is a temporary; X'WX without random
            # effects is the cached product, copied); a NaN or inf in its lower triangle reaches the factor's diagonal
            chol, info = scipy.linalg.lapack.dpotrf(schur.T if schur.flags.c_contiguous else schur, lower=True,
                                                    overwrite_a=bool(self.q))
            diag = np.diag(chol)
            if info != 0 or not np.all(np.isfinite(diag)):
                raise np.linalg.LinAlgError("the Schur complement of the fixed effects is not positive definite")
            beta = cholesky_solve(chol, prod.XtWy - B.T @ rhs_v)
            logdet_schur = float(2.0 * np.sum(np.log(diag)))
        else:
            chol, beta, logdet_schur = np.zeros((0, 0)), np.zeros(0), 0.0
        v = cv - B @ beta
        u = self.lam_times(theta, v) if self.q else v
        X = self.cross.fixed_design()[0]  # indicator columns: sparse
        resid = self.y - X @ beta - (self.Z @ u if self.q else 0.0)
        w_resid = prod.weight(resid)
        levels = self.level_state(theta)
        pwrss = float(resid @ w_resid + v @ (levels.kinv @ v))
        logdet_vv = fac.logdet()
        dof = self.n - self.p if self.reml else self.n
        sigma2 = pwrss / dof
        dev = (logdet_vv + (logdet_schur if self.reml else 0.0) + prod.logdet_r + levels.logdet
               + dof * (1.0 + LOG2PI + np.log(sigma2)))
        return Evaluation(theta=theta, deviance=float(dev), sigma2=sigma2, beta=beta, v=v, u=u, resid=resid,
                          w_resid=w_resid, pwrss=pwrss, logdet_vv=logdet_vv, logdet_schur=logdet_schur,
                          logdet_r=prod.logdet_r, schur_chol=chol, B=B)

    def deviance_at(self, theta: np.ndarray, sigma2: float) -> float:
        """-2 log-likelihood at ``theta`` and a given (not profiled) ``sigma^2``."""
        ev = self.evaluate(theta)
        dof = self.n - self.p if self.reml else self.n
        extra = ev.logdet_schur if self.reml else 0.0
        return float(ev.logdet_vv + extra + ev.logdet_r + self.level_state(theta).logdet
                     + dof * (LOG2PI + np.log(sigma2))
                     + ev.pwrss / sigma2)
