# Golden values for the simulated data sets shipped in lmmformula/datasets (nlme).
# Run from the repository root:  Rscript tests/golden/generate_datasets.R
# Needs Debian packages r-base-core r-cran-nlme r-cran-jsonlite. Writes tests/golden/datasets.json.
# lmmformula's `subject:ar1(week)` puts week on the grid week / 2 (its smallest spacing), gaps kept:
# nlme's corAR1(form = ~ w | subject) with w = week / 2.
suppressMessages({library(nlme); library(jsonlite)})
g <- read.csv("lmmformula/datasets/data/growth.csv", stringsAsFactors = TRUE)
g$w <- g$week / 2
cases <- list()
for (reml in c(TRUE, FALSE)) {
  m <- if (reml) "REML" else "ML"
  fit <- lme(y ~ treatment * week, random = ~ week | subject, data = g,
             correlation = corAR1(form = ~ w | subject), method = m,
             control = lmeControl(msMaxIter = 500, tolerance = 1e-10, msTol = 1e-12))
  vc <- getVarCov(fit)
  cases[[length(cases) + 1]] <- list(
    name = paste0("growth_", tolower(m)), dataset = "growth", REML = reml,
    formula = "y ~ treatment * week + (week | subject) + subject:ar1(week)",
    loglik = as.numeric(logLik(fit)), sigma = fit$sigma,
    rho = as.numeric(coef(fit$modelStruct$corStruct, unconstrained = FALSE)),
    G = unname(matrix(as.numeric(vc), nrow(vc))), fixef = as.list(fixef(fit)), fixef_se = as.list(sqrt(diag(vcov(fit)))))
}
out <- list(versions = list(R = R.version.string, nlme = as.character(packageVersion("nlme"))), cases = cases)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/golden/datasets.json")
