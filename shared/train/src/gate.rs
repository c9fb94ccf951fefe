//! The quality gate `recs train` applies before publishing (on by default;
//! `--no-gate` skips it). A candidate is refused when:
//!
//! 1. it has no users or no items (or no factors);
//! 2. any factor is NaN or infinite;
//! 3. with `--test`: its NDCG@k is below the popularity ranking's on that file;
//! 4. with `--test` and a servable `latest.txt` version: its NDCG@k is below that
//!    version's NDCG@k, evaluated now on the same file, by more than `margin`.
//!
//! Without `--test` only 1 and 2 can be checked, and the report says so. A latest
//! version that cannot be loaded is reported and not compared against (replacing a
//! broken model is the point of publishing).

use serde_json::{json, Value};

use super::eval::Evaluation;

/// One gate check.
#[derive(Debug, Clone, PartialEq)]
struct Check {
    /// Machine-readable name, e.g. `beats_popularity`.
    name: &'static str,
    passed: bool,
    /// The numbers behind the verdict.
    detail: String,
}

/// The gate's verdict.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateReport {
    /// The checks that ran, in order.
    checks: Vec<Check>,
    /// What was not checked or compared, and why (no `--test`, no latest version).
    pub notes: Vec<String>,
}

impl GateReport {
    /// True when every check that ran passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The failed checks' details, joined.
    pub fn reasons(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.detail.clone())
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "passed": self.passed(),
            "checks": self.checks.iter().map(|c| json!({
                "name": c.name, "passed": c.passed, "detail": c.detail,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }

    pub(crate) fn push(&mut self, name: &'static str, passed: bool, detail: String) {
        self.checks.push(Check {
            name,
            passed,
            detail,
        });
    }
}

/// Checks 1 and 2 on raw factors.
pub(crate) fn check_structure(
    users: usize,
    items: usize,
    factors: usize,
    user_factors: &[f32],
    item_factors: &[f32],
) -> GateReport {
    let mut report = GateReport::default();
    let empty = users == 0 || items == 0 || factors == 0;
    report.push(
        "non_empty",
        !empty,
        format!("model has {users} users, {items} items, {factors} factors"),
    );
    let bad = |v: &[f32]| recs_core::first_non_finite(v, factors);
    let finite = match (bad(user_factors), bad(item_factors)) {
        (None, None) => (true, "all factors are finite".to_string()),
        (Some((row, col, v)), _) => (false, format!("user factor row {row}, column {col} is {v}")),
        (None, Some((row, col, v))) => {
            (false, format!("item factor row {row}, column {col} is {v}"))
        }
    };
    report.push("finite", finite.0, finite.1);
    report
}

/// The incumbent, as the gate sees it.
pub(crate) enum Incumbent {
    /// The registry has no latest.txt (first version).
    None,
    /// latest.txt names a version that could not be loaded.
    Unloadable { version: String, error: String },
    /// The latest version, evaluated on the candidate's test file.
    Evaluated { version: String, eval: Evaluation },
}

/// Checks 3 and 4, appended to `report`.
pub(crate) fn check_quality(
    report: &mut GateReport,
    candidate: &Evaluation,
    incumbent: &Incumbent,
    margin: f64,
) {
    let k = candidate.k;
    let ndcg = candidate.model.ndcg;
    let pop = candidate.popularity.ndcg;
    report.push(
        "beats_popularity",
        ndcg >= pop,
        format!("NDCG@{k} {ndcg:.4} vs popularity {pop:.4}"),
    );
    match incumbent {
        Incumbent::None => report
            .notes
            .push("no latest version to compare with".into()),
        Incumbent::Unloadable { version, error } => report.notes.push(format!(
            "latest version {version} could not be loaded, so it is not compared: {error}"
        )),
        Incumbent::Evaluated { version, eval } => {
            let old = eval.model.ndcg;
            report.push(
                "not_worse_than_latest",
                ndcg >= old - margin,
                format!(
                    "NDCG@{k} {ndcg:.4} vs latest {version} {old:.4} on the same test file (margin {margin})"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Metrics;

    fn eval(ndcg: f64, pop: f64) -> Evaluation {
        Evaluation {
            k: 10,
            model: Metrics {
                ndcg,
                ..Metrics::default()
            },
            popularity: Metrics {
                ndcg: pop,
                ..Metrics::default()
            },
            eval_users: 1,
            fallback_users: 0,
            test_pairs: 1,
        }
    }

    #[test]
    fn refuses_empty_nonfinite_worse() {
        assert!(!check_structure(0, 5, 4, &[], &[0.0; 20]).passed());
        let r = check_structure(1, 1, 2, &[0.0, f32::NAN], &[0.0, 0.0]);
        assert!(
            !r.passed() && r.reasons().contains("row 0, column 1"),
            "{r:?}"
        );
        let mut r = check_structure(1, 1, 1, &[0.5], &[0.5]);
        assert!(r.passed());
        check_quality(&mut r, &eval(0.20, 0.15), &Incumbent::None, 0.01);
        assert!(r.passed());
        let mut worse = r.clone();
        let old = Incumbent::Evaluated {
            version: "v0.1".into(),
            eval: eval(0.25, 0.15),
        };
        check_quality(&mut worse, &eval(0.20, 0.15), &old, 0.01);
        assert!(!worse.passed() && worse.reasons().contains("latest v0.1"));
        let mut close = check_structure(1, 1, 1, &[0.5], &[0.5]);
        check_quality(&mut close, &eval(0.245, 0.15), &old, 0.01);
        assert!(close.passed());
        let mut below_pop = check_structure(1, 1, 1, &[0.5], &[0.5]);
        check_quality(&mut below_pop, &eval(0.10, 0.15), &Incumbent::None, 0.01);
        assert!(below_pop.reasons().contains("popularity"));
    }
}
