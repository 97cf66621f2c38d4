"""``LMM``: formula + data -> design -> fit.  Orchestration only."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .covariance import term_covariance
from .covariance.grids import build_residual
from .covariance.residual import ResidualStructure
from .design import FixedDesign, RandomBlock, build_fixed, build_random, model_frame
from .engine import MixedModelEquations, NotPositiveDefinite, fit_variance_parameters
from .engine.conditioning import fit_conditioned
from .engine.reml import IterationRecord, OptimizerResult
from .errors import ConvergenceWarning, DataError, LMMWarning, ModelSpecificationError
from .confounding import design_warnings
from .explain import ModelExplanation, explain_model
from .formula import ParsedFormula, parse_formula
from .results import FitResult
from .results.serialize import data_fingerprint, read_record

__all__ = ["LMM"]


@dataclass(frozen=True)
class Design:
    """Everything the engine needs, built once per model."""

    parsed: ParsedFormula
    fixed: FixedDesign
    random: tuple[RandomBlock, ...]
    residual: ResidualStructure | None
    n_dropped: int
    frame: object  # the complete-case rows the model is fitted to (pandas.DataFrame, never modified)


def _refuse_weights_and_offset(weights, offset) -> None:
    """statsmodels/lme4 users may pass these; say plainly that they are not supported and what to do."""
    if weights is not None:
        raise ModelSpecificationError(
            "observation weights are not supported in this version; model unequal residual variances with a "
            "residual structure such as 'Subject:diag(visit)', or fit without weights")
    if offset is not None:
        raise ModelSpecificationError(
            "offsets are not supported; subtract the offset from the response instead, e.g. 'I(y - o) ~ ...'")


_KEYWORD_HINTS = {
    "REML": "write fit(method='ML') or fit(method='REML') (lme4's REML=FALSE is method='ML')",
    "reml": "write fit(method='ML') or fit(method='REML')",
    "random": "random terms go in the formula: 'y ~ x + (1 | g)' (nlme's random = ~1|g)",
    "correlation": "residual correlations go in the formula: 'y ~ x + g:ar1(t)' (nlme's corAR1(form = ~t|g))",
    "groups": "groupings go in the formula: 'y ~ x + (1 | g)' (statsmodels' groups='g')",
    "re_formula": "random slopes go in the formula: 'y ~ x + (1 + x | g)' (statsmodels' re_formula='~x')",
    "vc_formula": "variance components go in the formula: 'y ~ x + (1 | g) + (1 | g:h)'",
    "residual": "the residual structure is a summand of the formula: 'y ~ x + ar1(row):ar1(col)' (ASReml's residual=)",
    "rcov": "the residual structure is a summand of the formula: 'y ~ x + ar1(row):ar1(col)' (ASReml's rcov=)",
    "subset": "select the rows of the DataFrame before building the model: data[data.x > 0]",
    "na_action": "rows with a missing value in a used column are dropped (lme4's na.omit); drop or impute others first",
}


def _refuse_keywords(other: dict, where: str) -> None:
    """Keywords of lme4, nlme, statsmodels or ASReml: say where that option lives here."""
    if not other:
        return
    name = next(iter(other))
    hint = _KEYWORD_HINTS.get(name, "")
    raise ModelSpecificationError(
        f"{where}() has no option {name!r}" + (f"; {hint}" if hint else
                                               "; see help(lmmformula.LMM) for the options"))


def _warn_lost_precision(mme: MixedModelEquations, ev, opt: OptimizerResult) -> None:
    """Warn when the estimates of a fit on orthogonalised columns, evaluated in the original parameterisation,
    give a log-likelihood that differs from the optimum's by more than 1e-6 (rounding in products of columns far
    from 0, e.g. ``(1 + x + I(x**2) | g)`` with x near 3000)."""
    if not opt.conditioned or not opt.history:
        return
    optimum, here = opt.history[-1].loglik, -0.5 * ev.deviance
    if abs(here - optimum) > 1e-6:
        names = ", ".join(mme.blocks[k].written for k in opt.conditioned)
        warnings.warn(
            f"the columns of {names} are so nearly collinear that the mixed model equations lose precision in "
            f"their original parameterisation: the log-likelihood there is {here:.8g} against {optimum:.8g} on "
            "orthogonalised columns, and the fixed effects, BLUPs and fitted values carry rounding errors of "
            "that order; centre or rescale the covariate (e.g. I(x - 1000))", LMMWarning, stacklevel=3)


class LMM:
    """A linear mixed model specified by an lme4-style formula.

    Parameters
    ----------
    formula : str
        ``"y ~ fixed + (expr | group) + ..."``; see the README for the syntax.
    data : pandas.DataFrame
        Never modified.  Rows with a missing value in a used column are dropped.
    matrices : dict, optional
        Known matrices named in ``vm(group, "name")`` terms: a labelled DataFrame (a covariance such as
        A or a GRM) or :func:`lmmformula.pedigree.inverse_relationship` of a pedigree.
    weights, offset : None
        Not supported: anything else raises :class:`~lmmformula.ModelSpecificationError` saying what to do
        instead (accepted as keywords so that statsmodels and lme4 habits get that message, not a TypeError).

    Examples
    --------
    >>> import lmmformula as lmf
    >>> fit = lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", data).fit()  # doctest: +SKIP
    """

    def __init__(self, formula: str, data, *, matrices: dict | None = None, weights=None, offset=None, **other):
        _refuse_weights_and_offset(weights, offset)
        _refuse_keywords(other, "LMM.from_formula")
        parsed = parse_formula(formula)
        if not parsed.random and parsed.residual is None:
            raise ModelSpecificationError(
                f"'{formula}' has no random term and no residual structure; add one such as '(1 | group)' or "
                "'ar1(row):ar1(col)', or use an ordinary least-squares routine"
            )
        if matrices is not None and not isinstance(matrices, dict):
            raise DataError(f'matrices must be a dict such as {{"A": A}}, got {type(matrices).__name__}')
        frame = model_frame(data, parsed)
        fixed = build_fixed(frame.data, parsed.response, parsed.fixed, formula)
        residual = build_residual(frame.data, parsed.residual) if parsed.residual is not None else None
        random = build_random(frame.data, parsed.random, formula, matrices,
                              unit_level_ok=residual is not None and residual.n_params > 0)
        n_theta = sum(term_covariance(b).n_theta + (b.grid.n_params if b.grid is not None else 0) for b in random)
        n_theta += residual.n_params if residual is not None else 0
        if fixed.X.shape[1] + n_theta + 1 > fixed.y.size:
            raise ModelSpecificationError(
                f"the model has {fixed.X.shape[1]} fixed effects and {n_theta + 1} covariance parameters but "
                f"only {fixed.y.size} observations; simplify the model"
            )
        self.formula = formula
        self.design = Design(parsed=parsed, fixed=fixed, random=random, residual=residual,
                             n_dropped=frame.n_dropped, frame=frame.data)

    @classmethod
    def from_formula(cls, formula: str, data, **kwargs) -> "LMM":
        """Build a model from a formula and a DataFrame (statsmodels-style constructor)."""
        return cls(formula, data, **kwargs)

    def fit(self, method: str = "REML", *, algorithm: str = "AI", verbose: bool = False,
            max_iter: int | None = None, tol: float = 1e-8, start: np.ndarray | None = None,
            weights=None, **other) -> FitResult:
        """Estimate the model.

        Parameters
        ----------
        method : {"REML", "ML"}
        algorithm : {"AI", "EM"}
            Average-information REML after two EM steps (default), or EM only.
        verbose : bool
            Print one line per iteration (log-likelihood, algorithm, step, parameters).
        max_iter : int, optional
            Defaults to 200 for AI and 20000 for EM.
        tol : float
            Convergence tolerance on the Newton decrement and on the log-likelihood change (or on the
            decrement alone when it is below tol / 100); a step taken at a decrement below tol that gains less
            than tol is the last one.
        start : array, optional
            Starting theta (relative Cholesky factors, formula order).

        Returns
        -------
        FitResult
        """
        _refuse_weights_and_offset(weights, None)
        _refuse_keywords(other, "fit")
        method = str(method).upper()
        if method not in ("REML", "ML"):
            raise ModelSpecificationError(f"method must be 'REML' or 'ML', got {method!r}")
        algorithm = str(algorithm).upper()
        if algorithm not in ("AI", "EM"):
            raise ModelSpecificationError(f"algorithm must be 'AI' or 'EM', got {algorithm!r}")
        for message in design_warnings(self.design)[0]:
            warnings.warn(f"{message} (LMM.explain() describes the model)", LMMWarning, stacklevel=2)
        mme = self._equations(method)
        theta0 = self._initial_theta(mme)
        if start is not None:
            try:
                theta0 = np.asarray(start, dtype=float).reshape(-1)
            except (TypeError, ValueError):
                theta0 = np.array([np.nan])
            if theta0.shape != (mme.n_params,) or not np.all(np.isfinite(theta0)):
                raise ModelSpecificationError(
                    f"start must be {mme.n_params} finite numbers (theta: relative Cholesky factors in formula "
                    f"order, then atanh of residual correlations), got {start!r}")
        if isinstance(tol, bool) or not (isinstance(tol, (int, float)) and np.isfinite(tol) and tol > 0):
            raise ModelSpecificationError(f"tol must be a positive number, got {tol!r}")
        if max_iter is not None and (isinstance(max_iter, bool)
                                     or not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1)):
            raise ModelSpecificationError(f"max_iter must be a positive integer, got {max_iter!r}")
        if max_iter is None:
            max_iter = 200 if algorithm == "AI" else 20000
        if algorithm == "EM" and (mme.n_kappa or mme.n_eta or any(c.structured for c in mme.covariances)):
            raise ModelSpecificationError(
                "algorithm='EM' updates variances and unstructured covariances only; this model has correlation, "
                "factor-analytic or residual-structure parameters, which EM does not estimate. "
                "Use algorithm='AI' (the default)"
            )
        try:
            mme.evaluate(mme.canonical(theta0))
        except (NotPositiveDefinite, np.linalg.LinAlgError):
            raise ModelSpecificationError(
                f"the starting values {np.round(theta0, 4).tolist()} give a covariance matrix that is not "
                "positive definite (e.g. Toeplitz correlations that no series can have); choose other values "
                "or omit start"
            ) from None
        try:
            # nearly collinear columns of an unstructured term (a slope on a covariate far from 0): iterate on
            # conditioned columns (a start given by the caller is mapped to them)
            opt = fit_conditioned(mme, theta0, given_start=start is not None, algorithm=algorithm,
                                  max_iter=max_iter, tol=tol, verbose=verbose) if algorithm == "AI" else None
            if opt is None:
                opt = fit_variance_parameters(mme, theta0, algorithm=algorithm, max_iter=max_iter, tol=tol,
                                              verbose=verbose)
        except NotPositiveDefinite:
            raise ModelSpecificationError(
                "the mixed model equations became numerically singular; check for fixed effects that are "
                "confounded with a grouping factor, or rescale covariates"
            ) from None
        ev = mme.evaluate(opt.theta)
        _warn_lost_precision(mme, ev, opt)
        if not opt.converged:
            warnings.warn(
                f"{method} iterations did not converge ({opt.message}); the estimates are the last iterate. "
                "Try fit(max_iter=...), rescaling covariates, or a simpler random-effect structure",
                ConvergenceWarning,
                stacklevel=2,
            )
        options = {"tol": tol, "max_iter": max_iter, "start": None if start is None else theta0.tolist()}
        return self._result(mme, ev, opt, method, algorithm, options)

    def explain(self, show: bool = True) -> ModelExplanation:
        """Describe the model this formula implies, before fitting: each random term's design size, levels
        and covariance, the residual structure, the number of covariance parameters, the fill of the mixed
        model equations, and warnings for combinations the data cannot identify.

        Parameters
        ----------
        show : bool
            Print the description (default).

        Returns
        -------
        ModelExplanation
            ``text``, ``warnings``, ``notes``, ``n_covariance_parameters``.
        """
        mme = self._equations("REML")
        theta0 = mme.canonical(self._initial_theta(mme))
        try:
            factor = mme.factorize(theta0) if mme.q else None
        except (NotPositiveDefinite, np.linalg.LinAlgError):
            factor = None
        explanation = explain_model(self.formula, self.design, mme.covariances, mme, theta0, factor)
        if show:
            print(explanation.text)
        return explanation

    def _equations(self, method: str) -> MixedModelEquations:
        """Henderson's mixed model equations of this design (REML or ML)."""
        d = self.design
        covs = tuple(term_covariance(b) for b in d.random)
        return MixedModelEquations(d.fixed.y, d.fixed.X, d.random, covs, d.residual, reml=method == "REML",
                                   sparse_X=d.fixed.X_sparse)

    def _initial_theta(self, mme: MixedModelEquations) -> np.ndarray:
        d = self.design
        return np.concatenate([c.initial_theta() for c in mme.covariances] + [mme.levels.initial()]
                              + [d.residual.initial_eta() if d.residual is not None else np.zeros(0)])

    def _result(self, mme, ev, opt, method: str, algorithm: str, options: dict) -> FitResult:
        d = self.design
        return FitResult(formula=self.formula, method=method, mme=mme, evaluation=ev, optimizer=opt,
                         fixed_names=d.fixed.names, dropped_fixed=d.fixed.dropped, response=d.fixed.response,
                         n_dropped=d.n_dropped, algorithm=algorithm, fixed_design=d.fixed, frame=d.frame,
                         model=self, options=options)

    @property
    def data_sha256(self) -> str:
        """SHA-256 fingerprint of the rows used and the known matrices (recorded by ``fit.to_json``)."""
        known = tuple(b.known for b in self.design.random if b.known is not None)
        return data_fingerprint(self.design.frame, known)

    def restore(self, record) -> FitResult:
        """The fit stored in a :meth:`FitResult.to_json` record, evaluated at its estimates without iterating.

        Parameters
        ----------
        record : dict, str or path
            What :meth:`FitResult.to_json` wrote.

        Raises
        ------
        DataError
            If these data (or known matrices) are not the ones the record was fitted to.
        ModelSpecificationError
            If the record is of another formula or another number of parameters.

        Warns
        -----
        LMMWarning
            When the log-likelihood recomputed at the stored estimates is not bit-identical to the stored one
            (the record was written by other code).
        """
        record = read_record(record)
        if record["formula"] != self.formula:
            raise ModelSpecificationError(
                f"the stored fit is of {record['formula']!r}, not of this model's {self.formula!r}; build the "
                "model from the stored formula (FitResult.from_json does)")
        if self.data_sha256 != record["data"]["sha256"]:
            raise DataError(
                f"these data are not the ones the stored fit used (SHA-256 {self.data_sha256[:12]}... against "
                f"{record['data']['sha256'][:12]}... recorded); pass the same rows in the same order, with the same "
                "values, dtypes and category orders in the columns the model uses, and the same matrices, or call "
                "from_json without data to read the stored tables")
        conv = record["convergence"]
        mme = self._equations(record["method"])
        theta = np.array(record["estimates"]["theta"], dtype=float)
        if theta.shape != (mme.n_params,):
            raise ModelSpecificationError(
                f"the stored fit has {theta.size} covariance parameters but this model has {mme.n_params}; the "
                "record does not belong to this model")
        history = tuple(IterationRecord(iteration=h["iteration"], algorithm=h["algorithm"],
                                        loglik=np.nan if h["loglik"] is None else h["loglik"],
                                        step=np.nan if h["step"] is None else h["step"], theta=tuple(h["theta"]))
                        for h in conv["history"])
        opt = OptimizerResult(theta=theta, converged=conv["converged"], n_iter=conv["n_iter"], history=history,
                              criterion=np.nan if conv["criterion"] is None else conv["criterion"],
                              at_boundary=tuple(conv["at_boundary"]), message=conv["message"],
                              tol=conv["tol"], conditioned=tuple(conv.get("conditioned", ())))
        ev = mme.evaluate(theta)
        stored = record["estimates"]["loglik"]
        if stored is not None and -0.5 * ev.deviance != stored:
            warnings.warn(
                f"the log-likelihood recomputed at the stored estimates ({-0.5 * ev.deviance!r}) differs from the "
                f"stored one ({stored!r}): this code is not the code that wrote the record (source SHA-256 "
                f"{record['versions'].get('lmmformula source sha256', '?')[:12]}... there); refit for "
                "this version's estimates", LMMWarning, stacklevel=3)
        return self._result(mme, ev, opt, record["method"], record["algorithm"], dict(record["options"]))
