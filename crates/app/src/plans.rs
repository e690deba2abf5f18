//! What each plan a tenant can be on (`free`, `team`, `enterprise`) entitles it to: a [`Tier`]
//! per plan, with its monthly quotas per meter and its meters' unit costs.
//!
//! The defaults are in code ([`Plans::default`], documented in docs/usage.md); the server's
//! configuration file replaces a tier's parts with its `[plans.free]`, `[plans.team]` and
//! `[plans.enterprise]` sections.

use std::collections::BTreeMap;

use custodian_domain::tenant::Plan;
pub use custodian_domain::usage::QuotaRule;
use serde::Deserialize;

/// What one plan entitles a tenant to. Every field is named and defaults when a configuration
/// section leaves it out, so a new entitlement is one more field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Monthly quotas by meter; a meter without one is unlimited.
    #[serde(default)]
    pub quotas: BTreeMap<String, QuotaRule>,
    /// The cost of one unit of a meter, in micro-units, unless the tenant set its own; a meter
    /// without one costs nothing.
    #[serde(default)]
    pub unit_costs: BTreeMap<String, u64>,
}

/// The tiers of every plan.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plans {
    /// The `free` plan's.
    #[serde(default = "free")]
    pub free: Tier,
    /// The `team` plan's.
    #[serde(default = "team")]
    pub team: Tier,
    /// The `enterprise` plan's.
    #[serde(default = "enterprise")]
    pub enterprise: Tier,
}

fn quotas(rules: &[(&str, u64, bool)]) -> BTreeMap<String, QuotaRule> {
    rules
        .iter()
        .map(|(meter, limit, hard)| {
            (
                (*meter).to_owned(),
                QuotaRule {
                    limit: *limit,
                    hard: *hard,
                },
            )
        })
        .collect()
}

fn free() -> Tier {
    Tier {
        quotas: quotas(&[("api_calls", 10_000, true), ("events", 100_000, true)]),
        ..Tier::default()
    }
}

fn team() -> Tier {
    Tier {
        quotas: quotas(&[
            ("api_calls", 1_000_000, true),
            ("events", 10_000_000, false),
        ]),
        ..Tier::default()
    }
}

fn enterprise() -> Tier {
    Tier {
        quotas: quotas(&[("api_calls", 100_000_000, false)]),
        ..Tier::default()
    }
}

impl Default for Plans {
    /// The built-in tiers: `free` 10,000 `api_calls` and 100,000 `events` a month, both hard;
    /// `team` 1,000,000 `api_calls` (hard) and 10,000,000 `events` (soft); `enterprise`
    /// 100,000,000 `api_calls` (soft). No meter has a unit cost.
    fn default() -> Self {
        Self {
            free: free(),
            team: team(),
            enterprise: enterprise(),
        }
    }
}

impl Plans {
    /// The tier of `plan`.
    pub fn tier(&self, plan: Plan) -> &Tier {
        match plan {
            Plan::Free => &self.free,
            Plan::Team => &self.team,
            Plan::Enterprise => &self.enterprise,
        }
    }

    /// Checks every meter name of every tier.
    pub fn check(&self) -> Result<(), String> {
        for (name, tier) in [
            ("free", &self.free),
            ("team", &self.team),
            ("enterprise", &self.enterprise),
        ] {
            for meter in tier.quotas.keys().chain(tier.unit_costs.keys()) {
                custodian_domain::usage::check_meter(meter)
                    .map_err(|e| format!("plans.{name}: {meter:?}: {e}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plan_has_a_tier_and_the_defaults_are_valid() {
        let plans = Plans::default();
        assert!(plans.check().is_ok());
        assert_eq!(plans.tier(Plan::Free).quotas["api_calls"].limit, 10_000);
        assert!(plans.tier(Plan::Free).quotas["api_calls"].hard);
        assert!(!plans.tier(Plan::Enterprise).quotas["api_calls"].hard);
    }
}
