"""Text and HTML rendering of a FitResult (computes nothing itself)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

__all__ = ["Summary"]


def _fmt(x: float, digits: int = 4) -> str:
    if x is None or not np.isfinite(x):
        return "NA"
    return f"{x:.{digits}g}" if abs(x) < 1e5 else f"{x:.{digits}e}"


class Summary:
    """lme4-style summary of a :class:`~lmmformula.results.FitResult`."""

    def __init__(self, fit):
        self.fit = fit

    def random_table(self) -> pd.DataFrame:
        """Groups, effect names, variances, standard deviations and correlations (lme4's VarCorr)."""
        fit = self.fit
        rows = []
        for k, blk in enumerate(fit.mme.blocks):
            S = fit.term_covariance(k)
            sd = np.sqrt(np.clip(np.diag(S), 0.0, None))
            for j, col in enumerate(blk.columns):
                corr = ""
                if j > 0 and blk.correlated:
                    denom = sd[:j] * sd[j]
                    vals = np.where(denom > 0, S[j, :j] / np.where(denom > 0, denom, 1.0), np.nan)
                    corr = " ".join(f"{c:.2f}" if np.isfinite(c) else "NA" for c in vals)
                rows.append({"group": blk.name if j == 0 else "", "name": col, "variance": S[j, j],
                             "std_dev": sd[j], "corr": corr})
        rows.append({"group": "Residual", "name": "", "variance": fit.sigma2, "std_dev": np.sqrt(fit.sigma2),
                     "corr": ""})
        return pd.DataFrame(rows)

    @property
    def has_structures(self) -> bool:
        """True when a term, a grouping or the residual has structure parameters (rho, loadings, ...)."""
        mme = self.fit.mme
        return bool(mme.n_kappa or mme.n_eta or any(c.structured for c in mme.covariances))

    def _convergence_line(self) -> str:
        fit, opt = self.fit, self.fit.optimizer
        algs = [h.algorithm for h in opt.history[1:]]
        steps = sum(algs.count(a) for a in ("EM", "AI", "NR"))
        counts = ", ".join(f"{algs.count(a)} {a}" for a in ("EM", "AI", "NR") if algs.count(a))
        state = "converged" if fit.converged else "did NOT converge"
        line = (f"{fit.method} {state} after {steps} steps ({counts}); last Newton decrement s'AI^-1 s = "
                f"{opt.criterion:.2e} (tolerance {opt.tol:g})")
        if opt.conditioned:
            names = ", ".join(fit.mme.blocks[k].written for k in opt.conditioned)
            line += f"; iterations on orthogonalised columns of {names} (nearly collinear; the same model)"
        return line

    def as_text(self) -> str:
        fit = self.fit
        lines = [f"Linear mixed model fit by {'REML' if fit.method == 'REML' else 'maximum likelihood'} "
                 "['lmmformula']", f"Formula: {fit.formula}", ""]
        crit = "REML criterion at convergence" if fit.method == "REML" else "deviance"
        lines.append(f"{'AIC':>10} {'BIC':>10} {'logLik':>10} {crit}")
        lines.append(f"{fit.aic:10.2f} {fit.bic:10.2f} {fit.loglik:10.2f} {-2 * fit.loglik:.4f}")
        lines += ["", "Random effects:"]
        rt = self.random_table()
        lines.append(f" {'Groups':<14} {'Name':<14} {'Variance':>11} {'Std.Dev.':>10}  Corr")
        for _, r in rt.iterrows():
            lines.append(f" {r['group']:<14} {r['name']:<14} {_fmt(r['variance']):>11} {_fmt(r['std_dev']):>10}  "
                         f"{r['corr']}")
        res = fit.mme.residual
        if res is not None:
            rhos = ", ".join(f"{k} = {v:.4f}" for k, v in fit.residual_correlations.items())
            lines.append(f"Residual structure: {res.text} ({res.n_cells} cells, {fit.n_obs} observed)"
                         + (f"; {rhos}" if rhos else ""))
        if self.has_structures:
            lines += ["", "Covariance parameters (ASReml-style; std. errors from the average information):"]
            for _, r in fit.variance_components.iterrows():
                lines.append(f" {r['term']:<22} {r['parameter']:<26} {_fmt(r['estimate']):>11} "
                             f"{_fmt(r['std_error']):>11}")
        groups = ", ".join(f"{b.name}, {b.n_levels}" for b in fit.mme.blocks) or "none"
        lines.append(f"Number of obs: {fit.n_obs} ({fit.n_dropped} dropped), groups: {groups}")
        lines += ["", "Fixed effects:"]
        fe = fit.fixed_effects
        lines.append(f" {'':<22} {'Estimate':>11} {'Std. Error':>11} {'df':>8} {'t value':>8} {'Pr(>|t|)':>9}")
        for name, r in fe.iterrows():
            lines.append(f" {name:<22} {_fmt(r['estimate'], 5):>11} {_fmt(r['std_error'], 5):>11} "
                         f"{_fmt(r['df'], 4):>8} {r['t_value']:8.3f} {_fmt(r['p_value'], 3):>9}")
        if fit.dropped_fixed:
            lines.append(f"Dropped aliased columns: {', '.join(fit.dropped_fixed)}")
        lines += ["", "Shrinkage (reliability = 1 - PEV / variance):"]
        for _, r in fit.shrinkage.iterrows():
            lines.append(f" {r['term']:<14} {r['effect']:<14} levels {r['n_levels']:>5}  obs/level "
                         f"{r['obs_per_level']:7.2f}  reliability mean {_fmt(r['reliability_mean'], 3)} "
                         f"[{_fmt(r['reliability_min'], 3)}, {_fmt(r['reliability_max'], 3)}]")
        lines += ["", self._convergence_line()]
        if fit.singular:
            lines.append("boundary (singular) fit: a variance (the residual's included) is 0 or a covariance "
                         "matrix is singular")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.as_text()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        fit = self.fit
        parts = [f"<h4>Linear mixed model ({html.escape(fit.method)})</h4>",
                 f"<p><code>{html.escape(fit.formula)}</code></p>",
                 f"<p>logLik {fit.loglik:.4f}, AIC {fit.aic:.2f}, BIC {fit.bic:.2f}, "
                 f"{fit.n_obs} observations ({fit.n_dropped} dropped)</p>",
                 "<h5>Random effects</h5>", self.random_table().to_html(index=False),
                 *(["<h5>Covariance parameters</h5>", fit.variance_components.to_html(index=False)]
                   if self.has_structures else []),
                 "<h5>Fixed effects</h5>", fit.fixed_effects.to_html(),
                 "<h5>Shrinkage</h5>", fit.shrinkage.to_html(index=False),
                 f"<p>{html.escape(self._convergence_line())}</p>"]
        return "\n".join(parts)
