//! Data classifications and the risk-tier rule.
//!
//! Each classification has a tier for reading it and a tier for writing it.
//! An agent's tier is the highest over its classifications, using the write
//! tier when any of its roles writes. Built in:
//!
//! | classification | read   | write  |
//! |----------------|--------|--------|
//! | public         | low    | low    |
//! | internal       | medium | medium |
//! | confidential   | medium | high   |
//! | pii            | high   | high   |
//! | financial      | high   | high   |
//!
//! An agent with no classification is low. Configuration may add more.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use steward_types::{ErrorCode, RiskTier};

use crate::Error;

/// Tiers for touching one classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassificationTiers {
    /// Tier when the agent only reads.
    pub read: RiskTier,
    /// Tier when any of the agent's roles writes.
    pub write: RiskTier,
}

/// The classifications a deployment knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassificationCatalog {
    tiers: BTreeMap<String, ClassificationTiers>,
}

impl Default for ClassificationCatalog {
    fn default() -> Self {
        use RiskTier::*;
        let builtin = [
            ("public", Low, Low),
            ("internal", Medium, Medium),
            ("confidential", Medium, High),
            ("pii", High, High),
            ("financial", High, High),
        ];
        ClassificationCatalog {
            tiers: builtin
                .into_iter()
                .map(|(n, read, write)| (n.to_string(), ClassificationTiers { read, write }))
                .collect(),
        }
    }
}

impl ClassificationCatalog {
    /// Add or replace a classification (from configuration).
    pub fn insert(&mut self, name: &str, tiers: ClassificationTiers) {
        self.tiers.insert(name.to_string(), tiers);
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tiers.keys().map(String::as_str)
    }

    /// Check that every name is known; the error lists the known ones.
    pub fn validate(&self, field: &str, names: &[String]) -> Result<(), Error> {
        if let Some(unknown) = names.iter().find(|n| !self.tiers.contains_key(n.as_str())) {
            let known: Vec<&str> = self.names().collect();
            return Err(Error::new(
                ErrorCode::UnknownReference,
                format!(
                    "{field}: unknown data classification '{unknown}' (known: {})",
                    known.join(", ")
                ),
            )
            .with_details(serde_json::json!({ "field": field, "known": known })));
        }
        Ok(())
    }

    /// The risk tier of an agent that may touch `classifications`, writing
    /// when `writes` is true. Unknown names count as high (fail safe).
    pub fn risk_tier(&self, classifications: &[String], writes: bool) -> RiskTier {
        classifications
            .iter()
            .map(|c| match self.tiers.get(c) {
                Some(t) if writes => t.write,
                Some(t) => t.read,
                None => RiskTier::High,
            })
            .max()
            .unwrap_or(RiskTier::Low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn documented_examples() {
        let c = ClassificationCatalog::default();
        assert_eq!(c.risk_tier(&[], true), RiskTier::Low);
        assert_eq!(c.risk_tier(&v(&["public"]), true), RiskTier::Low);
        assert_eq!(c.risk_tier(&v(&["internal"]), false), RiskTier::Medium);
        assert_eq!(c.risk_tier(&v(&["confidential"]), false), RiskTier::Medium);
        assert_eq!(c.risk_tier(&v(&["confidential"]), true), RiskTier::High);
        assert_eq!(c.risk_tier(&v(&["public", "pii"]), false), RiskTier::High);
        assert_eq!(c.risk_tier(&v(&["financial"]), false), RiskTier::High);
    }

    #[test]
    fn unknown_classification_is_refused_with_the_known_list() {
        let c = ClassificationCatalog::default();
        let err = c.validate("classifications", &v(&["secret"])).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownReference);
        assert!(err.message.contains("secret") && err.message.contains("pii"));
    }

    proptest! {
        /// Adding a classification or a write role never lowers the tier.
        #[test]
        fn tier_is_monotonic(mut names in proptest::collection::vec(
            prop::sample::select(vec!["public", "internal", "confidential", "pii", "financial"]), 0..5),
            extra in prop::sample::select(vec!["public", "internal", "confidential", "pii", "financial"]),
            writes in any::<bool>())
        {
            let c = ClassificationCatalog::default();
            let before: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let tier = c.risk_tier(&before, writes);
            prop_assert!(c.risk_tier(&before, true) >= tier);
            names.push(extra);
            let after: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            prop_assert!(c.risk_tier(&after, writes) >= tier);
        }
    }
}
