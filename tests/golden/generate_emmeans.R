# Golden values for predicted (marginal) means: emmeans on lmer fits (lmerTest/pbkrtest for the df).
#
# Run from the repository root:  Rscript tests/golden/generate_emmeans.R
# Needs (Debian): r-base-core r-cran-lme4 r-cran-lmertest r-cran-pbkrtest r-cran-emmeans r-cran-jsonlite
# Data: the CSVs of tests/data (categorical columns factor()ed with sorted levels, as the lme4 generator does)
# and agridat's gilmour.slatehall from ../shared/data/agridat (AGRIDAT_DIR overrides).
#
# Output tests/golden/emmeans.json: versions, and per case: name, data, formula, specs, drop (rows removed,
# 1-based, before fitting), and for ddf in {kenward_roger, satterthwaite}:
#   means: level, emmean, SE, df     (emmeans(fit, specs, lmer.df = ddf); covariates at their mean)
#   pairs: contrast, estimate, SE, df, t, p   (pairs(emm, adjust = "none"))
suppressMessages({library(lme4); library(lmerTest); library(emmeans); library(jsonlite)})
emm_options(lmerTest.limit = 1e6, pbkrtest.limit = 1e6)

data_dir <- "tests/data"
agridat_dir <- Sys.getenv("AGRIDAT_DIR", "../shared/data/agridat")
factors <- list(Oats = c("Block", "Variety"), cake = c("replicate", "recipe", "temperature"),
                Orthodont = c("Subject", "Sex"), ChickWeight = c("Chick", "Diet"))
read_data <- function(name) {
  if (name == "slatehall") {
    d <- read.delim(file.path(agridat_dir, "gilmour.slatehall.txt"), stringsAsFactors = FALSE)
    for (f in c("gen", "rep")) d[[f]] <- factor(d[[f]])
    return(d)
  }
  d <- read.csv(file.path(data_dir, paste0(name, ".csv")), stringsAsFactors = FALSE)
  for (f in factors[[name]]) d[[f]] <- factor(d[[f]])
  d
}

cases <- list(
  list("oats_variety", "yield ~ Variety * nitro + (1 | Block/Variety)", "Oats", "Variety", integer()),
  list("oats_factor_nitro_missing", "yield ~ Variety + factor(nitro) + (1 | Block/Variety)", "Oats", "Variety",
       c(3L, 17L, 40L, 41L, 66L)),
  list("cake_recipe", "angle ~ recipe * temperature + (1 | recipe:replicate)", "cake", "recipe", integer()),
  list("cake_temperature", "angle ~ recipe * temperature + (1 | recipe:replicate)", "cake", "temperature",
       integer()),
  list("orthodont_sex", "distance ~ age * Sex + (age | Subject)", "Orthodont", "Sex", integer()),
  list("chick_diet", "weight ~ Time * Diet + (Time | Chick)", "ChickWeight", "Diet", integer()),
  list("slatehall_gen", "yield ~ gen + (1 | rep) + (1 | rep:row) + (1 | rep:col)", "slatehall", "gen", integer())
)

one <- function(fit, specs, ddf) {
  emm <- emmeans(fit, specs, lmer.df = ddf)
  s <- as.data.frame(summary(emm))
  pr <- as.data.frame(summary(pairs(emm, adjust = "none")))
  list(means = data.frame(level = as.character(s[[specs]]), emmean = s$emmean, SE = s$SE, df = s$df),
       pairs = data.frame(contrast = as.character(pr$contrast), estimate = pr$estimate, SE = pr$SE,
                          df = pr$df, t = pr$t.ratio, p = pr$p.value))
}

out <- lapply(cases, function(cs) {
  d <- read_data(cs[[3]])
  if (length(cs[[5]])) d <- d[-cs[[5]], ]
  fit <- lmer(as.formula(cs[[2]]), d, REML = TRUE)
  list(name = cs[[1]], data = if (cs[[3]] == "slatehall") "slatehall" else paste0(cs[[3]], ".csv"),
       formula = cs[[2]], specs = cs[[4]], drop = I(cs[[5]]), loglik = as.numeric(logLik(fit)),
       kenward_roger = one(fit, cs[[4]], "kenward-roger"), satterthwaite = one(fit, cs[[4]], "satterthwaite"))
})
versions <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                 lmerTest = as.character(packageVersion("lmerTest")),
                 pbkrtest = as.character(packageVersion("pbkrtest")),
                 emmeans = as.character(packageVersion("emmeans")))
writeLines(toJSON(list(versions = versions, cases = out), digits = NA, auto_unbox = TRUE, dataframe = "rows"),
           "tests/golden/emmeans.json")
