"""The ``lmmformula`` command line (``lmmformula.cli``), run in-process except for one subprocess test."""

from __future__ import annotations

import io
import json
import pathlib
import runpy
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lmmformula import cli, datasets

HERE = pathlib.Path(__file__).parent
SLEEP = "Reaction ~ Days + (Days | Subject)"
QUICK = "Reaction ~ Days + (1 | Subject)"  # fits in 0.1 s
SPATIAL = "yield ~ gen + (1 | rep) + ar1(row):ar1(col)"


@pytest.fixture
def sleep_csv(tmp_path):
    path = tmp_path / "sleep.csv"
    path.write_text((HERE / "data" / "sleepstudy.csv").read_text())
    return path


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_csv_prints_summary(capsys, sleep_csv):
    code, out, err = run(capsys, "fit", sleep_csv, SLEEP)
    assert code == 0 and err == ""
    assert "Linear mixed model fit by REML" in out
    assert "Random effects:" in out and "Shrinkage (reliability" in out and "Number of obs: 180" in out


def test_ml_changes_the_method(capsys, sleep_csv):
    code, out, _ = run(capsys, "fit", sleep_csv, QUICK, "--ml")
    assert code == 0
    assert "fit by maximum likelihood" in out and "ML converged" in out


def test_algorithm_and_tolerance(capsys, sleep_csv):
    code, out, _ = run(capsys, "fit", sleep_csv, QUICK, "--algorithm", "em", "--tol", "1e-6")
    assert code == 0
    assert "EM);" in out.splitlines()[-1] and "(tolerance 1e-06)" in out


def test_quiet_prints_nothing(capsys, sleep_csv):
    assert run(capsys, "fit", sleep_csv, QUICK, "--quiet") == (0, "", "")


def test_html_is_a_standalone_page_with_the_summary(capsys, sleep_csv, tmp_path):
    out_file = tmp_path / "fit.html"
    code, _, _ = run(capsys, "fit", sleep_csv, QUICK, "--html", out_file, "--quiet")
    text = out_file.read_text()
    assert code == 0
    assert text.startswith("<!DOCTYPE html>") and "<title>lmmformula: Reaction ~ Days" in text
    assert "Random effects" in text and "Shrinkage" in text and "</html>" in text and "}}" not in text


def test_json_holds_the_formula(capsys, sleep_csv, tmp_path):
    out_file = tmp_path / "fit.json"
    code, _, _ = run(capsys, "fit", sleep_csv, QUICK, "--json", out_file, "--quiet")
    assert code == 0
    assert json.loads(out_file.read_text())["formula"] == QUICK


def test_plots_of_a_field_trial_read_from_whitespace_text(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    data = tmp_path / "slatehall.txt"
    datasets.load("slatehall").to_csv(data, sep=" ", index=False)
    code, out, _ = run(capsys, "fit", data, SPATIAL, "--plots", tmp_path / "plots" / "new", "--quiet")
    assert code == 0 and out == ""
    names = sorted(p.name for p in (tmp_path / "plots" / "new").iterdir())
    assert names == ["caterpillar_rep_Intercept.png", "field.png", "residuals.png", "variogram.png"]


def test_plots_one_caterpillar_per_effect(capsys, sleep_csv, tmp_path):
    pytest.importorskip("matplotlib")
    code, _, _ = run(capsys, "fit", sleep_csv, SLEEP, "--plots", tmp_path, "--quiet")
    assert code == 0
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "residuals.png", "caterpillar_Subject_Intercept.png", "caterpillar_Subject_Days.png"}


def test_tsv_and_whitespace_text_with_na(capsys, tmp_path):
    data = pd.read_csv(HERE / "data" / "sleepstudy_missing.csv")
    data.to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    data.to_csv(tmp_path / "s.txt", sep=" ", index=False, na_rep="NA")
    expected = f"({int(data[['Reaction', 'Days', 'Subject']].isna().any(axis=1).sum())} dropped)"
    for name in ("s.tsv", "s.txt"):
        code, out, _ = run(capsys, "fit", tmp_path / name, QUICK)
        assert code == 0 and expected in out


def test_sep_override(capsys, tmp_path):
    path = tmp_path / "semicolon.csv"
    pd.read_csv(HERE / "data" / "sleepstudy.csv").to_csv(path, sep=";", index=False)
    code, out, _ = run(capsys, "fit", path, QUICK, "--sep", ";")
    assert code == 0 and "Number of obs: 180" in out
    code, _, err = run(capsys, "fit", path, QUICK)  # without --sep: one column, and a hint
    assert code == 2 and "read as one column" in err and "--sep" in err and "Traceback" not in err


def test_json_to_standard_output(capsys, sleep_csv):
    code, out, _ = run(capsys, "fit", sleep_csv, QUICK, "--json", "-", "--quiet")
    assert code == 0 and json.loads(out)["formula"] == QUICK


def test_parquet(capsys, tmp_path):
    if not (cli._has_module("pyarrow") or cli._has_module("fastparquet")):
        pytest.skip("needs pyarrow or fastparquet")
    path = tmp_path / "sleep.parquet"
    pd.read_csv(HERE / "data" / "sleepstudy.csv").to_parquet(path)
    code, out, _ = run(capsys, "fit", path, QUICK)
    assert code == 0 and "Number of obs: 180" in out


def test_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO((HERE / "data" / "sleepstudy.csv").read_text()))
    code, out, _ = run(capsys, "fit", "-", QUICK)
    assert code == 0 and "Number of obs: 180" in out


def test_known_matrix_from_csv(capsys, sleep_csv, tmp_path):
    subjects = sorted(pd.read_csv(sleep_csv)["Subject"].unique())
    pd.DataFrame(np.eye(len(subjects)), index=subjects, columns=subjects).to_csv(tmp_path / "K.csv")
    code, known, _ = run(capsys, "fit", sleep_csv, 'Reaction ~ Days + (1 | vm(Subject, "K"))',
                         "--matrix", f"K={tmp_path / 'K.csv'}")
    _, plain, _ = run(capsys, "fit", sleep_csv, "Reaction ~ Days + (1 | Subject)")
    assert code == 0
    loglik_line = [line for line in plain.splitlines() if "AIC" in line][0]
    assert plain.splitlines()[plain.splitlines().index(loglik_line) + 1] in known


@pytest.mark.parametrize("case", ["missing file", "directory", "unknown column", "unknown extension",
                                  "empty file", "not text", "bad matrix option"])
def test_bad_input_exits_2_with_one_line(capsys, sleep_csv, tmp_path, case):
    formula, extra = SLEEP, []
    data = {"missing file": tmp_path / "absent.csv", "unknown extension": tmp_path / "data.xlsx",
            "empty file": tmp_path / "empty.csv", "not text": tmp_path / "binary.csv",
            "directory": tmp_path}.get(case, sleep_csv)
    (tmp_path / "data.xlsx").write_text("x")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x81" * 50)
    if case == "unknown column":
        formula = "Reaction ~ Dayz + (1 | Subject)"
    if case == "bad matrix option":
        extra = ["--matrix", "K"]
    code, out, err = run(capsys, "fit", data, formula, *extra)
    assert code == 2 and out == ""
    assert err.startswith("lmmformula: error: ") and err.count("\n") == 1 and "Traceback" not in err
    if case in ("missing file", "directory", "unknown extension", "empty file", "not text"):
        assert pathlib.Path(data).name in err
    if case == "unknown column":
        assert "'Dayz'" in err and "did you mean 'Days'" in err


def test_formula_syntax_error_shows_the_caret(capsys, sleep_csv):
    code, _, err = run(capsys, "fit", sleep_csv, "Reaction ~ Days + (Days | Subject")
    lines = err.splitlines()
    assert code == 2 and "Traceback" not in err
    assert lines[0].startswith("lmmformula: error: unbalanced parentheses")
    assert lines[1].strip() == "Reaction ~ Days + (Days | Subject" and lines[2].strip() == "^"


def test_debug_shows_the_traceback(capsys, sleep_csv):
    code, _, err = run(capsys, "fit", sleep_csv, "Reaction ~ Dayz + (1 | Subject)", "--debug")
    assert code == 2
    assert "Traceback" in err and "UnknownColumnError" in err and "lmmformula: error: " in err


def test_convergence_warning_goes_to_stderr_and_exit_stays_0(capsys, sleep_csv):
    code, out, err = run(capsys, "fit", sleep_csv, QUICK, "--max-iter", "1")
    assert code == 0 and "did NOT converge" in out
    assert err.startswith("lmmformula: warning: REML iterations did not converge")


def test_missing_optional_packages_name_the_install(capsys, sleep_csv, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_has_module", lambda name: False)
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    code, _, err = run(capsys, "fit", tmp_path / "x.parquet", QUICK)
    assert code == 2 and "pip install pyarrow" in err
    code, _, err = run(capsys, "fit", sleep_csv, QUICK, "--plots", tmp_path / "plots")
    assert code == 2 and 'pip install "lmmformula[plot]"' in err and not (tmp_path / "plots").exists()


def test_unwritable_output_exits_2(capsys, sleep_csv, tmp_path):
    code, _, err = run(capsys, "fit", sleep_csv, QUICK, "--quiet", "--html", tmp_path / "no" / "dir" / "f.html")
    assert code == 2 and err.startswith("lmmformula: error: cannot write") and "f.html" in err


def test_bugs_keep_their_traceback(sleep_csv, monkeypatch):
    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "run_fit", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["fit", str(sleep_csv), SLEEP])


def test_version_and_usage(capsys):
    from lmmformula import __version__

    assert run(capsys, "version")[:2] == (0, f"lmmformula {__version__}\n")
    assert run(capsys, "--version")[:2] == (0, f"lmmformula {__version__}\n")
    code, out, err = run(capsys)
    assert code == 2 and "usage: lmmformula" in err
    code, _, err = run(capsys, "fit", "only-data.csv")
    assert code == 2 and "the following arguments are required: formula" in err


def test_example_in_process_writes_outputs(capsys, tmp_path):
    code, out, _ = run(capsys, "example", "--html", tmp_path / "e.html", "--json", tmp_path / "e.json")
    assert code == 0
    assert out.startswith(f"Formula: {SPATIAL}\nSlate Hall")
    assert "Five best varieties" in out and "G12" in out
    assert "ar1(row):ar1(col)" in (tmp_path / "e.html").read_text()
    assert json.loads((tmp_path / "e.json").read_text())["formula"] == SPATIAL


def test_python_m_without_arguments_runs_the_example(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lmmformula"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("lmmformula", run_name="__main__")
    assert exit_info.value.code == 0
    assert "Five best varieties" in capsys.readouterr().out


def test_python_m_lmmformula_example_subprocess(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lmmformula", "example"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "Covariance parameters" in done.stdout and "rho(col)" in done.stdout
    assert "Shrinkage (reliability = 1 - PEV / variance):" in done.stdout
    assert "REML converged" in done.stdout
