//! The mass-clear guard's verdict on a plan, as `plan --json` (`"guard"`), `plan --markdown` and
//! `plan`'s exit code report it (SPEC section 12). Pure.

use serde::Serialize;

use crate::plan::{Guard, Plan};

/// What the guard says about a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The plan clears no more than the guard allows.
    Passes,
    /// The plan clears more than the guard allows: `apply` would refuse it (exit 3, nothing
    /// sent).
    Refuses,
    /// The plan clears more than the guard allows, and `--allow-mass-clear` lets it through (a
    /// saved plan records it).
    Overridden,
}

/// The guard's verdict with the numbers behind it: the `"guard"` object of `plan --json`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GuardReport {
    /// Whether `apply` would refuse this plan: the guard trips and nothing overrides it.
    pub refuses: bool,
    /// Marks the plan clears.
    pub clears: usize,
    /// Marks the state manages (the denominator).
    pub managed: usize,
    /// The configured `guard.max_clear_fraction`.
    pub max_clear_fraction: f64,
    /// The configured `guard.min_clears`.
    pub min_clears: u64,
    /// Whether the guard trips and `--allow-mass-clear` overrides it.
    pub overridden: bool,
    /// `passes`, `refuses` or `overridden`: the two flags above in one word.
    pub verdict: Verdict,
}

impl GuardReport {
    /// The verdict of `guard` on `plan`, with `allow_mass_clear` the reviewed override.
    pub fn of(plan: &Plan, guard: &Guard, allow_mass_clear: bool) -> Self {
        let verdict = match (plan.check_guard(guard).is_err(), allow_mass_clear) {
            (false, _) => Verdict::Passes,
            (true, false) => Verdict::Refuses,
            (true, true) => Verdict::Overridden,
        };
        GuardReport {
            refuses: verdict == Verdict::Refuses,
            clears: plan.summary.clear,
            managed: plan.managed,
            max_clear_fraction: guard.max_clear_fraction,
            min_clears: guard.min_clears,
            overridden: verdict == Verdict::Overridden,
            verdict,
        }
    }

    /// `clears 12 of 20 managed marks (the guard refuses more than 10 and more than 25%)`.
    pub fn numbers(&self) -> String {
        format!(
            "clears {} of {} managed {} (the guard refuses more than {} and more than {:.0}%)",
            self.clears,
            self.managed,
            super::plural(self.managed, "mark", "marks"),
            self.min_clears,
            self.max_clear_fraction * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Summary;

    fn plan(clear: usize, managed: usize) -> Plan {
        Plan {
            summary: Summary {
                clear,
                ..Summary::default()
            },
            managed,
            ..Plan::default()
        }
    }

    #[test]
    fn the_verdict_is_the_guard_rule_and_the_override() {
        let guard = Guard::default();
        let small = GuardReport::of(&plan(1, 100), &guard, false);
        assert_eq!(small.verdict, Verdict::Passes);
        assert!(!small.refuses && !small.overridden);
        // The override of a plan the guard passes is no override.
        assert_eq!(
            GuardReport::of(&plan(1, 100), &guard, true).verdict,
            Verdict::Passes
        );
        let mass = GuardReport::of(&plan(30, 40), &guard, false);
        assert_eq!(mass.verdict, Verdict::Refuses);
        assert!(mass.refuses && !mass.overridden);
        let overridden = GuardReport::of(&plan(30, 40), &guard, true);
        assert_eq!(overridden.verdict, Verdict::Overridden);
        assert!(!overridden.refuses && overridden.overridden);
        assert_eq!(
            serde_json::to_value(mass).unwrap(),
            serde_json::json!({"refuses": true, "clears": 30, "managed": 40,
                "max_clear_fraction": 0.25, "min_clears": 10, "overridden": false,
                "verdict": "refuses"})
        );
        assert_eq!(
            mass.numbers(),
            "clears 30 of 40 managed marks (the guard refuses more than 10 and more than 25%)"
        );
    }
}
