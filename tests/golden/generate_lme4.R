# Generate golden reference values for lmmformula from R / lme4.
#
# Run from the repository root:
#     Rscript tests/golden/generate_lme4.R
#
# Requires (Debian packages):
#     r-base-core r-cran-lme4 r-cran-nlme r-cran-matrix r-cran-jsonlite
#     r-cran-lmertest r-cran-pbkrtest
#
# Inputs (not exported, read in place):
#     /work/shared/data/agridat/gilmour.slatehall.txt   (override the directory
#         with the environment variable AGRIDAT_DIR); agridat 1.27, MIT licence
#
# Outputs:
#     tests/data/*.csv          datasets (write.csv, row.names = FALSE, factors as labels;
#                               sleepstudy_missing.csv writes NA as an empty field)
#     tests/golden/lme4.json    reference fits (jsonlite, full double precision)
#
# Besides the lme4 fit itself every case records lmerTest results: Satterthwaite
# df / t / p for the fixed effects and the type-III Satterthwaite anova table,
# and for REML fits the Kenward-Roger df and adjusted standard errors (pbkrtest)
# plus the type-III Kenward-Roger anova table.  The lmerTest refit uses the same
# formula, data, REML flag and control, started at the theta of the recorded
# lme4 fit so that both describe the same optimum.
#
# Length-1 vectors that are arrays in the JSON schema are wrapped in I() so
# auto_unbox does not turn them into scalars.
#
# Every model is fitted to the data *as read back from the exported CSV*, with
# categorical columns converted by factor() (levels = sorted labels, unordered,
# treatment contrasts), so the references match what a Python user gets from
# pandas + lmmformula.  Numeric-looking grouping columns (Subject in
# sleepstudy, replicate in cake, Chick / Diet in ChickWeight) are read back as
# integers and then factor()ed, so their levels sort numerically, as pandas
# categoricals of an integer column do.

suppressPackageStartupMessages({
  library(lme4)
  library(nlme)
  library(jsonlite)
  library(lmerTest)   # masks lme4::lmer; the reference fits below call lme4::lmer
  library(pbkrtest)
})

out_data <- file.path("tests", "data")
out_json <- file.path("tests", "golden", "lme4.json")
if (!dir.exists(out_data) || !dir.exists(dirname(out_json)))
  stop("run this script from the repository root (tests/data and tests/golden must exist)")

## ---------------------------------------------------------------- datasets

plain <- function(df) {
  # drop groupedData classes/attributes, turn every factor into plain labels
  df <- as.data.frame(lapply(as.data.frame(df), function(x)
    if (is.factor(x)) as.character(x) else as.vector(x)),
    stringsAsFactors = FALSE)
  rownames(df) <- NULL
  df
}

datasets <- list(
  sleepstudy  = list(df = plain(lme4::sleepstudy),  factors = "Subject"),
  Dyestuff    = list(df = plain(lme4::Dyestuff),    factors = "Batch"),
  Dyestuff2   = list(df = plain(lme4::Dyestuff2),   factors = "Batch"),
  Penicillin  = list(df = plain(lme4::Penicillin),  factors = c("plate", "sample")),
  Pastes      = list(df = plain(lme4::Pastes),      factors = c("batch", "cask", "sample")),
  cake        = list(df = plain(lme4::cake),        factors = c("replicate", "recipe", "temperature")),
  Orthodont   = list(df = plain(nlme::Orthodont),   factors = c("Subject", "Sex")),
  Oats        = list(df = plain(nlme::Oats),        factors = c("Block", "Variety")),
  ChickWeight = list(df = plain(datasets::ChickWeight), factors = c("Chick", "Diet")),
  # sleepstudy with holes: Reaction missing in rows 3, 17, 50, 51, Days in row 100
  sleepstudy_missing = list(df = local({
    d <- plain(lme4::sleepstudy)
    d$Reaction[c(3, 17, 50, 51)] <- NA
    d$Days[100] <- NA
    d
  }), factors = "Subject", na = "")
)

loaded <- list()
for (nm in names(datasets)) {
  ds <- datasets[[nm]]
  path <- file.path(out_data, paste0(nm, ".csv"))
  write.csv(ds$df, path, row.names = FALSE, na = if (is.null(ds$na)) "NA" else ds$na)
  back <- read.csv(path, stringsAsFactors = FALSE)
  # check the round trip reproduces the data (values, as labels, missing cells)
  stopifnot(identical(names(back), names(ds$df)), nrow(back) == nrow(ds$df))
  for (col in names(back)) {
    a <- ds$df[[col]]; b <- back[[col]]
    stopifnot(identical(is.na(a), is.na(b)))
    ok <- !is.na(a)
    if (is.numeric(a)) stopifnot(isTRUE(all(a[ok] == b[ok])))
    else stopifnot(identical(as.character(a[ok]), as.character(b[ok])))
  }
  for (f in ds$factors) back[[f]] <- factor(back[[f]], ordered = FALSE)
  loaded[[nm]] <- back
}

# Slate Hall wheat trial (agridat::gilmour.slatehall), read in place, not exported.
# row / col stay numeric; lme4 turns the variables of a grouping term such as
# rep:row into factors itself.  gen / rep: factors with sorted levels.
agridat_dir <- Sys.getenv("AGRIDAT_DIR", "/work/shared/data/agridat")
slate <- read.delim(file.path(agridat_dir, "gilmour.slatehall.txt"),
                    na.strings = "NA", stringsAsFactors = FALSE)
stopifnot(nrow(slate) == 150, identical(names(slate), c("row", "col", "yield", "gen", "rep")))
for (f in c("gen", "rep")) slate[[f]] <- factor(slate[[f]], ordered = FALSE)
loaded[["slatehall"]] <- slate

# "data" field of a case: the CSV in tests/data, or a name for data read elsewhere
data_label <- function(dsname)
  if (dsname == "slatehall") "slatehall" else paste0(dsname, ".csv")

## ---------------------------------------------------------------- cases

cases <- list(
  list("sleepstudy_slopes_reml",   "Reaction ~ Days + (Days | Subject)",  "sleepstudy", TRUE),
  list("sleepstudy_slopes_ml",     "Reaction ~ Days + (Days | Subject)",  "sleepstudy", FALSE),
  list("sleepstudy_uncorr_ml",     "Reaction ~ Days + (Days || Subject)", "sleepstudy", FALSE),
  list("sleepstudy_uncorr_reml",   "Reaction ~ Days + (Days || Subject)", "sleepstudy", TRUE),
  list("sleepstudy_intercept_reml","Reaction ~ Days + (1 | Subject)",     "sleepstudy", TRUE),
  list("dyestuff_reml",            "Yield ~ 1 + (1 | Batch)",             "Dyestuff",   TRUE),
  list("dyestuff_ml",              "Yield ~ 1 + (1 | Batch)",             "Dyestuff",   FALSE),
  list("dyestuff2_boundary_reml",  "Yield ~ 1 + (1 | Batch)",             "Dyestuff2",  TRUE),
  list("penicillin_crossed_reml",  "diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin", TRUE),
  list("pastes_nested_reml",       "strength ~ 1 + (1 | batch/cask)",     "Pastes",     TRUE),
  list("pastes_nested_ml",         "strength ~ 1 + (1 | batch/cask)",     "Pastes",     FALSE),
  list("cake_interaction_reml",    "angle ~ recipe * temperature + (1 | recipe:replicate)", "cake", TRUE),
  list("cake_numeric_reml",        "angle ~ recipe * temp + (1 | recipe:replicate)",        "cake", TRUE),
  list("orthodont_slopes_reml",    "distance ~ age * Sex + (age | Subject)",  "Orthodont", TRUE),
  list("oats_splitplot_reml",      "yield ~ Variety * nitro + (1 | Block/Variety)", "Oats", TRUE),
  list("chick_slopes_ml",          "weight ~ Time * Diet + (Time | Chick)",   "ChickWeight", FALSE),
  list("slatehall_ib_reml",        "yield ~ gen + (1 | rep) + (1 | rep:row) + (1 | rep:col)", "slatehall", TRUE),
  list("sleepstudy_uncorr_slope_only_reml", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", "sleepstudy", TRUE),
  list("penicillin_ml",            "diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin", FALSE),
  list("orthodont_ml",             "distance ~ age * Sex + (age | Subject)",  "Orthodont", FALSE),
  list("missing_rows_reml",        "Reaction ~ Days + (Days | Subject)",  "sleepstudy_missing", TRUE)
)

ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5),
                    check.conv.singular = "ignore")

crit <- function(fit) if (isREML(fit)) REMLcrit(fit) else deviance(fit)

fit_case <- function(formula, data, REML, msgs) {
  env <- environment()
  handler_w <- function(w) { env$msgs <- c(env$msgs, paste("warning:", conditionMessage(w)))
                             invokeRestart("muffleWarning") }
  handler_m <- function(m) { env$msgs <- c(env$msgs, paste("message:", trimws(conditionMessage(m))))
                             invokeRestart("muffleMessage") }
  fit <- withCallingHandlers(
    lme4::lmer(formula, data = data, REML = REML, control = ctrl),
    warning = handler_w, message = handler_m)
  # polish: refit starting from the optimum found, keep the better one
  fit2 <- withCallingHandlers(
    lme4::lmer(formula, data = data, REML = REML, control = ctrl,
               start = list(theta = getME(fit, "theta"))),
    warning = handler_w, message = handler_m)
  improvement <- crit(fit) - crit(fit2)
  if (improvement > 0) fit <- fit2
  list(fit = fit, msgs = msgs, improvement = improvement)
}

na2null <- function(x) if (length(x) == 1 && is.na(x)) NULL else x

summarise <- function(name, formula_str, dsname, REML, fit) {
  fe <- fixef(fit)
  V <- as.matrix(vcov(fit))
  th <- getME(fit, "theta")
  lower <- getME(fit, "lower")

  vc <- as.data.frame(VarCorr(fit))
  varcorr <- lapply(seq_len(nrow(vc)), function(i)
    list(grp = vc$grp[i], var1 = na2null(vc$var1[i]), var2 = na2null(vc$var2[i]),
         vcov = vc$vcov[i], sdcor = vc$sdcor[i]))

  re <- ranef(fit, condVar = TRUE)
  red <- as.data.frame(re)
  ranef_out <- list()
  for (g in names(re)) {
    vals <- re[[g]]
    levs <- rownames(vals)
    cols <- colnames(vals)
    sub <- red[red$grpvar == g, ]
    sdmat <- matrix(NA_real_, length(levs), length(cols))
    for (j in seq_along(cols)) {
      s <- sub[sub$term == cols[j], ]
      sdmat[, j] <- s$condsd[match(levs, as.character(s$grp))]
      stopifnot(isTRUE(all.equal(s$condval[match(levs, as.character(s$grp))], vals[[j]])))
    }
    stopifnot(!anyNA(sdmat))
    ranef_out[[g]] <- list(
      levels = I(levs), columns = I(cols),
      values = unname(lapply(seq_along(levs), function(i) I(unname(as.numeric(vals[i, ]))))),
      condsd = unname(lapply(seq_along(levs), function(i) I(sdmat[i, ]))))
  }

  # deviance function (REML criterion or ML deviance, -2 scale)
  lf <- lFormula(as.formula(formula_str), data = loaded[[dsname]], REML = REML)
  devfun <- do.call(mkLmerDevfun, lf)
  diag_idx <- lower == 0
  thetas <- list(unname(th),
                 unname(th * 0.5),
                 unname(ifelse(diag_idx, th * 1.3 + 0.05, th * 1.3)))
  objective_at <- lapply(thetas, function(t) list(theta = I(t), value = devfun(t)))
  stopifnot(isTRUE(all.equal(objective_at[[1]]$value, unname(crit(fit)), tolerance = 1e-8)))

  ll <- logLik(fit)
  list(
    name = name,
    data = data_label(dsname),
    formula = formula_str,
    REML = REML,
    loglik = as.numeric(ll),
    deviance_or_reml_criterion = unname(crit(fit)),
    aic = AIC(fit), bic = BIC(fit),
    nobs = nobs(fit),
    sigma = sigma(fit),
    theta = I(unname(th)), theta_names = I(names(th)),
    fixef = as.list(fe),
    fixef_se = as.list(setNames(sqrt(diag(V)), names(fe))),
    vcov = unname(lapply(seq_len(nrow(V)), function(i) I(unname(V[i, ])))),
    varcorr = varcorr,
    ranef = ranef_out,
    objective_at = objective_at,
    singular = isSingular(fit)
  )
}

## ---------------------------------------------------------------- lmerTest

# one column of a coefficient table as a named list {coef: value}
# (explicit names: cf[, j] on a one-row table would drop them)
coef_col <- function(cf, col) as.list(setNames(unname(cf[, col]), rownames(cf)))

anova_rows <- function(a)
  lapply(seq_len(nrow(a)), function(i)
    list(term = rownames(a)[i], NumDF = a[i, "NumDF"], DenDF = a[i, "DenDF"],
         F = a[i, "F value"], p = a[i, "Pr(>F)"]))

# run expr, print its warnings / messages, return its value
noisy <- function(expr, label) {
  withCallingHandlers(expr,
    warning = function(w) { cat("    ", label, "warning:", conditionMessage(w), "\n")
                            invokeRestart("muffleWarning") },
    message = function(m) { cat("    ", label, "message:", trimws(conditionMessage(m)), "\n")
                            invokeRestart("muffleMessage") })
}

ddf_fields <- function(fstr, dsname, REML, fit) {
  # do.call puts formula and data into the call, so lmerTest's internal
  # update(model, devFunOnly = TRUE) can re-evaluate it anywhere
  tfit <- noisy(do.call(lmerTest::lmer,
                        list(formula = as.formula(fstr), data = loaded[[dsname]], REML = REML,
                             control = ctrl, start = list(theta = getME(fit, "theta")))),
                "lmerTest::lmer")
  stopifnot(inherits(tfit, "lmerModLmerTest"))
  dcrit <- crit(tfit) - crit(fit)
  if (abs(dcrit) > 1e-8 * max(1, abs(crit(fit))))
    stop(sprintf("lmerTest refit criterion differs from the lme4 fit by %g", dcrit))
  stopifnot(isTRUE(all.equal(fixef(tfit), fixef(fit), tolerance = 1e-6)))

  has_terms <- length(attr(terms(tfit, fixed.only = TRUE), "term.labels")) > 0
  out <- list()
  cf <- noisy(summary(tfit, ddf = "Satterthwaite")$coefficients, "Satterthwaite")
  stopifnot(identical(rownames(cf), names(fixef(fit))))
  out$satterthwaite <- list(df = coef_col(cf, "df"), t = coef_col(cf, "t value"),
                            p = coef_col(cf, "Pr(>|t|)"))
  if (has_terms)
    out$anova_satterthwaite <- anova_rows(
      noisy(anova(tfit, type = 3, ddf = "Satterthwaite"), "Satterthwaite anova"))

  if (REML) {
    kr <- tryCatch({
      ck <- noisy(summary(tfit, ddf = "Kenward-Roger")$coefficients, "Kenward-Roger")
      stopifnot(identical(rownames(ck), names(fixef(fit))), !anyNA(ck[, "df"]))
      res <- list(kenward_roger = list(df = coef_col(ck, "df"), se = coef_col(ck, "Std. Error")))
      if (has_terms)
        res$anova_kenward_roger <- anova_rows(
          noisy(anova(tfit, type = 3, ddf = "Kenward-Roger"), "Kenward-Roger anova"))
      res
    }, error = function(e) {
      cat("     Kenward-Roger skipped:", conditionMessage(e), "\n")
      NULL
    })
    out <- c(out, kr)
  }
  out
}

results <- list()
for (cs in cases) {
  name <- cs[[1]]; fstr <- cs[[2]]; dsname <- cs[[3]]; REML <- cs[[4]]
  res <- tryCatch({
    r <- fit_case(as.formula(fstr), loaded[[dsname]], REML, character())
    out <- summarise(name, fstr, dsname, REML, r$fit)
    cat(sprintf("%-28s crit=%.10f polish_gain=%.3g singular=%s\n",
                name, out$deviance_or_reml_criterion, r$improvement, out$singular))
    for (m in r$msgs) cat("    ", m, "\n")
    c(out, ddf_fields(fstr, dsname, REML, r$fit))
  }, error = function(e) {
    cat(sprintf("%-28s FAILED: %s\n", name, conditionMessage(e)))
    NULL
  })
  if (!is.null(res)) results[[length(results) + 1]] <- res
}

versions <- list(R = paste(R.version$major, R.version$minor, sep = "."),
                 lme4 = as.character(packageVersion("lme4")),
                 Matrix = as.character(packageVersion("Matrix")),
                 nlme = as.character(packageVersion("nlme")),
                 lmerTest = as.character(packageVersion("lmerTest")),
                 pbkrtest = as.character(packageVersion("pbkrtest")))

json <- toJSON(list(versions = versions, cases = results),
               auto_unbox = TRUE, digits = NA, null = "null", na = "null",
               pretty = TRUE)
writeLines(json, out_json)
cat(sprintf("wrote %d cases to %s\n", length(results), out_json))
