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
#     tests/data/hard_unscaled_slope.csv, hard_boundary_slope.csv,
#         hard_boundary_slope2.csv   simulated data (see tests/data/README.md);
#         committed files, read but never rewritten by this script
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
# "Hard" cases (hard_cases below) are fitted with each of lme4's optimizers
# bobyqa, Nelder_Mead and nloptwrap (the lmer default), because some of them stop
# early on these data.  Their JSON entries carry two extra fields:
#     loglik_by_optimizer  {optimizer: log-likelihood of the first fit with it}
#                          (before the restart polish of fit_case)
#     optimizer            the optimizer with the highest of these (ties: the first
#                          in the order above); the recorded fit is its fit after the
#                          usual restart polish, and the lmerTest refit uses its control.
#     notes                (only if any) warnings / messages of lmerTest and pbkrtest for
#                          the recorded fit, and why Kenward-Roger fields are missing
#                          (a REML case without kenward_roger: pbkrtest failed).
#     best_known_loglik    the best log-likelihood found by a deterministic multi-start
#     best_known_theta     search (multi_start below), and its theta.  loglik, theta and
#                          every other field still describe the recorded fit (best of the
#                          three default-start optimizers); best_known_loglik >= loglik by
#                          construction, and it is higher where that fit is only a local
#                          optimum.  The search, per case:
#                            set.seed(1) (R's default Mersenne-Twister / Inversion RNG);
#                            20 starts, each drawing runif(2, 0.01, 3) (diagonal of a
#                            lower-triangular L) then rnorm(1) (its off-diagonal);
#                            L is the relative covariance factor for x standardised with
#                            the case's data, xs = (x - mean(x)) / sd(x); random effects
#                            on (1, xs) map to (1, x) by T = [1, -mean/sd; 0, 1/sd], so
#                            the start theta is the lower Cholesky factor of T L L' T'
#                            (this keeps the starts on the scale of the data, e.g. a slope
#                            entry ~1e-3 and a near -1 correlation for uncentred x ~ 1000);
#                            every start fitted with each of bobyqa, Nelder_Mead,
#                            nloptwrap (control as opt_ctrl, fits that error are skipped);
#                            the best of these 60 fits and the recorded fit is restarted
#                            from its theta with each optimizer until no gain.
#     satterthwaite_centred  (hard_unscaled_slope_* only) {"df": {"x": ..}, "t": {"x": ..}}:
#                          lmerTest Satterthwaite df and t of the slope x for the same model
#                          fitted (Nelder_Mead, default start) to the data with x replaced by
#                          x - mean(x) (R's mean()).  Why: with x ~ 1000 uncentred, theta is
#                          badly scaled (intercept entry ~10, slope entry ~1e-3, correlation
#                          near -1) and lmerTest's numerical Hessian of the variance
#                          parameters is inaccurate there, so the uncentred Satterthwaite df
#                          of the slope is off.  Centring is an affine reparameterisation of
#                          the fixed effects (unit Jacobian) plus a reparameterisation of the
#                          unstructured random-effects covariance, so the maximised ML and
#                          REML log-likelihoods are equal (checked: the centred fit must be
#                          within 1e-6 of best_known_loglik), and the slope's estimate, SE,
#                          t and Satterthwaite df are invariant; only the intercept changes.
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

# Simulated "hard" datasets: committed CSVs read in place (y, x numeric; g factor).
for (nm in c("hard_unscaled_slope", "hard_boundary_slope", "hard_boundary_slope2")) {
  d <- read.csv(file.path(out_data, paste0(nm, ".csv")), stringsAsFactors = FALSE)
  stopifnot(identical(names(d), c("y", "x", "g")), !anyNA(d))
  d$g <- factor(d$g, ordered = FALSE)
  loaded[[nm]] <- d
}

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

# cases fitted with every optimizer in `optimizers`, keeping the best (see header)
hard_cases <- list(
  list("hard_unscaled_slope_reml",  "y ~ x + (x | g)", "hard_unscaled_slope",  TRUE),
  list("hard_unscaled_slope_ml",    "y ~ x + (x | g)", "hard_unscaled_slope",  FALSE),
  list("hard_boundary_slope_reml",  "y ~ x + (x | g)", "hard_boundary_slope",  TRUE),
  list("hard_boundary_slope_ml",    "y ~ x + (x | g)", "hard_boundary_slope",  FALSE),
  list("hard_boundary_slope2_reml", "y ~ x + (x | g)", "hard_boundary_slope2", TRUE),
  list("hard_boundary_slope2_ml",   "y ~ x + (x | g)", "hard_boundary_slope2", FALSE)
)

ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5),
                    check.conv.singular = "ignore")

optimizers <- c("bobyqa", "Nelder_Mead", "nloptwrap")
# same settings as ctrl; nloptwrap takes maxeval (1e5, its default) instead of maxfun
opt_ctrl <- function(optimizer)
  lmerControl(optimizer = optimizer,
              optCtrl = if (optimizer == "nloptwrap") list(maxeval = 1e5) else list(maxfun = 1e5),
              check.conv.singular = "ignore")

crit <- function(fit) if (isREML(fit)) REMLcrit(fit) else deviance(fit)

# multi-start search of the hard cases (see header): start thetas for (1 + x | g)
multi_start_thetas <- function(x, n = 20) {
  m <- mean(x); s <- sd(x)
  Tm <- matrix(c(1, 0, -m / s, 1 / s), 2, 2)          # (1, xs) -> (1, x)
  set.seed(1)
  lapply(seq_len(n), function(k) {
    dg <- runif(2, 0.01, 3); off <- rnorm(1)
    L <- matrix(c(dg[1], off, 0, dg[2]), 2, 2)          # lower triangular
    Lam <- Tm %*% L
    C <- t(chol(Lam %*% t(Lam)))                        # lower, positive diagonal
    c(C[1, 1], C[2, 1], C[2, 2])                        # lme4's theta order
  })
}

# best log-likelihood / theta over the multi-start fits and `fit` (the recorded fit)
multi_start <- function(name, fstr, dsname, REML, fit) {
  stopifnot(identical(names(getME(fit, "theta")), c("g.(Intercept)", "g.x.(Intercept)", "g.x")))
  try_fit <- function(o, theta)
    tryCatch(suppressMessages(suppressWarnings(
      lme4::lmer(as.formula(fstr), data = loaded[[dsname]], REML = REML,
                 control = opt_ctrl(o), start = list(theta = theta)))),
      error = function(e) NULL)
  best <- list(ll = as.numeric(logLik(fit)), theta = getME(fit, "theta"), from = "recorded fit")
  n_fail <- 0
  starts <- multi_start_thetas(loaded[[dsname]]$x)
  for (k in seq_along(starts)) for (o in optimizers) {
    f <- try_fit(o, starts[[k]])
    if (is.null(f)) { n_fail <- n_fail + 1; next }
    ll <- as.numeric(logLik(f))
    if (ll > best$ll) best <- list(ll = ll, theta = getME(f, "theta"),
                                   from = sprintf("start %d, %s", k, o))
  }
  repeat {  # restart polish of the best
    gained <- FALSE
    for (o in optimizers) {
      f <- try_fit(o, best$theta)
      if (!is.null(f) && as.numeric(logLik(f)) > best$ll) {
        best <- list(ll = as.numeric(logLik(f)), theta = getME(f, "theta"),
                     from = paste(best$from, "+ restart", o))
        gained <- TRUE
      }
    }
    if (!gained) break
  }
  cat(sprintf("%-28s best_known_loglik=%.10f (loglik=%.10f, diff %.3g; from %s; %d fits failed)\n",
              name, best$ll, as.numeric(logLik(fit)),
              best$ll - as.numeric(logLik(fit)), best$from, n_fail))
  best
}

# lmerTest Satterthwaite df / t of the slope x with x centred (see header)
satterthwaite_centred <- function(fstr, dsname, REML, best_ll) {
  dc <- loaded[[dsname]]
  dc$x <- dc$x - mean(dc$x)
  tfit <- withCallingHandlers(
    do.call(lmerTest::lmer, list(formula = as.formula(fstr), data = dc, REML = REML,
                                 control = opt_ctrl("Nelder_Mead"))),
    warning = function(w) { cat("     centred fit warning:", conditionMessage(w), "\n")
                            invokeRestart("muffleWarning") },
    message = function(m) { cat("     centred fit message:", trimws(conditionMessage(m)), "\n")
                            invokeRestart("muffleMessage") })
  ll <- as.numeric(logLik(tfit))
  cat(sprintf("     centred fit loglik=%.10f (best_known_loglik - centred = %.3g)\n",
              ll, best_ll - ll))
  if (abs(ll - best_ll) > 1e-6)
    stop(sprintf("centred fit log-likelihood differs from best_known_loglik by %g", ll - best_ll))
  cf <- summary(tfit, ddf = "Satterthwaite")$coefficients
  list(df = list(x = cf["x", "df"]), t = list(x = cf["x", "t value"]))
}

fit_case <- function(formula, data, REML, msgs, ctrl = get("ctrl", envir = globalenv()),
                     polish = TRUE) {
  env <- environment()
  handler_w <- function(w) { env$msgs <- c(env$msgs, paste("warning:", conditionMessage(w)))
                             invokeRestart("muffleWarning") }
  handler_m <- function(m) { env$msgs <- c(env$msgs, paste("message:", trimws(conditionMessage(m))))
                             invokeRestart("muffleMessage") }
  fit <- withCallingHandlers(
    lme4::lmer(formula, data = data, REML = REML, control = ctrl),
    warning = handler_w, message = handler_m)
  if (!polish) return(list(fit = fit, msgs = msgs, improvement = 0))
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

# warnings / messages of the lmerTest / pbkrtest calls of the current case
# (stored as "notes" for the hard cases only)
ddf_notes <- character()
add_note <- function(txt) ddf_notes <<- c(ddf_notes, gsub("\\s*\n\\s*", " ", trimws(txt)))

# run expr, print its warnings / messages, return its value
noisy <- function(expr, label) {
  withCallingHandlers(expr,
    warning = function(w) { cat("    ", label, "warning:", conditionMessage(w), "\n")
                            add_note(paste(label, "warning:", conditionMessage(w)))
                            invokeRestart("muffleWarning") },
    message = function(m) { cat("    ", label, "message:", trimws(conditionMessage(m)), "\n")
                            add_note(paste(label, "message:", conditionMessage(m)))
                            invokeRestart("muffleMessage") })
}

ddf_fields <- function(fstr, dsname, REML, fit, ctrl = get("ctrl", envir = globalenv())) {
  # do.call puts formula and data into the call, so lmerTest's internal
  # update(model, devFunOnly = TRUE) can re-evaluate it anywhere
  ddf_notes <<- character()
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
      # when pbkrtest fails, lmerTest only warns and reports Satterthwaite instead:
      # treat that as a failure rather than recording Satterthwaite as Kenward-Roger
      kr_fallback <- NULL
      ck <- noisy(withCallingHandlers(
        summary(tfit, ddf = "Kenward-Roger")$coefficients,
        warning = function(w) if (grepl("Unable to compute Kenward-Roger", conditionMessage(w))) {
          kr_fallback <<- conditionMessage(w)
          invokeRestart("muffleWarning")
        }), "Kenward-Roger")
      if (!is.null(kr_fallback)) {
        why <- tryCatch({ pbkrtest::vcovAdj(as(tfit, "lmerMod")); "" },
                        error = function(e) paste0(" (pbkrtest::vcovAdj: ", conditionMessage(e), ")"))
        stop(kr_fallback, why, call. = FALSE)
      }
      stopifnot(identical(rownames(ck), names(fixef(fit))), !anyNA(ck[, "df"]))
      res <- list(kenward_roger = list(df = coef_col(ck, "df"), se = coef_col(ck, "Std. Error")))
      if (has_terms)
        res$anova_kenward_roger <- anova_rows(
          noisy(anova(tfit, type = 3, ddf = "Kenward-Roger"), "Kenward-Roger anova"))
      res
    }, error = function(e) {
      cat("     Kenward-Roger skipped:", conditionMessage(e), "\n")
      add_note(paste("Kenward-Roger skipped:", conditionMessage(e)))
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

# hard cases: first fit with each optimizer, keep the best, polish it as fit_case does
for (cs in hard_cases) {
  name <- cs[[1]]; fstr <- cs[[2]]; dsname <- cs[[3]]; REML <- cs[[4]]
  res <- tryCatch({
    firsts <- lapply(setNames(optimizers, optimizers), function(o)
      fit_case(as.formula(fstr), loaded[[dsname]], REML, character(),
               ctrl = opt_ctrl(o), polish = FALSE))
    lls <- vapply(firsts, function(r) as.numeric(logLik(r$fit)), numeric(1))
    best <- optimizers[which.max(lls)]
    for (o in optimizers) {
      cat(sprintf("%-28s   %-11s loglik=%.10f%s\n", name, o, lls[[o]],
                  if (o == best) "  <- best" else ""))
      for (m in firsts[[o]]$msgs) cat("        ", m, "\n")
    }
    bctrl <- opt_ctrl(best)
    # polish the winner: restart from its theta with the same optimizer
    fit <- firsts[[best]]$fit
    msgs <- character()
    fit2 <- withCallingHandlers(
      lme4::lmer(as.formula(fstr), data = loaded[[dsname]], REML = REML, control = bctrl,
                 start = list(theta = getME(fit, "theta"))),
      warning = function(w) { msgs <<- c(msgs, paste("warning:", conditionMessage(w)))
                              invokeRestart("muffleWarning") },
      message = function(m) { msgs <<- c(msgs, paste("message:", trimws(conditionMessage(m))))
                              invokeRestart("muffleMessage") })
    improvement <- crit(fit) - crit(fit2)
    if (improvement > 0) fit <- fit2
    out <- summarise(name, fstr, dsname, REML, fit)
    cat(sprintf("%-28s crit=%.10f polish_gain=%.3g singular=%s optimizer=%s\n",
                name, out$deviance_or_reml_criterion, improvement, out$singular, best))
    for (m in msgs) cat("    polish", m, "\n")
    ddf <- ddf_fields(fstr, dsname, REML, fit, ctrl = bctrl)
    notes <- ddf_notes
    bk <- multi_start(name, fstr, dsname, REML, fit)
    cent <- if (dsname == "hard_unscaled_slope")
      list(satterthwaite_centred = satterthwaite_centred(fstr, dsname, REML, bk$ll))
    c(out, list(optimizer = best, loglik_by_optimizer = as.list(lls),
                best_known_loglik = bk$ll, best_known_theta = I(unname(bk$theta))),
      ddf, cent, if (length(notes)) list(notes = I(notes)))
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
