"""Command line interface: ``lmmformula fit DATA FORMULA``, ``lmmformula example``, ``lmmformula version``.

Exit codes: 0 on success (warnings such as a :class:`~lmmformula.ConvergenceWarning` are printed to stderr as
``lmmformula: warning: ...``), 2 on bad input (a missing or unreadable file, a formula or data error: one
message on stderr, no traceback unless ``--debug``), 1 on an unexpected exception (a bug: its traceback).
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import os
import pathlib
import re
import sys
import traceback
import warnings

import pandas as pd

from . import LMM, __version__
from .datasets import load
from .errors import FormulaSyntaxError, LMMError, LMMWarning

__all__ = ["main"]

_READERS = {".csv": {"sep": ","}, ".tsv": {"sep": "\t"}, ".tab": {"sep": "\t"},
            ".txt": {"sep": r"\s+", "na_values": ["NA"]}}
_SPATIAL = "yield ~ gen + (1 | rep) + ar1(row):ar1(col)"
_EXAMPLES = {  # name -> (formula, description)
    "slatehall": (_SPATIAL, "Slate Hall spring wheat trial (Gilmour, Cullis & Verbyla 1997; agridat)"),
    "serpentine": (_SPATIAL, "serpentine wheat trial (Gilmour, Cullis & Verbyla 1997; agridat)"),
}

_CSS = "body { font-family: sans-serif; } table { border-collapse: collapse; } td, th { padding: 2px 8px; }"


class CLIError(Exception):
    """Bad input found by the command line itself (files, options, missing optional packages)."""


def read_data(source: str, sep: str | None = None) -> pd.DataFrame:
    """Read a data file by its extension (``.csv``, ``.tsv``/``.tab``, ``.txt``, ``.parquet``; ``-``: stdin).

    Parameters
    ----------
    source : str
        Path of the file, or ``-`` for CSV on standard input.
    sep : str, optional
        Field separator overriding the one implied by the extension (text formats only).
    """
    path = pathlib.Path(source)
    suffix = ".csv" if source == "-" else path.suffix.lower()
    if source != "-" and not path.is_file():
        raise CLIError(f"data file '{source}' not found (or not a file); check the path")
    if suffix != ".parquet" and suffix not in _READERS:
        raise CLIError(f"cannot read '{source}': unknown extension '{path.suffix}'; use .csv, .tsv, .tab, .txt "
                       "(whitespace-separated) or .parquet, or pipe CSV to '-'")
    try:
        if suffix == ".parquet":
            if not (_has_module("pyarrow") or _has_module("fastparquet")):
                raise CLIError(f"reading '{source}' needs a parquet engine: pip install pyarrow")
            return pd.read_parquet(path)
        options = dict(_READERS[suffix], **({"sep": sep.replace("\\t", "\t")} if sep is not None else {}))
        data = pd.read_csv(sys.stdin if source == "-" else path, **options)
    except (OSError, ValueError) as exc:  # pandas' ParserError, EmptyDataError and UnicodeDecodeError too
        raise CLIError(f"cannot read '{source}': {_first_line(exc)}; check that it is a {suffix} file") from exc
    if data.shape[1] == 1 and re.search(r"[,;\t|]", str(data.columns[0])):
        raise CLIError(f"'{source}' was read as one column named {str(data.columns[0])!r}: the fields seem to be "
                       "separated by another character; pass it with --sep (e.g. --sep ';')")
    return data


def read_matrices(specs: list[str]) -> dict:
    """``NAME=FILE`` pairs -> labelled covariance DataFrames (labels in the first column and the header)."""
    out = {}
    for spec in specs:
        name, eq, file = spec.partition("=")
        if not eq or not name or not file:
            raise CLIError(f"--matrix takes NAME=FILE (e.g. A=relationship.csv), got '{spec}'")
        if not pathlib.Path(file).is_file():
            raise CLIError(f"matrix file '{file}' not found; check the path")
        try:
            out[name] = pd.read_csv(file, index_col=0)
        except (OSError, ValueError) as exc:
            raise CLIError(f"cannot read matrix file '{file}': {_first_line(exc)}") from exc
    return out


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="OUT", help="write the fit as JSON (FitResult.to_json) to OUT ('-': standard output)")
    p.add_argument("--html", metavar="OUT", help="write the summary as a standalone HTML page to OUT")
    p.add_argument("--plots", metavar="DIR", help="save diagnostic plots (PNG) in DIR; needs lmmformula[plot]")
    p.add_argument("--quiet", action="store_true", help="print nothing on stdout")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lmmformula`` command."""
    parser = argparse.ArgumentParser(prog="lmmformula", description="Linear mixed models from lme4-style formulas.")
    parser.add_argument("--version", action="version", version=f"lmmformula {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{fit,example,version}")
    fit = sub.add_parser("fit", help="fit a model to a data file and print its summary")
    fit.add_argument("data", help="a .csv, .tsv/.tab, .txt (whitespace) or .parquet file, or - for CSV on stdin")
    fit.add_argument("formula", help='e.g. "y ~ x + (1 | group)"')
    fit.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit.add_argument("--algorithm", type=str.upper, choices=["AI", "EM"], default="AI",
                     help="AI-REML after two EM steps (default) or EM only")
    fit.add_argument("--max-iter", type=int, metavar="N", help="iteration limit (default 200 for AI, 20000 for EM)")
    fit.add_argument("--tol", type=float, help="convergence tolerance (default 1e-8)")
    fit.add_argument("--matrix", action="append", default=[], metavar="NAME=FILE",
                     help='known covariance for vm(g, "NAME") terms: CSV with labels in the first column and header')
    fit.add_argument("--sep", help="field separator overriding the file extension's")
    _add_output_options(fit)
    example = sub.add_parser("example", help="fit a spatial model to a shipped field trial")
    example.add_argument("--name", choices=sorted(_EXAMPLES), default="slatehall", help="the trial (slatehall)")
    _add_output_options(example)
    sub.add_parser("version", help="print the version")
    return parser


def _check_plot_extra(args) -> None:
    if args.plots and not _has_module("matplotlib"):
        raise CLIError('--plots needs matplotlib: pip install "lmmformula[plot]"')


def write_plots(fit, directory: str) -> list[pathlib.Path]:
    """Residuals vs fitted; a caterpillar plot per random effect; variogram and field map for a 2-D field."""
    import matplotlib.pyplot as plt

    from . import plot

    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    drawings = {"residuals": lambda: plot.residuals(fit)}
    for term, effect in fit.shrinkage[["term", "effect"]].itertuples(index=False):
        slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{term} {effect}").strip("_")
        drawings[f"caterpillar_{slug}"] = lambda t=term, e=effect: plot.caterpillar(fit, t, e)
    res = fit.mme.residual
    if res is not None and res.is_field and {d.kind for d in res.dimensions} <= {"ar1", "id"}:
        drawings["variogram"] = lambda: plot.variogram(fit)
        drawings["field"] = lambda: plot.field(fit)
    written = []
    for name, draw in drawings.items():
        figure = draw().figure
        written.append(out / f"{name}.png")
        figure.savefig(written[-1], dpi=100)
        plt.close(figure)
    return written


def html_page(fit) -> str:
    """A standalone HTML document holding the summary of ``fit``."""
    title = html.escape(f"lmmformula: {fit.formula}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"{fit.summary()._repr_html_()}\n</body>\n</html>\n")


def write_outputs(fit, args) -> None:
    """The ``--json``, ``--html`` and ``--plots`` outputs."""
    try:
        if args.json == "-":
            sys.stdout.write(fit.to_json() + "\n")
        elif args.json:
            fit.to_json(args.json)
        if args.html:
            pathlib.Path(args.html).write_text(html_page(fit), encoding="utf-8")
        if args.plots:
            write_plots(fit, args.plots)
    except OSError as exc:
        raise CLIError(f"cannot write '{exc.filename or ''}': {exc.strerror or exc}; check the path") from exc


def run_fit(args) -> None:
    """``lmmformula fit``."""
    _check_plot_extra(args)
    data = read_data(args.data, args.sep)
    matrices = read_matrices(args.matrix) if args.matrix else None
    limits = {"max_iter": args.max_iter, **({"tol": args.tol} if args.tol is not None else {})}
    fit = LMM.from_formula(args.formula, data, matrices=matrices).fit(
        "ML" if args.ml else "REML", algorithm=args.algorithm, **limits)
    if not args.quiet:
        print(fit.summary())
    write_outputs(fit, args)


def run_example(args) -> None:
    """``lmmformula example``: a spatial field-trial fit, its summary and the best varieties."""
    _check_plot_extra(args)
    formula, description = _EXAMPLES[args.name]
    data = load(args.name)
    fit = LMM.from_formula(formula, data).fit()
    if not args.quiet:
        means = fit.predict_means("gen")
        best = means.ranked().head(5)[["rank", "estimate", "std_error", "df"]]
        print(f"Formula: {formula}")
        print(f"{description}: {len(data)} plots, {data['gen'].nunique()} varieties, {data['rep'].nunique()} "
              f"replicates, {data['row'].nunique()} rows x {data['col'].nunique()} columns\n")
        print(fit.summary())
        print(f"\nFive best varieties (predicted means; average SED {means.average_sed:.4g}):")
        print(best.round(2).to_string())
    write_outputs(fit, args)


def _report_warnings(caught) -> None:
    seen = set()
    for w in caught:
        key = (w.category, str(w.message))
        if key in seen:
            continue
        seen.add(key)
        if issubclass(w.category, LMMWarning):
            print(f"lmmformula: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _run(args) -> int:
    commands = {"fit": run_fit, "example": run_example}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LMMWarning)
        try:
            commands[args.command](args)
        finally:
            _report_warnings(caught)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``lmmformula`` command; returns the exit code (0 success, 1 bug, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    if args.command == "version":
        print(f"lmmformula {__version__}")
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _run(args)
    except BrokenPipeError:  # stdout closed early, e.g. piped to head: stop quietly, as a SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (LMMError, CLIError) as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc) if isinstance(exc, FormulaSyntaxError) else _first_line(exc)
        print(f"lmmformula: error: {message}", file=sys.stderr)
        return 2
