//! Spawning: a child agent never exceeds its parent.
//!
//! A parent may spawn while it is active, while it has fewer live children
//! than its persona's `max_children`, and while the child's depth stays within
//! the persona's `max_depth`. The child's roles and classifications must be
//! subsets of the parent's, and its expiry no later than the parent's.

use chrono::{DateTime, Utc};
use steward_types::{Agent, AgentState, ErrorCode};

use crate::Error;

/// Limits on spawning, from the parent's persona or the server's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpawnLimits {
    /// Live (not terminal) children one agent may have.
    pub max_children: u32,
    /// Deepest depth a descendant may have (a root agent is depth 0).
    pub max_depth: u32,
}

impl Default for SpawnLimits {
    fn default() -> Self {
        SpawnLimits {
            max_children: 10,
            max_depth: 3,
        }
    }
}

/// What a child asks for.
#[derive(Debug, Clone, Copy)]
pub struct ChildRequest<'a> {
    /// Its roles.
    pub roles: &'a [String],
    /// Its classifications.
    pub classifications: &'a [String],
    /// Its expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Check that `parent` may spawn `child`, given how many live children it
/// already has. Returns the child's depth.
pub fn check_spawn(
    parent: &Agent,
    limits: SpawnLimits,
    live_children: u64,
    child: ChildRequest<'_>,
) -> Result<u32, Error> {
    if parent.state != AgentState::Active {
        return Err(Error::new(
            ErrorCode::ParentNotActive,
            format!(
                "parent agent '{}' is {}; only an active agent can spawn children",
                parent.name,
                parent.state.as_str()
            ),
        )
        .with_details(serde_json::json!({ "parent": parent.id, "state": parent.state.as_str() })));
    }
    if live_children >= u64::from(limits.max_children) {
        return Err(Error::new(
            ErrorCode::SpawnLimitExceeded,
            format!(
                "parent agent '{}' already has {live_children} live children; its limit (max_children) is {}",
                parent.name, limits.max_children
            ),
        )
        .with_details(serde_json::json!({
            "limit": "max_children", "max_children": limits.max_children, "live_children": live_children,
        })));
    }
    let depth = parent.depth + 1;
    if depth > limits.max_depth {
        return Err(Error::new(
            ErrorCode::SpawnDepthExceeded,
            format!(
                "a child of '{}' would be at depth {depth}; the limit (max_depth) is {}",
                parent.name, limits.max_depth
            ),
        )
        .with_details(serde_json::json!({ "limit": "max_depth", "max_depth": limits.max_depth, "depth": depth })));
    }
    check_subset("roles", child.roles, &parent.roles, &parent.name)?;
    check_subset(
        "classifications",
        child.classifications,
        &parent.classifications,
        &parent.name,
    )?;
    if let Some(parent_expiry) = parent.expires_at {
        match child.expires_at {
            Some(e) if e <= parent_expiry => {}
            _ => {
                return Err(Error::new(
                    ErrorCode::ExceedsParent,
                    format!(
                        "expires_at: a child of '{}' must expire no later than its parent ({parent_expiry})",
                        parent.name
                    ),
                )
                .with_details(serde_json::json!({ "field": "expires_at", "parent_expires_at": parent_expiry })));
            }
        }
    }
    Ok(depth)
}

fn check_subset(
    field: &str,
    child: &[String],
    parent: &[String],
    parent_name: &str,
) -> Result<(), Error> {
    let extra: Vec<&String> = child.iter().filter(|c| !parent.contains(c)).collect();
    if extra.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::ExceedsParent,
        format!(
            "{field}: a child may not hold what its parent '{parent_name}' lacks: {}",
            extra
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .with_details(serde_json::json!({ "field": field, "not_held_by_parent": extra })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use steward_types::RiskTier;

    fn parent(roles: &[&str], classes: &[&str]) -> Agent {
        let now = Utc::now();
        Agent {
            id: "p".into(),
            name: "parent".into(),
            owner_id: "h".into(),
            team_id: None,
            purpose: String::new(),
            platform: String::new(),
            model: String::new(),
            persona_id: None,
            roles: roles.iter().map(|s| s.to_string()).collect(),
            classifications: classes.iter().map(|s| s.to_string()).collect(),
            labels: Default::default(),
            parent_id: None,
            depth: 0,
            expires_at: None,
            state: AgentState::Active,
            state_reason: None,
            risk_tier: RiskTier::Low,
            orphaned: false,
            created_at: now,
            updated_at: now,
            last_seen_at: None,
        }
    }

    fn req<'a>(roles: &'a [String], classes: &'a [String]) -> ChildRequest<'a> {
        ChildRequest {
            roles,
            classifications: classes,
            expires_at: None,
        }
    }

    #[test]
    fn limits_are_named() {
        let p = parent(&["a"], &["public"]);
        let none: Vec<String> = vec![];
        let lim = SpawnLimits {
            max_children: 2,
            max_depth: 1,
        };
        assert_eq!(check_spawn(&p, lim, 1, req(&none, &none)).unwrap(), 1);
        let e = check_spawn(&p, lim, 2, req(&none, &none)).unwrap_err();
        assert_eq!(e.code, ErrorCode::SpawnLimitExceeded);
        assert!(e.message.contains("max_children"));
        let mut deep = p.clone();
        deep.depth = 1;
        let e = check_spawn(&deep, lim, 0, req(&none, &none)).unwrap_err();
        assert_eq!(e.code, ErrorCode::SpawnDepthExceeded);
        let mut suspended = p.clone();
        suspended.state = AgentState::Suspended;
        let e = check_spawn(&suspended, lim, 0, req(&none, &none)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ParentNotActive);
    }

    #[test]
    fn child_expiry_within_parent() {
        let mut p = parent(&[], &[]);
        let t = Utc::now();
        p.expires_at = Some(t);
        let none: Vec<String> = vec![];
        let lim = SpawnLimits::default();
        let mut r = req(&none, &none);
        assert_eq!(
            check_spawn(&p, lim, 0, r).unwrap_err().code,
            ErrorCode::ExceedsParent
        );
        r.expires_at = Some(t + chrono::Duration::seconds(1));
        assert_eq!(
            check_spawn(&p, lim, 0, r).unwrap_err().code,
            ErrorCode::ExceedsParent
        );
        r.expires_at = Some(t);
        assert!(check_spawn(&p, lim, 0, r).is_ok());
    }

    proptest! {
        /// A child is accepted only if it holds nothing its parent lacks.
        #[test]
        fn child_never_exceeds_parent(
            parent_roles in proptest::collection::btree_set("[a-e]", 0..5),
            child_roles in proptest::collection::btree_set("[a-e]", 0..5),
            parent_classes in proptest::collection::btree_set("[p-t]", 0..5),
            child_classes in proptest::collection::btree_set("[p-t]", 0..5),
        ) {
            let pr: Vec<&str> = parent_roles.iter().map(String::as_str).collect();
            let pc: Vec<&str> = parent_classes.iter().map(String::as_str).collect();
            let p = parent(&pr, &pc);
            let cr: Vec<String> = child_roles.iter().cloned().collect();
            let cc: Vec<String> = child_classes.iter().cloned().collect();
            let ok = check_spawn(&p, SpawnLimits::default(), 0, req(&cr, &cc)).is_ok();
            prop_assert_eq!(ok, child_roles.is_subset(&parent_roles) && child_classes.is_subset(&parent_classes));
        }
    }
}
