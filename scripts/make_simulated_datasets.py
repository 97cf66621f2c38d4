"""Write the simulated data sets shipped in ``lmmformula/datasets/data`` (run once; output committed).

    python scripts/make_simulated_datasets.py

``growth``: a repeated-measures study; ``animal``: an animal model with its pedigree.  The generating
values are stated in ``lmmformula/datasets/__init__.py``.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

OUT = pathlib.Path(__file__).resolve().parents[1] / "lmmformula" / "datasets" / "data"


def growth(seed: int = 20261129) -> pd.DataFrame:
    """60 subjects in 2 treatments measured at weeks 0, 2, 4, 6, 8 and 12; random intercepts and slopes,
    AR1(0.5 per 2 weeks) within-subject errors on the week grid, about 8% of visits missed."""
    rng = np.random.default_rng(seed)
    weeks = np.array([0, 2, 4, 6, 8, 12])
    rows = []
    for s in range(60):
        treatment = "B" if s % 2 else "A"
        u0, u1 = rng.multivariate_normal([0, 0], [[4.0, 0.3], [0.3, 0.09]])
        grid = np.arange(0, 13, 2)
        e = np.empty(grid.size)
        e[0] = rng.normal(0, 1.5)
        for k in range(1, grid.size):
            e[k] = 0.5 * e[k - 1] + rng.normal(0, 1.5 * np.sqrt(1 - 0.25))
        err = dict(zip(grid, e))
        for w in weeks:
            if w > 0 and rng.random() < 0.08:
                continue
            mean = 20 + (0.8 if treatment == "B" else 0.5) * w
            rows.append((f"S{s + 1:02d}", treatment, int(w), round(mean + u0 + u1 * w + err[w], 2)))
    return pd.DataFrame(rows, columns=["subject", "treatment", "week", "y"])


def animal(seed: int = 20261129) -> pd.DataFrame:
    """A pedigree of 1,200 animals (200 founders, then 4 generations of 250; 20 sires per generation) with
    records on the 1,000 non-founders: herd (10 herds) and sex fixed, heritability 0.4."""
    rng = np.random.default_rng(seed)
    n_founders, per, generations = 200, 250, 4
    n = n_founders + per * generations
    sire, dam = np.full(n, -1), np.full(n, -1)
    male = rng.random(n) < 0.5
    a = np.empty(n)
    a[:n_founders] = rng.normal(0, np.sqrt(0.4), n_founders)
    prev = np.arange(n_founders)
    for g in range(generations):
        idx = np.arange(n_founders + g * per, n_founders + (g + 1) * per)
        sires = rng.choice(prev[male[prev]], 20, replace=False)
        sire[idx], dam[idx] = rng.choice(sires, per), rng.choice(prev[~male[prev]], per)
        a[idx] = 0.5 * (a[sire[idx]] + a[dam[idx]]) + rng.normal(0, np.sqrt(0.2), per)
        prev = idx
    herd = rng.integers(1, 11, n)
    herd_effect = rng.normal(0, 0.5, 11)
    y = 10 + herd_effect[herd] + 0.7 * male + a + rng.normal(0, np.sqrt(0.6), n)
    ids = np.array([f"A{i + 1:04d}" for i in range(n)])
    recorded = np.arange(n) >= n_founders
    return pd.DataFrame({
        "animal": ids,
        "sire": np.where(sire >= 0, ids[np.maximum(sire, 0)], "0"),
        "dam": np.where(dam >= 0, ids[np.maximum(dam, 0)], "0"),
        "herd": np.where(recorded, [f"H{h:02d}" for h in herd], None),
        "sex": np.where(recorded, np.where(male, "M", "F"), None),
        "weight": np.where(recorded, np.round(y, 3), np.nan),
    })


if __name__ == "__main__":
    growth().to_csv(OUT / "growth.csv", index=False)
    animal().to_csv(OUT / "animal.csv", index=False)
