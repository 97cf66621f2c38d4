"""Known relationship matrices (vm) and the pedigree A^-1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lmmformula as lmf
from conftest import dense_loglik, dense_V
from lmmformula.pedigree import inverse_relationship, order_pedigree


def tabular_A(s, d):
    """Numerator relationship matrix by the tabular method (parents-first order, 1-based parents)."""
    n = len(s)
    A = np.zeros((n, n))
    for i in range(n):
        si, di = s[i] - 1, d[i] - 1
        for j in range(i):
            A[i, j] = A[j, i] = 0.5 * ((A[j, si] if si >= 0 else 0) + (A[j, di] if di >= 0 else 0))
        A[i, i] = 1.0 + (0.5 * A[si, di] if si >= 0 and di >= 0 else 0.0)
    return A


def simulated_pedigree(seed, n_founders=20, generations=4, per_generation=30, p_unknown=0.1):
    rng = np.random.default_rng(seed)
    rows = [(f"f{i}", "0", "0") for i in range(n_founders)]
    for g in range(generations):
        pool = [r[0] for r in rows[-(per_generation + n_founders):]]
        for k in range(per_generation):
            s, d = rng.choice(pool, 2, replace=False)
            rows.append((f"g{g}_{k}", s if rng.uniform() > p_unknown else "0", d))
    return pd.DataFrame(rows, columns=["animal", "sire", "dam"]).sample(frac=1.0, random_state=seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inverse_relationship_equals_inverse_of_tabular_A(seed):
    ped = simulated_pedigree(seed)
    K = inverse_relationship(ped)
    _, s, d = order_pedigree(ped)
    A = tabular_A(s, d)
    assert (np.diag(A) > 1).any()  # the test pedigree has inbreeding
    np.testing.assert_allclose(K.precision.toarray(), np.linalg.inv(A), atol=1e-10)
    np.testing.assert_allclose(K.diagonal, np.diag(A), atol=1e-12)
    assert K.logdet == pytest.approx(np.linalg.slogdet(A)[1], abs=1e-9)


def test_pedigree_with_float_ids_and_missing_parents():
    """A missing parent makes pandas store ids as floats: 1.0 must still be animal 1."""
    ped = pd.DataFrame({"animal": [1, 2, 3, 4, 5, 6], "sire": [np.nan, 0, 1, 1, 4, 4],
                        "dam": [np.nan, 0, 2, 2, 3, 3]})
    K = inverse_relationship(ped)
    assert sorted(K.labels) == ["1", "2", "3", "4", "5", "6"]
    _, s, d = order_pedigree(ped)
    np.testing.assert_allclose(K.precision.toarray(), np.linalg.inv(tabular_A(s, d)), atol=1e-12)
    assert K.diagonal.max() > 1.0  # 5 and 6 are offspring of full sibs


def test_pedigree_errors():
    with pytest.raises(lmf.DataError, match="DataFrame"):
        inverse_relationship([("a", "0", "0")])
    with pytest.raises(lmf.DataError, match="missing or zero identifier"):
        inverse_relationship(pd.DataFrame({"animal": ["a", None], "sire": ["0", "0"], "dam": ["0", "0"]}))
    with pytest.raises(lmf.DataError, match="more than once"):
        inverse_relationship(pd.DataFrame({"animal": ["a", "a"], "sire": ["0", "0"], "dam": ["0", "0"]}))
    with pytest.raises(lmf.DataError, match="loop"):
        inverse_relationship(pd.DataFrame({"animal": ["a", "b"], "sire": ["b", "a"], "dam": ["0", "0"]}))
    with pytest.raises(lmf.DataError, match="own parent"):
        inverse_relationship(pd.DataFrame({"animal": ["a"], "sire": ["a"], "dam": ["0"]}))
    with pytest.raises(lmf.DataError, match="no column 'sire'"):
        inverse_relationship(pd.DataFrame({"animal": ["a"], "father": ["0"], "dam": ["0"]}))


def _animal_data(seed):
    ped = simulated_pedigree(seed)
    K = inverse_relationship(ped)
    A = np.linalg.inv(K.precision.toarray())
    rng = np.random.default_rng(seed)
    recs = [a for a in K.labels if not a.startswith("f")]
    idx = [K.labels.index(a) for a in recs]
    u = np.linalg.cholesky(A) @ rng.normal(size=len(K.labels)) * 1.5
    herd = rng.integers(0, 6, len(recs))
    y = 10 + u[idx] + rng.normal(0, 1, 6)[herd] + rng.normal(size=len(recs))
    return pd.DataFrame({"y": y, "animal": recs, "herd": herd.astype(str)}), K, A


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_animal_model_equals_dense_brute_force(method):
    data, K, A = _animal_data(3)
    fit = lmf.LMM.from_formula('y ~ 1 + (1 | herd) + (1 | vm(animal, "A"))', data, matrices={"A": K}).fit(
        method=method)
    assert fit.converged
    mme = fit.mme
    Z = mme.Z.toarray()
    o = mme.offsets
    V = dense_V(fit)
    Vi = np.linalg.inv(V)
    ll, b = dense_loglik(fit)
    r = mme.y - mme.X @ b
    G_animal = fit.term_covariance(1)[0, 0] * A
    assert fit.loglik == pytest.approx(ll, rel=1e-10)
    # BLUPs of every animal in the pedigree, ancestors without records included
    blup = fit.random_effects['vm(animal, "A")']
    assert len(blup) == len(K.labels)
    u_dense = G_animal @ Z[:, o[1]:o[2]].T @ Vi @ r
    np.testing.assert_allclose(blup["(Intercept)"].to_numpy(), u_dense, rtol=1e-6, atol=1e-9)
    rng = np.random.default_rng(0)
    for _ in range(5):
        cand = mme.canonical(fit.theta + rng.normal(0, 1e-3, fit.theta.size))
        assert -0.5 * mme.evaluate(cand).deviance <= fit.loglik + 1e-8


def test_sparse_inverse_and_dense_covariance_inputs_agree():
    data, K, A = _animal_data(4)
    f = 'y ~ 1 + (1 | vm(animal, "A"))'
    a = lmf.LMM.from_formula(f, data, matrices={"A": K}).fit()
    b = lmf.LMM.from_formula(f, data, matrices={"A": pd.DataFrame(A, index=K.labels, columns=K.labels)}).fit()
    assert a.loglik == pytest.approx(b.loglik, abs=1e-8)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_random_slope_with_known_matrix_equals_dense_brute_force(method, sparse, monkeypatch):
    """(1 + x | vm(animal, "A")): the EM step and the PEV need MME inverse entries across linked levels."""
    if sparse:  # force the qdldl + Takahashi path, whose selected inverse is limited to the factor's pattern
        import lmmformula.engine.mme as mme_mod
        from lmmformula.engine import SparseFactor

        monkeypatch.setattr(mme_mod, "make_factor", lambda A, dense_below=400: SparseFactor(A))
    data, K, A = _animal_data(7)
    data = data.assign(x=np.random.default_rng(7).normal(size=len(data)))
    model = lmf.LMM.from_formula('y ~ x + (1 + x | vm(animal, "A"))', data, matrices={"A": K})
    fit = model.fit(method=method)
    mme = fit.mme
    X, Z = mme.X, mme.Z.toarray()
    G = np.kron(A, fit.term_covariance(0))
    Vi = np.linalg.inv(dense_V(fit))
    XtViX = X.T @ Vi @ X
    assert fit.loglik == pytest.approx(dense_loglik(fit)[0], rel=1e-10)
    # PEV = Var(u - u_hat) = G - G Z' P Z G (REML: P; the fixed effects absorbed)
    P = Vi - Vi @ X @ np.linalg.solve(XtViX, X.T @ Vi)
    pev = np.diag(G - G @ Z.T @ P @ Z @ G)
    blup = fit.random_effects['vm(animal, "A")']
    np.testing.assert_allclose(blup["pev(x)"], pev[1::2], rtol=1e-6)
    np.testing.assert_allclose(blup["pev((Intercept))"], pev[0::2], rtol=1e-6)
    # the EM step is a fixed point at the optimum
    from lmmformula.engine import em_step

    em = em_step(mme, mme.evaluate(fit.theta))
    np.testing.assert_allclose(em, fit.theta, rtol=1e-4, atol=1e-6)


def test_identity_matrix_equals_plain_term():
    data, _, _ = _animal_data(5)
    herds = sorted(data.herd.unique())
    eye = pd.DataFrame(np.eye(len(herds)), index=herds, columns=herds)
    a = lmf.LMM.from_formula('y ~ 1 + (1 | vm(herd, "I"))', data, matrices={"I": eye}).fit()
    b = lmf.LMM.from_formula("y ~ 1 + (1 | herd)", data).fit()
    assert a.loglik == pytest.approx(b.loglik, abs=1e-9)
    np.testing.assert_allclose(a.variance_components.estimate, b.variance_components.estimate, rtol=1e-6)


def test_vm_errors():
    data, K, A = _animal_data(6)
    with pytest.raises(lmf.ModelSpecificationError, match="not in matrices"):
        lmf.LMM.from_formula('y ~ 1 + (1 | vm(animal, "A"))', data)
    small = pd.DataFrame(np.eye(3), index=["a", "b", "c"], columns=["a", "b", "c"])
    with pytest.raises(lmf.DataError, match="not in the known matrix"):
        lmf.LMM.from_formula('y ~ 1 + (1 | vm(animal, "A"))', data, matrices={"A": small})
    labels = list(K.labels)
    singular = pd.DataFrame(np.ones((len(labels), len(labels))), index=labels, columns=labels)
    with pytest.raises(lmf.DataError, match="not positive definite"):
        lmf.LMM.from_formula('y ~ 1 + (1 | vm(animal, "A"))', data, matrices={"A": singular})
    dup = pd.DataFrame(np.eye(2), index=["a", "a"], columns=["a", "a"])
    with pytest.raises(lmf.DataError, match="duplicated labels"):
        lmf.LMM.from_formula('y ~ 1 + (1 | vm(animal, "A"))', data, matrices={"A": dup})
    with pytest.raises(lmf.DataError, match="labelled pandas DataFrame"):
        lmf.LMM.from_formula('y ~ 1 + (1 | vm(animal, "A"))', data, matrices={"A": np.eye(3)})
