"""Reproducible records of a fit: JSON out, and back in as a stored fit or a full refitted-free result.

A record holds everything needed to audit or reproduce an analysis: the formula and options, the estimates
(``theta`` exactly: JSON floats are written with Python's shortest round-trip representation), the tables,
the convergence history, the versions of every package on the numerical path, and a SHA-256 fingerprint of
the data the model was fitted to (the complete-case rows of the columns used, and any known matrices).

Reading a record back (:meth:`lmmformula.FitResult.from_json`) gives a :class:`StoredFit` (tables only), or,
when the same data are supplied, a full :class:`~lmmformula.FitResult` evaluated at the stored estimates
without iterating, so every method (tests, predictions, diagnostics) is available and every number is
bit-identical to the original fit's.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import pathlib
import platform
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import DataError

__all__ = ["FORMAT", "StoredFit", "data_fingerprint", "fit_record", "read_record", "package_versions",
           "source_fingerprint"]

FORMAT = "lmmformula.fit/1"
_PACKAGES = ("lmmformula", "numpy", "scipy", "pandas", "formulaic", "qdldl", "numba")


def package_versions() -> dict[str, str]:
    """Python and the installed versions of the packages on the numerical path."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["lmmformula source sha256"] = source_fingerprint()
    return out


def _dtype_tag(column: pd.Series) -> str:
    """The dtype as it matters for the model: text is text whatever pandas calls it (object, str, string);
    a Categorical's categories and their order set reference levels and positions."""
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return f"category{list(map(str, dtype.categories))}ordered={dtype.ordered}"
    if pd.api.types.is_string_dtype(dtype) or dtype == object:
        return "text"
    return str(dtype)


def data_fingerprint(frame: pd.DataFrame, known: tuple = ()) -> str:
    """SHA-256 of the rows a model is fitted to (column names, dtypes with any category order, values in row
    order) and of the labels and values of its known matrices."""
    h = hashlib.sha256()
    for name in frame.columns:
        h.update(f"{name}\x1f{_dtype_tag(frame[name])}\x1e".encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    for matrix in known:
        h.update("\x1d".join(matrix.labels).encode())
        for part in (matrix.precision.indptr, matrix.precision.indices, matrix.precision.data):
            h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def source_fingerprint() -> str:
    """SHA-256 of lmmformula's own source files: two records with the same version number but different code
    are told apart by it."""
    h = hashlib.sha256()
    root = pathlib.Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _clean(x):
    """JSON-safe scalar: NaN and infinities become null, numpy scalars plain Python."""
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _table_out(df: pd.DataFrame) -> dict:
    return {"index": [_clean(i) for i in df.index], "index_name": df.index.name, "columns": [str(c) for c in df.columns],
            "dtypes": [str(t) for t in df.dtypes],
            "data": [[_clean(v) for v in row] for row in df.itertuples(index=False, name=None)]}


def _table_in(record: dict) -> pd.DataFrame:
    """Rebuild a table column by column: numbers (null = NaN) in their recorded dtype, text as pandas infers it."""
    columns = {}
    for j, (name, dtype) in enumerate(zip(record["columns"], record["dtypes"])):
        values = [row[j] for row in record["data"]]
        if dtype.startswith(("float", "int", "uint", "bool")):
            columns[name] = pd.Series(np.array([np.nan if v is None else v for v in values], dtype=dtype))
        else:
            columns[name] = pd.Series(values, dtype=object).infer_objects()
    table = pd.DataFrame(columns, columns=record["columns"])
    table.index = pd.Index(record["index"], name=record.get("index_name"))
    return table


def fit_record(fit) -> dict:
    """The JSON-ready record of a :class:`~lmmformula.FitResult`."""
    opt = fit.optimizer
    return {
        "format": FORMAT,
        "formula": fit.formula,
        "method": fit.method,
        "algorithm": fit.algorithm,
        "options": {k: _clean(v) for k, v in (fit.options or {}).items()},
        "data": {"sha256": fit.data_sha256, "n_obs": fit.n_obs, "n_dropped": fit.n_dropped},
        "estimates": {
            "theta": [float(t) for t in fit.theta],
            "loglik": _clean(fit.loglik), "aic": _clean(fit.aic), "bic": _clean(fit.bic),
            "sigma2": _clean(fit.sigma2),
            "fixed_effects": _table_out(fit.fixed_effects),
            "variance_components": _table_out(fit.variance_components),
            "random_effects": {term: _table_out(table) for term, table in fit.random_effects.items()},
        },
        "convergence": {
            "converged": bool(opt.converged), "n_iter": int(opt.n_iter), "criterion": _clean(opt.criterion),
            "tol": _clean(opt.tol), "message": opt.message, "at_boundary": [int(i) for i in opt.at_boundary],
            "conditioned": [int(k) for k in opt.conditioned],
            "history": [{"iteration": r.iteration, "algorithm": r.algorithm, "loglik": _clean(r.loglik),
                         "step": _clean(r.step), "theta": [float(t) for t in r.theta]} for r in opt.history],
        },
        "versions": package_versions(),
    }


def write_record(record: dict, path=None) -> str:
    """The record as JSON text (strict JSON: no NaN), also written to ``path`` when given."""
    text = json.dumps(record, indent=1, allow_nan=False)
    if path is not None:
        pathlib.Path(path).write_text(text + "\n", encoding="utf-8")
    return text


def read_record(source) -> dict:
    """Parse a record from JSON text, a path, or an already parsed dict; check its format."""
    if isinstance(source, dict):
        record = source
    else:
        if hasattr(source, "read"):  # an open file
            source = source.read()
        if isinstance(source, (bytes, bytearray)):
            source = bytes(source).decode("utf-8", errors="replace")
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = pathlib.Path(text)
            try:
                is_file = path.is_file()
            except OSError:  # e.g. a name too long to be a path
                is_file = False
            if not is_file:
                shown = text if len(text) <= 80 else text[:77] + "..."
                raise DataError(f"from_json: {shown!r} is neither JSON text nor an existing file; pass the "
                                "text written by fit.to_json() or the path it was saved to")
            text = path.read_text(encoding="utf-8")
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"from_json: the text is not valid JSON ({err}); pass what fit.to_json() wrote") \
                from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise DataError(f"from_json: not an lmmformula fit record (format {found!r}, expected {FORMAT!r}); pass "
                        "the text written by fit.to_json()")
    return record


@dataclass(frozen=True, eq=False)
class StoredFit:
    """A fit read back from its JSON record without the data: the estimates and tables, read-only.

    Supply the data to :meth:`lmmformula.FitResult.from_json` to get a full result with every method.
    """

    formula: str
    method: str
    algorithm: str
    options: dict
    data_sha256: str
    n_obs: int
    n_dropped: int
    theta: np.ndarray
    loglik: float
    aic: float
    bic: float
    sigma2: float
    fixed_effects: pd.DataFrame
    variance_components: pd.DataFrame
    random_effects: dict
    converged: bool
    n_iter: int
    history: tuple = field(repr=False, default=())
    versions: dict = field(repr=False, default_factory=dict)

    @classmethod
    def from_record(cls, record: dict) -> "StoredFit":
        est, conv = record["estimates"], record["convergence"]
        return cls(formula=record["formula"], method=record["method"], algorithm=record["algorithm"],
                   options=dict(record["options"]), data_sha256=record["data"]["sha256"],
                   n_obs=record["data"]["n_obs"], n_dropped=record["data"]["n_dropped"],
                   theta=np.array(est["theta"], dtype=float), loglik=est["loglik"], aic=est["aic"],
                   bic=est["bic"], sigma2=est["sigma2"], fixed_effects=_table_in(est["fixed_effects"]),
                   variance_components=_table_in(est["variance_components"]),
                   random_effects={k: _table_in(v) for k, v in est["random_effects"].items()},
                   converged=conv["converged"], n_iter=conv["n_iter"], history=tuple(conv["history"]),
                   versions=dict(record["versions"]))

    def summary(self) -> str:
        """The stored estimates as text: model, criterion, variance components and fixed effects."""
        with pd.option_context("display.width", 120, "display.max_columns", 12):
            vc = self.variance_components[["term", "parameter", "estimate", "std_error"]].to_string(index=False)
            fe = self.fixed_effects.to_string()
        status = "converged" if self.converged else "NOT converged"
        return (f"Linear mixed model fit by {self.method} ['lmmformula', read from JSON without the data]\n"
                f"Formula: {self.formula}\n"
                f"logLik {self.loglik:.4f}  AIC {self.aic:.2f}  BIC {self.bic:.2f}  "
                f"({self.n_obs} observations, {self.n_dropped} dropped; {status} after {self.n_iter} iterations)\n\n"
                f"Covariance parameters:\n{vc}\n\nFixed effects:\n{fe}\n"
                f"Data SHA-256 {self.data_sha256}; lmmformula {self.versions.get('lmmformula', '?')}")

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(
            f"a fit read from JSON without its data has no {name!r}; it holds the formula, estimates, tables and "
            "history. Pass the data the fit used, FitResult.from_json(source, data=df), for every method")

    def __repr__(self) -> str:
        return (f"StoredFit({self.formula!r}, {self.method}, loglik={self.loglik:.6f}, "
                f"converged={self.converged}, n_iter={self.n_iter}; data sha256 {self.data_sha256[:12]}...)")
