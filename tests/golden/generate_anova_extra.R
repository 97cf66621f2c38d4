# Golden type III anova tables (lmerTest, Satterthwaite and Kenward-Roger) for cases beyond generate_lme4.R: a
# single-term model (lmerTest's type I basis there), an unbalanced split plot, factors entering only through
# interactions, and a model without an intercept.
#
# Run from the repository root:  Rscript tests/golden/generate_anova_extra.R
# Needs (Debian): r-base-core r-cran-lme4 r-cran-lmertest r-cran-pbkrtest r-cran-jsonlite
# Output tests/golden/anova_extra.json: versions, and per case: name, data, drop (1-based rows removed),
# formula, loglik, satterthwaite and kenward_roger tables (term, NumDF, DenDF, F).
suppressMessages({library(lmerTest); library(jsonlite)})
read_data <- function(name, factors) {
  d <- read.csv(file.path("tests/data", paste0(name, ".csv")), stringsAsFactors = FALSE)
  for (f in factors) d[[f]] <- factor(d[[f]])
  d
}
table_of <- function(a) data.frame(term = rownames(a), NumDF = a$NumDF, DenDF = a$DenDF, F = a[["F value"]])
cases <- list(
  list("chick_single_term", "ChickWeight", c("Chick", "Diet"), integer(), "weight ~ Diet + (1 | Chick)"),
  list("oats_unbalanced_factorial", "Oats", c("Block", "Variety"), c(2L, 9L, 33L, 34L, 50L, 71L),
       "yield ~ Variety * factor(nitro) + (1 | Block/Variety)"),
  # a factor entering only through an interaction, and no intercept: lmerTest's containment follows R's coding
  list("oats_factor_in_interaction_only", "Oats", c("Block", "Variety"), c(2L, 9L, 33L),
       "yield ~ factor(nitro) + Variety:factor(nitro) + (1 | Block/Variety)"),
  list("oats_covariate_interaction_only", "Oats", c("Block", "Variety"), c(2L, 9L, 33L),
       "yield ~ nitro + Variety:nitro + (1 | Block/Variety)"),
  list("oats_no_intercept", "Oats", c("Block", "Variety"), c(2L, 9L, 33L),
       "yield ~ 0 + Variety + factor(nitro) + (1 | Block/Variety)")
)
out <- lapply(cases, function(cs) {
  d <- read_data(cs[[2]], cs[[3]])
  if (length(cs[[4]])) d <- d[-cs[[4]], ]
  ctrl <- lmerControl(optimizer = "Nelder_Mead", optCtrl = list(FtolAbs = 1e-12, FtolRel = 1e-14, maxfun = 1e5))
  m <- lmer(as.formula(cs[[5]]), d, REML = TRUE, control = ctrl)
  list(name = cs[[1]], data = paste0(cs[[2]], ".csv"), drop = I(cs[[4]]), formula = cs[[5]],
       loglik = as.numeric(logLik(m)), satterthwaite = table_of(anova(m, type = 3)),
       kenward_roger = table_of(anova(m, type = 3, ddf = "Kenward-Roger")))
})
versions <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                 lmerTest = as.character(packageVersion("lmerTest")),
                 pbkrtest = as.character(packageVersion("pbkrtest")))
writeLines(toJSON(list(versions = versions, cases = out), digits = NA, auto_unbox = TRUE, dataframe = "rows"),
           "tests/golden/anova_extra.json")
