"""Benchmark lmmformula against lme4 (through Rscript, when R and lme4 are installed) and statsmodels.

Usage::

    python benchmarks/run.py            # all cases, with lme4 and statsmodels when available
    python benchmarks/run.py --quick    # small cases, lmmformula only (what CI runs)
    python benchmarks/run.py --only AR1  # the cases whose name contains "AR1"

For each case it prints n, the size of the random block of C, lmmformula's median and minimum time over
repeats (after import and JIT warm-up), its iterations and peak memory, a yardstick of the machine's speed
during the run (a fixed workload timed before and after the cases: this shared machine's speed varies by up to
2x from minute to minute), the same fit's median time in
lme4 and statsmodels MixedLM where available, the time ratios, and the largest log-likelihood difference.
A fast wrong answer is a failure: the script exits with status 1 when a log-likelihood differs by
more than 1e-3 from lme4's (structured models, which lme4 cannot fit, are checked against dense brute force
and nlme/glmmTMB in the tests).  ``--large`` adds the 100,000-animal model (minutes per fit).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

# One BLAS thread, as in ../shared/notes/solvers.md: the dense blocks here are small, and a second
# BLAS thread on a 2-core machine shared with another process costs 10x (measured: 2.5 s vs 0.15 s).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lmmformula as lmf  # noqa: E402
from lmmformula.datasets import load  # noqa: E402
from lmmformula.pedigree import inverse_relationship  # noqa: E402

DATA = ROOT / "tests" / "data"

CASES = [
    # name, loader, formula, statsmodels spec (formula, groups, re_formula[, vc_formula]) or None, tier: True = also in
    # --quick (CI), False = the default suite, "large" = only with --large (minutes per fit)
    # (formulas with a residual structure have no lme4 equivalent and are timed for lmmformula only)
    ("sleepstudy slopes", lambda: pd.read_csv(DATA / "sleepstudy.csv"), "Reaction ~ Days + (Days | Subject)",
     ("Reaction ~ Days", "Subject", "~Days"), True),
    # crossed and nested terms in statsmodels: variance components within one all-encompassing group
    ("Penicillin crossed", lambda: pd.read_csv(DATA / "Penicillin.csv"), "diameter ~ 1 + (1 | plate) + (1 | sample)",
     ("diameter ~ 1", None, "0", {"plate": "0 + C(plate)", "sample": "0 + C(sample)"}), True),
    ("Pastes nested", lambda: pd.read_csv(DATA / "Pastes.csv"), "strength ~ 1 + (1 | batch/cask)",
     ("strength ~ 1", "batch", "1", {"cask": "0 + C(cask)"}), True),
    ("Slate Hall incomplete blocks", lambda: load("slatehall"),
     "yield ~ gen + (1 | rep) + (1 | rep:row) + (1 | rep:col)", None, True),
    ("Durban lettuce row-col", lambda: load("durban_rowcol"),
     "yield ~ gen + (1 | rep) + (1 | rep:row) + (1 | rep:bed)", None, False),
    ("simulated crossed 2000x300", lambda: simulated_crossed(), "y ~ x + (1 | a) + (1 | b)", None, False),
    ("simulated slopes 1000 subjects x 10", lambda: simulated_slopes(), "y ~ x + (x | g)", ("y ~ x", "g", "~x"),
     False),
    # agridat spatial trials, AR1 x AR1 residual (issue #3's targets: < 50 ms each)
    ("Slate Hall AR1xAR1", lambda: load("slatehall"), "yield ~ gen + ar1(row):ar1(col)", None, True),
    ("Slate Hall AR1xAR1 + rep", lambda: load("slatehall"), "yield ~ gen + (1 | rep) + ar1(row):ar1(col)", None,
     True),
    ("Stroup NIN AR1xAR1, fill plots missing", lambda: load("stroup_nin"), "yield ~ gen + ar1(row):ar1(col)",
     None, False),
    ("Durban lettuce AR1xAR1", lambda: load("durban_rowcol"), "yield ~ gen + ar1(row):ar1(bed)", None, False),
    ("Gilmour serpentine AR1xAR1", lambda: load("serpentine"), "yield ~ gen + ar1(col):ar1(row)", None, False),
    ("Cullis early generation AR1xAR1", lambda: load("cullis_earlygen"),
     "yield ~ 1 + (1 | gen) + ar1(row):ar1(col)", None, False),
    ("glmmTMB-style ar1(0 + factor(Days) | Subject)", lambda: pd.read_csv(DATA / "sleepstudy.csv"),
     "Reaction ~ Days + ar1(0 + factor(Days) | Subject)", None, True),
    # issue #3: 100 x 100 plots, 2000 random genotypes, AR1 x AR1 residual (target < 5 s, < 1 GB); run last so
    # the peak memory printed below is its own
    # issue #5: InstEval (lme4's data, exported once by R into benchmarks/data), a longitudinal AR1 model and an
    # animal model with a pedigree (A^-1 from lmmformula.pedigree)
    ("InstEval y ~ service + (1|s) + (1|d) + (1|dept:service)", lambda: insteval(),
     "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)", None, False),
    ("simulated longitudinal 5000 x 8, Subject:ar1(time)", lambda: simulated_longitudinal(),
     "y ~ time + (1 | Subject) + Subject:ar1(time)", None, False),
    ("simulated animal model, 30,000-animal pedigree", lambda: simulated_animal(30_000),
     'y ~ 1 + (1 | vm(animal, "A"))', None, False),
    ("simulated animal model, 100,000-animal pedigree", lambda: simulated_animal(100_000),
     'y ~ 1 + (1 | vm(animal, "A"))', None, "large"),
    # issue #3: 100 x 100 plots, 2000 random genotypes, AR1 x AR1 residual (target < 5 s, < 1 GB); run last so
    # the peak memory printed below is its own
    ("simulated 100x100 AR1xAR1, 2000 genotypes", lambda: simulated_field(), "y ~ 1 + (1 | gen) + ar1(row):ar1(col)",
     None, False),
]


def insteval() -> pd.DataFrame:
    """lme4's InstEval (73,421 ratings), ids as labels so that every engine reads them as factors."""
    d = pd.read_csv(ROOT / "benchmarks" / "data" / "InstEval.csv.gz")
    for col, prefix in (("s", "s"), ("d", "d"), ("dept", "D"), ("service", "S")):
        d[col] = prefix + d[col].astype(str)
    return d


def simulated_longitudinal(seed: int = 1, n_subjects: int = 5000, n_times: int = 8) -> pd.DataFrame:
    """AR1(0.6) series of ``n_times`` visits per subject, subject intercepts, 3% of visits missed."""
    rng = np.random.default_rng(seed)
    sub = np.repeat(np.arange(n_subjects), n_times)
    t = np.tile(np.arange(n_times), n_subjects)
    e = np.empty((n_subjects, n_times))
    e[:, 0] = rng.normal(size=n_subjects)
    for j in range(1, n_times):
        e[:, j] = 0.6 * e[:, j - 1] + 0.8 * rng.normal(size=n_subjects)
    y = 1 + 0.3 * t + rng.normal(0, 0.8, n_subjects)[sub] + e.ravel()
    d = pd.DataFrame({"y": y, "time": t, "Subject": [f"S{i}" for i in sub]})
    return d.sample(frac=0.97, random_state=seed).sort_index()


def simulated_animal(n_animals: int, seed: int = 1, n_founders: int = 1000, generations: int = 10):
    """A pedigree of ``n_animals`` (founders, then discrete generations; 10% of the males as sires), breeding
    values by the recursion ``a = (a_s + a_d) / 2 + m``, heritability 0.3, records on the non-founders.
    Returns the data and the ``matrices`` argument."""
    rng = np.random.default_rng(seed)
    per = (n_animals - n_founders) // generations
    sire = np.full(n_founders + per * generations, -1)
    dam = sire.copy()
    male = rng.integers(0, 2, sire.size).astype(bool)
    a = np.empty(sire.size)
    a[:n_founders] = rng.normal(size=n_founders)
    prev = np.arange(n_founders)
    for g in range(generations):
        idx = np.arange(n_founders + g * per, n_founders + (g + 1) * per)
        males, females = prev[male[prev]], prev[~male[prev]]
        sires = rng.choice(males, size=max(1, males.size // 10), replace=False)
        sire[idx], dam[idx] = rng.choice(sires, idx.size), rng.choice(females, idx.size)
        a[idx] = 0.5 * (a[sire[idx]] + a[dam[idx]]) + rng.normal(0, np.sqrt(0.5), idx.size)
        prev = idx
    names = np.array([f"A{i}" for i in range(sire.size)])
    ped = pd.DataFrame({"animal": names, "sire": np.where(sire >= 0, names[sire], "0"),
                        "dam": np.where(dam >= 0, names[dam], "0")})
    obs = np.arange(n_founders, sire.size)
    y = 10 + np.sqrt(0.3) * a[obs] + rng.normal(0, np.sqrt(0.7), obs.size)
    return pd.DataFrame({"y": y, "animal": names[obs]}), {"matrices": {"A": inverse_relationship(ped)}}


def simulated_field(seed: int = 1, n_row: int = 100, n_col: int = 100, n_gen: int = 2000) -> pd.DataFrame:
    """A field of n_row x n_col plots, genotypes replicated n_row n_col / n_gen times at random positions,
    an AR1(0.6) x AR1(0.4) field, genetic variance 0.49 and a nugget of 0.09."""
    rng = np.random.default_rng(seed)
    row = np.repeat(np.arange(1, n_row + 1), n_col)
    col = np.tile(np.arange(1, n_col + 1), n_row)
    gen = rng.permutation(np.repeat(np.arange(n_gen), n_row * n_col // n_gen))
    lag = lambda m: np.abs(np.subtract.outer(np.arange(m), np.arange(m)))  # noqa: E731
    field = (np.linalg.cholesky(0.6 ** lag(n_row)) @ rng.normal(size=(n_row, n_col))
             @ np.linalg.cholesky(0.4 ** lag(n_col)).T)
    y = 10 + 0.7 * rng.normal(size=n_gen)[gen] + field.ravel() + 0.3 * rng.normal(size=row.size)
    return pd.DataFrame({"y": y, "row": row, "col": col, "gen": [f"G{k}" for k in gen]})


def simulated_slopes(seed: int = 1, n_subjects: int = 1000, n_times: int = 10) -> pd.DataFrame:
    """sleepstudy-shaped: correlated random intercepts and slopes for many subjects."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_subjects), n_times)
    x = np.tile(np.arange(n_times), n_subjects).astype(float)
    b0, b1 = rng.normal(0, 25, n_subjects), rng.normal(0, 6, n_subjects)
    y = 250 + 10 * x + b0[g] + b1[g] * x + rng.normal(0, 25, g.size)
    return pd.DataFrame({"y": y, "x": x, "g": [f"S{i}" for i in g]})


def simulated_crossed(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n, na, nb = 20000, 2000, 300
    a = rng.integers(0, na, n)
    b = rng.integers(0, nb, n)
    x = rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(0, 1.0, na)[a] + rng.normal(0, 0.7, nb)[b] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "a": [f"a{i}" for i in a], "b": [f"b{i}" for i in b]})


def time_lmmformula(data, formula, repeats, options=None):
    options = options or {}
    lmf.LMM.from_formula(formula, data, **options).fit()  # warm-up (numba JIT cache, imports)
    times, fit = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        fit = lmf.LMM.from_formula(formula, data, **options).fit()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.min(times)), fit


def reference_workload(repeats: int = 15) -> tuple[float, float]:
    """Median and minimum seconds of a fixed mix of interpreted Python and small numpy calls (the kind of work
    that dominates small fits): a yardstick of how fast this shared machine ran during the benchmark."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(60, 60))
    A = A @ A.T + 60 * np.eye(60)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        total = 0
        for i in range(50_000):
            total += i * i
        for _ in range(500):
            np.linalg.cholesky(A)[np.arange(60), np.arange(60)].sum()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.min(times))


R_SCRIPT = r"""
suppressMessages(library(lme4))
args <- commandArgs(TRUE)
d <- read.csv(args[1], stringsAsFactors = TRUE)
f <- as.formula(args[2]); reps <- as.integer(args[3])
fit <- lmer(f, d, REML = TRUE)
tt <- replicate(reps, system.time(fit <- lmer(f, d, REML = TRUE))[["elapsed"]])
cat(jsonlite::toJSON(list(time = median(tt), loglik = as.numeric(logLik(fit))), digits = NA, auto_unbox = TRUE))
"""


def time_lme4(data, formula, repeats):
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        csv = pathlib.Path(tmp) / "d.csv"
        data.to_csv(csv, index=False)
        script = pathlib.Path(tmp) / "b.R"
        script.write_text(R_SCRIPT)
        try:
            out = subprocess.run(["Rscript", str(script), str(csv), formula, str(repeats)], capture_output=True,
                                 text=True, timeout=3600, check=True)
        except (subprocess.SubprocessError, OSError):
            return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def r_blas() -> str | None:
    """The BLAS library R runs with: lme4's times depend on it (Debian's default reference BLAS is ~4x slower
    than OpenBLAS on InstEval)."""
    if shutil.which("Rscript") is None:
        return None
    try:
        out = subprocess.run(["Rscript", "-e", 'cat(extSoftVersion()[["BLAS"]])'], capture_output=True, text=True,
                             timeout=60, check=True)
    except (subprocess.SubprocessError, OSError):
        return None
    return out.stdout.strip() or None


def time_statsmodels(data, spec, repeats):
    if spec is None:
        return None
    try:
        import statsmodels.formula.api as smf
    except ImportError:
        return None
    formula, groups, re_formula, *vc = spec
    vc_formula = vc[0] if vc else None
    group_values = data[groups] if groups in data.columns else np.ones(len(data))  # crossed: one group
    times, res = [], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = smf.mixedlm(formula, data, groups=group_values, re_formula=re_formula,
                              vc_formula=vc_formula).fit(reml=True)
            times.append(time.perf_counter() - t0)
    return {"time": float(np.median(times)), "loglik": float(res.llf)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small cases, lmmformula only")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default=None, help="run only the cases whose name contains this text")
    ap.add_argument("--large", action="store_true", help="also the large cases (the 100,000-animal model)")
    args = ap.parse_args(argv)
    rows, failed = [], False
    yardstick = [reference_workload()]
    for name, loader, formula, sm_spec, tier in CASES:
        if (args.quick and tier is not True) or (tier == "large" and not args.large) or (
                args.only and args.only not in name):
            continue
        loaded = loader()
        data, options = loaded if isinstance(loaded, tuple) else (loaded, {})
        heavy = data.shape[0] > 50_000 or tier == "large"  # minutes per lme4 fit: fewer repeats
        repeats = min(args.repeats, 3) if heavy else args.repeats
        t, t_min, fit = time_lmmformula(data, formula, repeats, options)
        no_lme4 = args.quick or ":ar1(" in formula or "vm(" in formula
        r = None if no_lme4 else time_lme4(data, formula, repeats)
        s = None if args.quick else time_statsmodels(data, sm_spec, repeats)
        dll = abs(fit.loglik - r["loglik"]) if r else np.nan
        failed |= bool(dll > 1e-3)
        rows.append({
            "case": name, "n": fit.n_obs, "q": fit.mme.q, "lmmformula_s": t, "min_s": t_min, "iter": fit.n_iter,
            "lme4_s": r["time"] if r else np.nan, "lme4/lmmf": (r["time"] / t) if r else np.nan,
            "statsmodels_s": s["time"] if s else np.nan, "sm/lmmf": (s["time"] / t) if s else np.nan,
            "|dlogLik| lme4": dll,
            "|dlogLik| sm": abs(fit.loglik - s["loglik"]) if s else np.nan,
        })
    yardstick.append(reference_workload())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False))
    print(f"peak RSS of this process: {peak:.0f} MB")
    print("machine speed (a fixed Python + numpy workload, median / min ms), before and after the cases: "
          + ", ".join(f"{1e3 * med:.1f} / {1e3 * low:.1f}" for med, low in yardstick))
    if not args.quick and table["lme4_s"].notna().any():
        print(f"R's BLAS (lme4's times depend on it): {r_blas()}")
    if failed:
        print("FAILED: a log-likelihood differs from lme4's by more than 1e-3")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
