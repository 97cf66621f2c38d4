"""One EM-REML step (the seed's EM algorithm, generalised to covariance blocks and known matrices).

Used for the first iterations and as the fallback when no AI or Newton step improves the objective:
an EM step cannot decrease the likelihood.
"""

from __future__ import annotations

import numpy as np

from .mme import Evaluation, MixedModelEquations

__all__ = ["em_step"]


def em_step(mme: MixedModelEquations, ev: Evaluation, S=None) -> np.ndarray:
    """One EM step (the seed's EM-REML generalised to blocks).

    For term k: ``Sigma_new = Lk [ (1/L) sum_{l,l'} K^-1_{ll'} (v_l v_l'' + sigma^2 C^vv_l'l) ] Lk'``
    (``K = I`` unless the term has a known matrix; the seed's ``u'A^-1u + tr(A^-1 C22) sigma_e^2``), and
    ``sigma^2_new = r2 / (n - p)`` (REML; ``r2 / n`` for ML), then ``theta = chol(Sigma_new / sigma^2_new)``.
    """
    if S is None:
        S = mme.factor_at(ev.theta).selected_inverse()
    out = np.array(ev.theta, dtype=float)  # residual parameters are left unchanged
    for k, (blk, cov) in enumerate(zip(mme.blocks, mme.covariances)):
        t0, t1 = mme.theta_offsets[k], mme.theta_offsets[k + 1]
        Lk = cov.factor(ev.theta[t0:t1])
        M = _second_moment(mme, ev, S, k) / blk.n_levels
        sigma_new = Lk @ M @ Lk.T
        out[t0:t1] = cov.em_theta(sigma_new / ev.sigma2, ev.theta[t0:t1])
    return out


def _second_moment(mme: MixedModelEquations, ev: Evaluation, S, k: int) -> np.ndarray:
    """``sum_{l,l'} K^-1_{l l'} E[v_l' v_l' | y]`` for term k (``K = I`` without a known matrix)."""
    blk, cov = mme.blocks[k], mme.covariances[k]
    m, off = cov.m, mme.offsets[k]
    vk = ev.v[off:mme.offsets[k + 1]].reshape(blk.n_levels, m)
    Kinv, _ = mme.levels.block_precision(k, mme.kappa(ev.theta))
    if Kinv is None:
        return vk.T @ vk + ev.sigma2 * mme.level_blocks(ev, S, k).sum(axis=0)
    Sk = S[off:mme.offsets[k + 1], off:mme.offsets[k + 1]]
    out = vk.T @ (Kinv @ vk)
    if mme.reml and mme.p:
        Wf = mme.absorbed_fixed(ev)[off:mme.offsets[k + 1]]
    for a in range(m):
        for b in range(m):
            out[a, b] += ev.sigma2 * float(Kinv.multiply(Sk[a::m, b::m]).sum())
            if mme.reml and mme.p:
                out[a, b] += ev.sigma2 * float(np.sum(Wf[a::m] * (Kinv @ Wf[b::m])))
    return 0.5 * (out + out.T)
