# Golden values for structured covariances among the columns of a random term (G-side), from glmmTMB and nlme.
# Run from the repository root:  Rscript tests/golden/generate_gside.R
# Needs Debian packages r-base-core r-cran-glmmtmb r-cran-nlme r-cran-jsonlite. Writes tests/golden/gside.json.
#
# lmmformula's ar1(0 + factor(t) | s) is glmmTMB's ar1(0 + factor(t) | s) (one variance, rho^|i-j| over the
# columns in level order).  glmmTMB's cs is heterogeneous, so the homogeneous cs(0 + Variety | Block) is
# checked against nlme's lme(random = list(Block = pdCompSymm(~ 0 + Variety))).
suppressMessages({library(glmmTMB); library(nlme); library(jsonlite)})
versions <- list(R = R.version.string, glmmTMB = as.character(packageVersion("glmmTMB")),
                 nlme = as.character(packageVersion("nlme")),
                 TMB = as.character(packageVersion("TMB")))
sim <- read.csv("tests/data/ar1_gside.csv"); sim$s <- factor(sim$s)
sleep <- read.csv("tests/data/sleepstudy.csv"); sleep$Subject <- factor(sleep$Subject)
ortho <- read.csv("tests/data/Orthodont.csv", stringsAsFactors = TRUE)
oats <- read.csv("tests/data/Oats.csv", stringsAsFactors = TRUE)

tmb_case <- function(name, data_name, formula_r, formula_ours, data, reml) {
  fit <- glmmTMB(as.formula(formula_r), data = data, REML = reml,
                 control = glmmTMBControl(optCtrl = list(iter.max = 1e4, eval.max = 1e4)))
  vc <- VarCorr(fit)$cond[[1]]
  list(name = name, data = data_name, formula = formula_ours, REML = reml, software = "glmmTMB",
       loglik = as.numeric(logLik(fit)), fixef = as.list(fixef(fit)$cond),
       fixef_se = as.list(sqrt(diag(vcov(fit)$cond))),
       variance = as.numeric(attr(vc, "stddev")[1]^2), rho = as.numeric(attr(vc, "correlation")[1, 2]),
       residual_variance = sigma(fit)^2, converged = fit$fit$convergence == 0)
}
cases <- list()
for (reml in c(TRUE, FALSE)) {
  tag <- if (reml) "reml" else "ml"
  cases[[length(cases) + 1]] <- tmb_case(paste0("sim_ar1_", tag), "ar1_gside.csv",
    "y ~ t + ar1(0 + factor(t) | s)", "y ~ t + ar1(0 + factor(t) | s)", sim, reml)
  # sleepstudy: glmmTMB's REML fit stops on the boundary (residual variance ~1e-4) 2.5 log-likelihood units below
  # the interior optimum; its ML fit does not converge (logLik NA), so only REML is recorded (a "hard" case).
  if (reml) cases[[length(cases) + 1]] <- tmb_case("sleepstudy_ar1_reml", "sleepstudy.csv",
    "Reaction ~ Days + ar1(0 + factor(Days) | Subject)", "Reaction ~ Days + ar1(0 + factor(Days) | Subject)",
    sleep, reml)
  cases[[length(cases) + 1]] <- tmb_case(paste0("orthodont_ar1_", tag), "Orthodont.csv",
    "distance ~ age * Sex + ar1(0 + factor(age) | Subject)",
    "distance ~ age * Sex + ar1(0 + factor(age) | Subject)", ortho, reml)
  fit <- lme(yield ~ nitro, random = list(Block = pdCompSymm(~ 0 + Variety)), data = oats,
             method = if (reml) "REML" else "ML")
  vc <- as.matrix(fit$modelStruct$reStruct$Block) * fit$sigma^2
  cases[[length(cases) + 1]] <- list(
    name = paste0("oats_cs_", tag), data = "Oats.csv", formula = "yield ~ nitro + cs(0 + Variety | Block)",
    REML = reml, software = "nlme", loglik = as.numeric(logLik(fit)), fixef = as.list(fixef(fit)),
    fixef_se = as.list(sqrt(diag(vcov(fit)))), variance = vc[1, 1], rho = vc[1, 2] / vc[1, 1],
    residual_variance = fit$sigma^2, converged = TRUE)
}
write_json(list(versions = versions, cases = cases), "tests/golden/gside.json", auto_unbox = TRUE,
           digits = NA, pretty = TRUE)
