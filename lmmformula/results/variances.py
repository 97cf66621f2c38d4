"""Variance components of a fit: the estimated covariance of each term, its table with standard errors, and
functions of the covariance parameters (``vpredict``).

:class:`VarianceComponents` is mixed into :class:`~lmmformula.results.fit.FitResult`, which supplies ``mme``,
``evaluation``, ``sigma2``, ``optimizer`` and ``_conditioned``.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.stats

from ..engine import variance_information
from ..engine.conditioning import natural_map
from ..errors import UnknownTermError

__all__ = ["VarianceComponents"]


def _labels(table: pd.DataFrame) -> list[str]:
    """``vpredict`` names: the term alone when it has one parameter, else ``term.parameter``."""
    counts = table["term"].value_counts()
    return ["residual" if (t, p) == ("residual", "variance") else t if counts[t] == 1 else f"{t}.{p}"
            for t, p in zip(table["term"], table["parameter"])]


class VarianceComponents:
    """Covariance estimates and their sampling covariance (mixin of :class:`FitResult`)."""

    def term_covariance(self, k: int) -> np.ndarray:
        """Estimated ``m x m`` covariance of term ``k``'s effects within a level."""
        cov = self.mme.covariances[k]
        t0, t1 = self.mme.theta_offsets[k], self.mme.theta_offsets[k + 1]
        L = cov.factor(self.evaluation.theta[t0:t1])
        return self.sigma2 * (L @ L.T)

    def covariance(self, term: str) -> pd.DataFrame:
        """Estimated covariance matrix of a term's block, labelled.

        For a random term: the ``m x m`` covariance of its effects within a level.  For ``"residual"``:
        ``sigma^2`` times the Kronecker product of the correlation matrices of its ar1/cs dimensions
        (labels ``dim=value``), i.e. the covariance within one level of its plain factors.
        """
        names = [b.name for b in self.mme.blocks]
        if term in names:
            k = names.index(term)
            cols = list(self.mme.blocks[k].columns)
            return pd.DataFrame(self.term_covariance(k), index=cols, columns=cols)
        if term == "residual":
            res = self.mme.residual
            C, labels = np.ones((1, 1)), [""]
            if res is not None:
                for d, e in zip(res.dimensions, res.split(self.mme.eta(self.evaluation.theta))):
                    if not d.n_params:
                        continue
                    C = np.kron(C, d.matrix(e))
                    labels = [f"{a}:{d.variable}={b}".lstrip(":") for a in labels for b in d.labels]
            labels = labels if labels != [""] else ["residual"]
            return pd.DataFrame(self.sigma2 * C, index=labels, columns=labels)
        raise UnknownTermError(f"no term {term!r}; use one of {', '.join(map(repr, names + ['residual']))}")

    def correlation(self, term: str) -> pd.DataFrame:
        """Correlation matrix of :meth:`covariance` (NaN where a variance is 0)."""
        cov = self.covariance(term)
        sd = np.sqrt(np.clip(np.diag(cov.to_numpy()), 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = cov.to_numpy() / np.outer(sd, sd)
        return pd.DataFrame(corr, index=cov.index, columns=cov.columns)

    @cached_property
    def _variance_parameter_cov(self) -> np.ndarray:
        mme, ev = self._conditioned or (self.mme, self.evaluation)
        ai = variance_information(mme, ev)
        w, V = np.linalg.eigh(ai)
        if w.min() <= 1e-12 * w.max():
            return np.full(ai.shape, np.nan)  # some parameter is not identified: no standard errors
        if self._conditioned is None:
            return (V / w) @ V.T
        J = natural_map(self.mme, self.optimizer.conditioned, ai.shape[0])  # Sigma = T Sigma~ T', linear
        return J @ ((V / w) @ V.T) @ J.T

    @cached_property
    def _reported_variances(self) -> tuple[pd.DataFrame, np.ndarray]:
        """The rows of :attr:`variance_components` (without SEs) and the sampling covariance of their
        estimates: the inverse average information of the natural parameters, carried to the reported scale
        of the residual-structure and grouping parameters by the delta method."""
        rows = []
        for k, (blk, cov) in enumerate(zip(self.mme.blocks, self.mme.covariances)):
            t0, t1 = self.mme.theta_offsets[k], self.mme.theta_offsets[k + 1]
            values = cov.natural_values(self.evaluation.theta[t0:t1], self.sigma2)
            rows.extend((blk.name, name, value) for name, value in zip(cov.parameter_names(), values))
        n_g = len(rows)
        cov = self._variance_parameter_cov
        psi = np.concatenate([[self.sigma2], self.evaluation.theta[self.mme.n_theta:]])
        terms, names, values = self._precision_parameters(psi)
        rows.extend(zip(terms, names, values))
        J = np.empty((len(values), psi.size))  # delta method from (sigma^2, kappa, eta) to the reported values
        for i in range(psi.size):
            h = 1e-6 * max(abs(psi[i]), 1e-3)
            e = np.zeros(psi.size)
            e[i] = h
            J[:, i] = (self._precision_parameters(psi + e)[2] - self._precision_parameters(psi - e)[2]) / (2 * h)
        T = scipy.linalg.block_diag(np.eye(n_g), J)
        table = pd.DataFrame(rows, columns=["term", "parameter", "estimate"])
        return table, T @ cov @ T.T

    @cached_property
    def variance_components(self) -> pd.DataFrame:
        """One row per covariance parameter: term, parameter, estimate, std_error, z_value and a 95% Wald
        interval (ci_lower, ci_upper).

        Standard errors come from the inverse average-information matrix in the
        (variance, covariance) parameterisation; they are asymptotic and poor near 0 (so are the Wald intervals,
        which may cross 0 for a variance), and NaN when that matrix is singular (a parameter not identified by
        the data).  ``label`` is the name to use in :meth:`vpredict`.
        """
        table, cov = self._reported_variances
        table = table.copy()
        se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        table["std_error"] = se
        with np.errstate(divide="ignore", invalid="ignore"):
            table["z_value"] = table["estimate"] / se
        z = scipy.stats.norm.ppf(0.975)
        table["ci_lower"] = table["estimate"] - z * se
        table["ci_upper"] = table["estimate"] + z * se
        table["label"] = _labels(table)
        return table

    def vpredict(self, expression: str) -> pd.Series:
        """A function of the covariance parameters with its delta-method standard error (ASReml's ``vpredict``).

        Parameters
        ----------
        expression : str
            ``"h2 = gen / (gen + residual)"`` or just the right-hand side.  Names are the ``label`` column of
            :attr:`variance_components`: a term with one parameter by its name (``gen``, ``rep:row``), others
            as ``term.parameter`` (``Subject.var(Days)``, ``residual.rho(row)``), the residual variance as
            ``residual``.  Arithmetic, ``**``, and numpy functions (``sqrt``, ``log``, ``exp``) are allowed.

        Returns
        -------
        Series
            ``estimate`` and ``std_error``, named after the left-hand side.
        """
        from ..inference.vpredict import evaluate_expression

        table, cov = self._reported_variances
        name, value, se = evaluate_expression(expression, list(self.variance_components["label"]),
                                              table["estimate"].to_numpy(), cov)
        return pd.Series({"estimate": value, "std_error": se}, name=name)

    def _precision_parameters(self, psi: np.ndarray) -> tuple[list[str], list[str], np.ndarray]:
        """Reported (term, parameter, value) of ``psi = (sigma^2, kappa, eta)``: structured groupings'
        correlations, the residual variance, then the residual structure's parameters."""
        mme = self.mme
        sigma2, kappa, eta = psi[0], psi[1:1 + mme.n_kappa], psi[1 + mme.n_kappa:]
        terms, names, values = [], [], []
        for k, blk in enumerate(mme.blocks):
            if blk.grid is not None:
                n, v = blk.grid.reported(mme.levels.block_kappa(kappa, k), sigma2)
                terms += [blk.name] * len(n)
                names += list(n)
                values += list(v)
        terms.append("residual")
        names.append("variance")
        values.append(sigma2)
        if mme.residual is not None:
            n, v = mme.residual.reported(eta, sigma2)
            terms += ["residual"] * len(n)
            names += list(n)
            values += list(v)
        return terms, names, np.array(values, dtype=float)
