"""Variance-parameter estimation: EM-REML first steps, then average-information (AI) Newton steps.

The iteration works on theta (relative Cholesky factors) with sigma^2 profiled
out.  Each AI step solves ``AI d = s`` (``s`` the score, ``AI`` the average
information of Gilmour, Thompson & Cullis 1995, a Fisher-scoring matrix) and
halves the step until the objective improves.  A step that carries a
diagonal entry of a factor through 0 is reflected (the column is negated,
which leaves the covariance unchanged), so the bound ``Lk[j, j] >= 0`` never
stops a step half-way.

For models with correlation parameters (residual structures, structured groupings, structured terms), AI
leaves out the second derivatives of ``V`` in the parameters that enter it non-linearly, and AI steps then
converge only linearly; near the optimum the AI matrix is corrected by a secant update (Dennis, Gay & Welsch
1981: AI plays the part of Gauss-Newton's ``J'J`` in NL2SOL), which makes the last steps superlinear.

When the AI matrix models the curvature poorly (two steps whose gain differs
from the predicted gain by more than a factor of 4, typical on ridges near a
singular covariance matrix where AI steps zig-zag, or an AI step that cannot
improve the objective, or full AI steps whose Newton decrement falls by less than a factor
0.3, i.e. linear convergence), the remaining steps are Newton-Raphson steps on the
observed Hessian, taken by central differences of the analytic gradient, with
its eigenvalues made positive.  When no step helps, an EM step (which cannot
decrease the likelihood) is taken instead.

Entries within 1e-4 of 0 are put on 0 when that does not worsen the objective
(scoring approaches a zero variance only geometrically); a variance held at 0
is released when a small positive value, with either sign of the entries
below it, improves the objective.  Its score at 0 is 0 whatever the curvature, so
this is tested once the decrement of the free parameters falls below
``RELEASE_FROM`` (a capped first step can land a variance exactly on 0) and again
at convergence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .factor import NotPositiveDefinite
from .em import em_step
from .mme import Evaluation, MixedModelEquations

__all__ = ["IterationRecord", "OptimizerResult", "fit_variance_parameters", "SINGULAR_TOL"]

SINGULAR_TOL = 1e-4  # a diagonal entry of Lk below this is a singular fit (lme4's isSingular tolerance)
# A tiny Newton decrement alone ends the iterations only if the last step's gain was what the previous decrement
# predicted (at most 4 times it) or below this: an ill-conditioned AI matrix (a covariate around 1000 in a random
# slope) can give decrements of 1e-14 while the log-likelihood still rises by 1e-3 per step.
CHANGE_CAP = 1e-6


@dataclass(frozen=True)
class IterationRecord:
    """One line of the iteration history."""

    iteration: int
    algorithm: str      # "start", "EM", "AI", "NR" (Newton-Raphson on the observed Hessian) or "release"
    loglik: float
    step: float         # step length actually taken (1 = full step)
    theta: tuple[float, ...]


@dataclass(frozen=True)
class OptimizerResult:
    theta: np.ndarray
    converged: bool
    n_iter: int
    history: tuple[IterationRecord, ...]
    criterion: float          # the last Newton decrement s' AI^-1 s computed (free parameters), < tol when converged
    at_boundary: tuple[int, ...] = field(default_factory=tuple)
    message: str = ""
    tol: float = 1e-8
    conditioned: tuple[int, ...] = ()  # terms first fitted on conditioned columns (engine.conditioning)


def _solve_psd(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve with a symmetric matrix, discarding directions of (near) zero information."""
    w, V = np.linalg.eigh(A)
    keep = w > 1e-10 * max(float(w.max(initial=0.0)), 1e-300)
    return V[:, keep] @ ((V[:, keep].T @ b) / w[keep])


_FAILURES = (NotPositiveDefinite, np.linalg.LinAlgError, RuntimeError)


def _try_evaluate(mme: MixedModelEquations, theta: np.ndarray) -> Evaluation | None:
    """The evaluation at ``theta``, or None where the covariance is not positive definite (e.g. a banded
    Toeplitz correlation outside its admissible region)."""
    try:
        return mme.evaluate(theta)
    except _FAILURES:
        return None


def _newton_direction(mme: MixedModelEquations, theta: np.ndarray, gradient: np.ndarray,
                      free: np.ndarray) -> np.ndarray | None:
    """``-H^-1 g`` on the free parameters, ``H`` the finite-difference Hessian of the profiled deviance
    (None when a difference step leaves the admissible region)."""
    idx = np.flatnonzero(free)
    if idx.size == 0:
        return np.zeros_like(theta)
    H = np.empty((idx.size, idx.size))
    for col, i in enumerate(idx):
        h = 1e-5 * max(abs(theta[i]), 0.1)
        e = np.zeros_like(theta)
        e[i] = h
        try:
            H[:, col] = (mme.profiled_gradient(theta + e)[idx] - mme.profiled_gradient(theta - e)[idx]) / (2 * h)
        except _FAILURES:
            mme.factor_at(theta)
            return None
    w, V = np.linalg.eigh(0.5 * (H + H.T))
    w = np.maximum(np.abs(w), 1e-8 * max(float(np.abs(w).max()), 1e-300))
    out = np.zeros_like(theta)
    out[idx] = -V @ ((V.T @ gradient[idx]) / w)
    return out


def _line_search(mme: MixedModelEquations, ev: Evaluation, direction: np.ndarray):
    """Halve the step until the deviance does not increase; None when no step helps.

    A step that carries a diagonal entry of some ``Lk`` through 0 is reflected (the column is
    negated, which leaves the covariance unchanged) rather than clamped onto the bound.
    """
    scale = float(np.max(np.abs(direction), initial=0.0))
    cap = max(1.0, float(np.max(np.abs(ev.theta), initial=0.0)))
    t = min(1.0, cap / scale) if scale > 0 else 1.0
    for _ in range(30):
        trial = _try_evaluate(mme, mme.canonical(ev.theta + t * direction))
        if trial is not None and trial.deviance <= ev.deviance + 1e-12:
            return trial, t
        t *= 0.5
    return None, 0.0


def fit_variance_parameters(mme: MixedModelEquations, theta0: np.ndarray, *, algorithm: str = "AI",
                            em_steps: int = 2, max_iter: int = 200, tol: float = 1e-8,
                            verbose: bool = False, printer=print) -> OptimizerResult:
    """Maximise the (restricted) likelihood over theta.

    Parameters
    ----------
    mme : MixedModelEquations
    theta0 : ndarray
        Starting value.
    algorithm : {"AI", "EM"}
        ``"AI"``: ``em_steps`` EM steps, then AI steps (EM as fallback); ``"EM"``: EM only.
    em_steps : int
        EM-REML steps taken before switching to AI.
    max_iter : int
    tol : float
        Convergence when the Newton decrement ``s' AI^-1 s`` (log-likelihood units) of the free
        parameters and the last change of the log-likelihood are both below ``tol``, or the decrement is
        below ``tol / 100`` and the last change was no more than the previous decrement predicted.  An AI
        step that ends where its direction put it (any length), taken at a decrement below ``tol`` and gaining
        less than ``tol``, ends the iterations at its end point without new derivatives there.
    verbose : bool
        Print one line per iteration (log-likelihood, algorithm, step, parameters).
    """
    if algorithm not in ("AI", "EM"):
        raise ValueError(f"algorithm must be 'AI' or 'EM', got {algorithm!r}")
    if algorithm == "EM":
        em_steps = max_iter
    elif mme.q == 0 or mme.n_eta or mme.n_kappa or mme.structured:
        # EM does not update correlations: with a residual structure, a structured grouping or a structured
        # term its first steps only rescale variances around a fixed starting correlation
        em_steps = 0
    lower = mme.lower
    theta = mme.canonical(np.asarray(theta0, dtype=float))
    ev = mme.evaluate(theta)
    history: list[IterationRecord] = []
    releases: dict[int, int] = {}
    converged, crit, message = False, np.inf, ""
    newton_mode, poor_ai, slow_steps, prev_crit = False, 0, 0, np.inf
    tried_early = False
    secant = _SecantCorrection() if (mme.n_eta or mme.n_kappa or mme.structured) else None

    def log(it, alg, e, step):
        rec = IterationRecord(it, alg, -0.5 * e.deviance, step, tuple(float(x) for x in e.theta))
        history.append(rec)
        if verbose:
            pars = " ".join(f"{x:.6g}" for x in e.theta)
            printer(f"iter {it:3d}  {alg:>7}  logL {rec.loglik:.8f}  step {step:.4g}  theta [{pars}]")

    log(0, "start", ev, 0.0)
    it = 0
    last_change = np.inf
    while it < max_iter:
        it += 1
        der = mme.derivatives(ev)
        score = -0.5 * der.gradient
        # a variance exactly at 0 has zero score and zero information: hold it (released below)
        held = ((theta <= lower) & (score <= 0)) | ((theta >= mme.upper) & (score >= 0))
        free = ~held
        direction = np.zeros_like(theta)
        if free.any():
            direction[free] = _solve_psd(der.ai[np.ix_(free, free)], score[free])
        crit = float(score[free] @ direction[free]) if free.any() else 0.0
        if secant is not None:
            # near the optimum (AI decrement below SECANT_FROM) the corrected AI models the curvature better
            near = prev_crit < SECANT_FROM
            secant.update(theta, 0.5 * der.gradient, der.ai, keep=near)
            if near and free.any():
                curvature = secant.model(der.ai, free)
                if curvature is not der.ai:
                    direction[free] = _solve_psd(curvature[np.ix_(free, free)], score[free])
        gain = float(score[free] @ direction[free]) if free.any() else 0.0  # predicted by the model used
        # converged: the decrement and the last change below tol, or the decrement alone far below it (a
        # further step would only confirm what the decrement already says)
        done = (it > em_steps or algorithm == "EM") and crit < tol and (
            last_change < tol or (crit < 1e-2 * tol and last_change < max(CHANGE_CAP, 4.0 * prev_crit)))
        # a variance held at 0 is tested once the free parameters are near their optimum (its score at 0 is 0
        # whatever the curvature), not only at convergence: a step that ended on 0 need not keep it there
        early = not done and it > em_steps and held.any() and crit < RELEASE_FROM and not tried_early
        if done or early:
            tried_early = True
            newly = _release_boundary(mme, ev, held, releases)
            if newly is not None:
                ev, theta = newly, newly.theta
                log(it, "release", ev, 0.0)
                last_change = np.inf
                continue
            if done:
                converged = True
                break
        new_ev, step, alg = None, 0.0, "AI"
        if it > em_steps:
            if not newton_mode:
                new_ev, step = _line_search(mme, ev, direction)
                if new_ev is not None and crit > 1e-6:
                    predicted = (step - 0.5 * step**2) * gain
                    ratio = 0.5 * (ev.deviance - new_ev.deviance) / predicted
                    poor_ai = poor_ai + 1 if not 0.25 <= ratio <= 4.0 else 0
                    slow = step == 1.0 and crit > 0.3 * prev_crit  # full steps converging only linearly
                    slow_steps = slow_steps + 1 if slow else 0
                    newton_mode = poor_ai >= 2 or slow_steps >= 2 or it > em_steps + 20
            if new_ev is None or newton_mode:
                alg = "NR"
                newton = _newton_direction(mme, theta, der.gradient, free)
                new_ev, step = _line_search(mme, ev, newton) if newton is not None else (None, 0.0)
        if new_ev is None:
            alg = "EM"
            em_theta = mme.canonical(em_step(mme, ev, der.selected_inverse))
            if np.array_equal(em_theta, ev.theta):  # EM updates no parameter of this model (correlations only)
                message = ("no step improves the objective and the EM step changes no parameter (e.g. a banded "
                           "Toeplitz correlation next to the edge of positive definiteness)")
                break
            new_ev, step = _try_evaluate(mme, em_theta), 1.0
            if new_ev is None:
                message = "no step improves the objective and the EM step leaves the admissible region"
                break
        prev_crit = crit
        expected = ev.theta + step * (direction if alg == "AI" else 0.0)
        new_ev = _snap_to_bound(mme, new_ev)
        plain = alg == "AI" and float(np.max(np.abs(new_ev.theta - expected), initial=0.0)) <= 1e-12
        if secant is not None:
            secant.step_taken(ev.theta, new_ev.theta, 0.5 * der.gradient, plain)
        last_change = abs(ev.deviance - new_ev.deviance) / 2.0
        ev, theta = new_ev, new_ev.theta
        log(it, alg, ev, step)
        if (plain and it > em_steps and crit < tol and not held.any()
                and last_change < min(tol, max(CHANGE_CAP, 4.0 * gain))):
            # the decrement before this step and the gain of the step are both below tol, as predicted: the
            # derivatives at the new point would only confirm it (their decrement is of the order of crit^2)
            converged = True
            break
    else:
        message = f"stopped after {max_iter} iterations"
    bounds = tuple(int(i) for i in np.flatnonzero((np.isfinite(lower) & (theta <= lower + SINGULAR_TOL))
                                                  | (theta >= mme.upper - SINGULAR_TOL)))
    return OptimizerResult(theta=theta, converged=converged, n_iter=it, history=tuple(history),
                           criterion=crit, at_boundary=bounds, message=message, tol=tol)


SECANT_FROM = 0.1  # the decrement (log-likelihood units) below which secant pairs are collected and used
RELEASE_FROM = 1e-2  # the decrement below which variances held at 0 are first tested for release


class _SecantCorrection:
    """A correction ``S`` to the average information, updated so that ``AI + S`` satisfies the secant
    equation ``(AI_k+1 + S) s = g_k+1 - g_k`` (the structured quasi-Newton update of Dennis, Gay & Welsch 1981,
    as in NL2SOL, with AI in the role of Gauss-Newton's ``J'J``).  AI leaves out the second derivatives of
    ``V`` in parameters that enter it non-linearly (correlations), so AI steps alone converge only linearly
    there; the correction restores superlinear convergence.  It is dropped (and restarted) whenever a step
    was not a plain AI step along the computed direction (halved steps are kept: the secant pair holds for
    any step length)."""

    def __init__(self):
        self.S = None
        self._pair = None

    def step_taken(self, theta, new_theta, gradient, plain: bool) -> None:
        self._pair = (np.array(theta), np.array(new_theta), np.array(gradient)) if plain else None
        if not plain:
            self.S = None

    def update(self, theta, gradient, ai, keep: bool = True) -> None:
        """Add the last step's secant pair (``keep=False``: drop the correction instead)."""
        if not keep:
            self.S, self._pair = None, None
        if self._pair is None:
            return
        old, new, g_old = self._pair
        self._pair = None
        if not np.array_equal(new, theta):
            self.S = None
            return
        s = new - old
        ss = float(s @ s)
        if ss == 0.0:
            return
        S = np.zeros_like(ai) if self.S is None else self.S
        r = (gradient - g_old) - ai @ s - S @ s
        rs = float(r @ s)
        self.S = S + (np.outer(r, s) + np.outer(s, r)) / ss - rs * np.outer(s, s) / ss**2

    def model(self, ai, free) -> np.ndarray:
        """``AI + S`` when positive definite on the free parameters, else ``AI``."""
        if self.S is None:
            return ai
        H = ai + self.S
        try:
            np.linalg.cholesky(H[np.ix_(free, free)])
        except np.linalg.LinAlgError:
            self.S = None
            return ai
        return H


def _snap_to_bound(mme: MixedModelEquations, ev: Evaluation, small: float = 1e-4) -> Evaluation:
    """Put entries within ``small`` of 0 (relative standard deviations, in units of the column's scale, see
    :attr:`MixedModelEquations.theta_scale`) on 0.

    Scoring steps approach a zero variance only geometrically in this parameterisation;
    the snapped point is kept when its objective is not worse (by more than 1e-10).
    """
    near = (ev.theta != 0.0) & (np.abs(ev.theta) < small * mme.theta_scale)
    if not near.any():
        return ev
    cand = ev.theta.copy()
    cand[near] = 0.0
    trial = _try_evaluate(mme, mme.canonical(cand))
    if trial is not None and trial.deviance <= ev.deviance + 1e-10:
        return trial
    return ev


def _release_boundary(mme: MixedModelEquations, ev: Evaluation, held: np.ndarray,
                      releases: dict[int, int], max_releases: int = 3) -> Evaluation | None:
    """Move a held variance off 0 when a small positive value improves the objective.

    With ``Lk[j, j] = 0`` the sign of the entries below it in column j does not change the
    covariance, but it does once ``Lk[j, j] > 0``: both signs are tried.
    """
    for i in np.flatnonzero(held):
        if i >= mme.n_theta or releases.get(int(i), 0) >= max_releases:
            continue
        releases[int(i)] = releases.get(int(i), 0) + 1
        below = mme.below_diagonal(int(i))
        for delta in (1e-2, 1e-4):
            for sign in (1.0, -1.0):
                cand = ev.theta.copy()
                cand[i] = mme.lower[i] + delta * mme.theta_scale[i]
                cand[below] *= sign
                trial = _try_evaluate(mme, cand)
                if trial is not None and trial.deviance < ev.deviance - 1e-10:
                    return trial
                if not below:
                    break
    mme.factor_at(ev.theta)
    return None
