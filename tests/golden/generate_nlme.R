# Golden values for residual (R-side) AR1 and compound-symmetry structures, from nlme.
# Run from the repository root:  Rscript tests/golden/generate_nlme.R
# Needs Debian packages r-base-core r-cran-nlme r-cran-jsonlite. Writes tests/golden/nlme.json.
# lmmformula's `Subject:ar1(age)` is nlme's corAR1(form = ~ t | Subject) with t the grid position
# (age - 8) / 2; gaps in t (dropped rows) are gaps in the grid in both. `Subject:cs(age)` is
# corCompSymm(form = ~ 1 | Subject).
suppressMessages({library(nlme); library(jsonlite)})
o <- read.csv("tests/data/Orthodont.csv", stringsAsFactors = TRUE)
o$t <- (o$age - 8) / 2
o$t1 <- o$t + 1  # corSymm wants positions 1, 2, ...
s <- read.csv("tests/data/sleepstudy.csv")
s$Subject <- factor(s$Subject)
o_missing <- o[-c(2, 7, 15, 16, 40, 63, 90), ]

record <- function(name, data_name, drop_rows, formula, fit, reml) {
  cs <- fit$modelStruct$corStruct
  list(name = name, data = data_name, drop_rows = I(drop_rows), formula = formula, REML = reml,
       loglik = as.numeric(logLik(fit)), nobs = nobs(fit), sigma = fit$sigma,
       rho = as.numeric(coef(cs, unconstrained = FALSE)),
       fixef = as.list(if (inherits(fit, "lme")) fixef(fit) else coef(fit)),
       fixef_se = as.list(sqrt(diag(vcov(fit)))),
       random_sd = if (inherits(fit, "lme")) as.numeric(VarCorr(fit)[1, "StdDev"]) else NULL)
}
cases <- list()
for (reml in c(TRUE, FALSE)) {
  m <- if (reml) "REML" else "ML"
  g <- gls(distance ~ age * Sex, o, correlation = corAR1(form = ~ t | Subject), method = m)
  cases[[length(cases) + 1]] <- record(paste0("orthodont_ar1_", tolower(m)), "Orthodont.csv", integer(0),
                                       "distance ~ age * Sex + Subject:ar1(age)", g, reml)
  l <- lme(distance ~ age * Sex, random = ~ 1 | Subject, data = o,
           correlation = corAR1(form = ~ t | Subject), method = m)
  cases[[length(cases) + 1]] <- record(paste0("orthodont_ri_ar1_", tolower(m)), "Orthodont.csv", integer(0),
                                       "distance ~ age * Sex + (1 | Subject) + Subject:ar1(age)", l, reml)
  gm <- gls(distance ~ age * Sex, o_missing, correlation = corAR1(form = ~ t | Subject), method = m)
  cases[[length(cases) + 1]] <- record(paste0("orthodont_ar1_gaps_", tolower(m)), "Orthodont.csv",
                                       c(2, 7, 15, 16, 40, 63, 90) - 1L,
                                       "distance ~ age * Sex + Subject:ar1(age)", gm, reml)
  gc <- gls(distance ~ age * Sex, o, correlation = corCompSymm(form = ~ 1 | Subject), method = m)
  cases[[length(cases) + 1]] <- record(paste0("orthodont_cs_", tolower(m)), "Orthodont.csv", integer(0),
                                       "distance ~ age * Sex + Subject:cs(age)", gc, reml)
  gcm <- gls(distance ~ age * Sex, o_missing, correlation = corCompSymm(form = ~ 1 | Subject), method = m)
  cases[[length(cases) + 1]] <- record(paste0("orthodont_cs_gaps_", tolower(m)), "Orthodont.csv",
                                       c(2, 7, 15, 16, 40, 63, 90) - 1L,
                                       "distance ~ age * Sex + Subject:cs(age)", gcm, reml)
  ls <- lme(Reaction ~ Days, random = ~ 1 | Subject, data = s,
            correlation = corAR1(form = ~ Days | Subject), method = m)
  cases[[length(cases) + 1]] <- record(paste0("sleepstudy_ri_ar1_", tolower(m)), "sleepstudy.csv", integer(0),
                                       "Reaction ~ Days + (1 | Subject) + Subject:ar1(Days)", ls, reml)
}
# Residual dimensions with their own variances and banded Toeplitz correlations (issue #3):
#   Subject:us(age)    = corSymm(form = ~ t | Subject) + varIdent(form = ~ 1 | age)
#   Subject:diag(age)  = varIdent(form = ~ 1 | age)
#   Subject:ma(age, 1) = corARMA(form = ~ t | Subject, q = 1): the same banded matrix while the lag-1
#                        correlation theta / (1 + theta^2) is inside (-0.5, 0.5), which it is here.
# `covariance` is getVarCov of subject M03 (complete in both data sets; ages 8, 10, 12, 14).
record_cov <- function(name, drop_rows, formula, fit, reml, rho = NULL) {
  list(name = name, data = "Orthodont.csv", drop_rows = I(drop_rows), formula = formula, REML = reml,
       loglik = as.numeric(logLik(fit)), nobs = nobs(fit), sigma = fit$sigma,
       covariance = if (is.null(fit$modelStruct$corStruct)) {
         ratio <- coef(fit$modelStruct$varStruct, unconstrained = FALSE, allCoef = TRUE)
         diag(fit$sigma^2 * ratio[c("8", "10", "12", "14")]^2)
       } else matrix(as.numeric(getVarCov(fit, individual = "M03")), 4, 4), rho = rho,
       fixef = as.list(coef(fit)), fixef_se = as.list(sqrt(diag(vcov(fit)))))
}
structured <- list()
for (reml in c(TRUE, FALSE)) {
  m <- if (reml) "REML" else "ML"
  tag <- tolower(m)
  g <- gls(distance ~ age * Sex, o, correlation = corSymm(form = ~ t1 | Subject),
           weights = varIdent(form = ~ 1 | age), method = m)
  structured[[length(structured) + 1]] <- record_cov(paste0("orthodont_us_", tag), integer(0),
                                                     "distance ~ age * Sex + Subject:us(age)", g, reml)
  gm <- gls(distance ~ age * Sex, o_missing, correlation = corSymm(form = ~ t1 | Subject),
            weights = varIdent(form = ~ 1 | age), method = m)
  structured[[length(structured) + 1]] <- record_cov(paste0("orthodont_us_gaps_", tag),
                                                     c(2, 7, 15, 16, 40, 63, 90) - 1L,
                                                     "distance ~ age * Sex + Subject:us(age)", gm, reml)
  gd <- gls(distance ~ age * Sex, o, weights = varIdent(form = ~ 1 | age), method = m)
  structured[[length(structured) + 1]] <- record_cov(paste0("orthodont_diag_", tag), integer(0),
                                                     "distance ~ age * Sex + Subject:diag(age)", gd, reml)
  ga <- gls(distance ~ age * Sex, o, correlation = corARMA(form = ~ t | Subject, q = 1), method = m)
  theta <- as.numeric(coef(ga$modelStruct$corStruct, unconstrained = FALSE))
  structured[[length(structured) + 1]] <- record_cov(paste0("orthodont_ma1_", tag), integer(0),
                                                     "distance ~ age * Sex + Subject:ma(age, 1)", ga, reml,
                                                     rho = theta / (1 + theta^2))
}
out <- list(versions = list(R = paste(R.version$major, R.version$minor, sep = "."),
                            nlme = as.character(packageVersion("nlme"))),
            note = "drop_rows are 0-based row positions removed from the CSV before fitting",
            cases = cases, structured_cases = structured)
write_json(out, "tests/golden/nlme.json", auto_unbox = TRUE, digits = NA, pretty = TRUE)
cat("wrote", length(cases), "cases\n")
