//! Spawning: a child agent never exceeds its parent, nor any agent above it.
//!
//! A parent may spawn while it and every agent above it are active. The
//! limits are the tightest along the chain: the parent may have fewer live
//! children than the smallest `max_children` of its persona and its
//! ancestors' personas, and the child's depth stays within the smallest
//! `max_depth` among them. The child's roles and classifications must be
//! subsets of every one of those agents', and its expiry no later than any
//! of theirs. The same holds at every later change of a child's roles,
//! classifications or expiry ([`check_within`]); and when an agent loses a
//! role or a classification, the agents below it lose it too
//! ([`narrow_below`]). Widening never cascades.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use steward_types::{Agent, AgentState, ErrorCode};

use crate::Error;

/// Limits on spawning, from an agent's persona or the server's defaults.
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

/// One agent of the chain a child is spawned under, with the limits its
/// persona (or the server's default) sets.
#[derive(Debug, Clone, Copy)]
pub struct Ancestor<'a> {
    /// The agent.
    pub agent: &'a Agent,
    /// Its spawn limits.
    pub limits: SpawnLimits,
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

/// Check that the parent, `chain[0]`, may spawn `child`, given how many
/// live children the parent already has. `chain` is the parent, then each
/// agent above it up to the root. Returns the child's depth.
pub fn check_spawn(
    chain: &[Ancestor<'_>],
    live_children: u64,
    child: ChildRequest<'_>,
) -> Result<u32, Error> {
    let Some(parent) = chain.first().map(|a| a.agent) else {
        return Err(Error::internal("a spawn without a parent"));
    };
    if let Some((i, stopped)) = chain
        .iter()
        .enumerate()
        .find(|(_, a)| a.agent.state != AgentState::Active)
    {
        let stopped = stopped.agent;
        let message = if i == 0 {
            format!(
                "parent agent '{}' is {}; only an active agent can spawn children",
                stopped.name,
                stopped.state.as_str()
            )
        } else {
            format!(
                "agent '{}' above the parent '{}' is {}; an agent spawns only while every agent above it is active",
                stopped.name,
                parent.name,
                stopped.state.as_str()
            )
        };
        return Err(Error::new(ErrorCode::ParentNotActive, message).with_details(
            serde_json::json!({ "parent": parent.id, "agent": stopped.id, "state": stopped.state.as_str() }),
        ));
    }
    // The tightest limit along the chain, and whose it is (the nearest on a tie).
    let tightest = |limit: fn(&SpawnLimits) -> u32| {
        chain
            .iter()
            .enumerate()
            .min_by_key(|(i, a)| (limit(&a.limits), *i))
            .map(|(i, a)| (limit(&a.limits), i, a.agent))
    };
    let over_children =
        tightest(|l| l.max_children).filter(|(max, ..)| live_children >= u64::from(*max));
    if let Some((max_children, i, whose)) = over_children {
        return Err(Error::new(
            ErrorCode::SpawnLimitExceeded,
            format!(
                "parent agent '{}' already has {live_children} live children; its limit (max_children) is {max_children}{}",
                parent.name,
                set_by(i, whose)
            ),
        )
        .with_details(serde_json::json!({
            "limit": "max_children", "max_children": max_children, "live_children": live_children,
            "set_by": whose.id,
        })));
    }
    let depth = parent.depth + 1;
    if let Some((max_depth, i, whose)) = tightest(|l| l.max_depth).filter(|(max, ..)| depth > *max)
    {
        return Err(Error::new(
            ErrorCode::SpawnDepthExceeded,
            format!(
                "a child of '{}' would be at depth {depth}; the limit (max_depth) is {max_depth}{}",
                parent.name,
                set_by(i, whose)
            ),
        )
        .with_details(serde_json::json!({
            "limit": "max_depth", "max_depth": max_depth, "depth": depth, "set_by": whose.id,
        })));
    }
    let agents: Vec<&Agent> = chain.iter().map(|a| a.agent).collect();
    check_within(&agents, child)?;
    Ok(depth)
}

/// Where a limit comes from, when not from the parent itself.
fn set_by(i: usize, whose: &Agent) -> String {
    if i == 0 {
        String::new()
    } else {
        format!(", set by '{}' above it", whose.name)
    }
}

/// Check that a child holding `child` stays within every agent of `chain`
/// (its parent, then each agent above it up to the root): no role or
/// classification one of them lacks, no expiry later than one of theirs.
/// Spawning checks this, and so does every later change of a child's
/// roles, classifications or expiry.
pub fn check_within(chain: &[&Agent], child: ChildRequest<'_>) -> Result<(), Error> {
    check_grants_within(chain, child.roles, child.classifications)?;
    check_expiry_within(chain, child.expires_at)
}

/// The roles and classifications half of [`check_within`].
pub fn check_grants_within(
    chain: &[&Agent],
    roles: &[String],
    classifications: &[String],
) -> Result<(), Error> {
    for (i, above) in chain.iter().enumerate() {
        check_subset("roles", roles, &above.roles, i, above)?;
        check_subset(
            "classifications",
            classifications,
            &above.classifications,
            i,
            above,
        )?;
    }
    Ok(())
}

/// The expiry half of [`check_within`]: a child expires no later than any
/// agent above it (one without an expiry does not bound it).
pub fn check_expiry_within(
    chain: &[&Agent],
    expires_at: Option<DateTime<Utc>>,
) -> Result<(), Error> {
    for (i, above) in chain.iter().enumerate() {
        let Some(limit) = above.expires_at else {
            continue;
        };
        if expires_at.is_some_and(|e| e <= limit) {
            continue;
        }
        let whose = if i == 0 {
            "its parent"
        } else {
            "an agent above it"
        };
        return Err(Error::new(
            ErrorCode::ExceedsParent,
            format!(
                "expires_at: a child must expire no later than {whose}, '{}' ({limit})",
                above.name
            ),
        )
        .with_details(serde_json::json!({
            "field": "expires_at", "agent": above.id, "parent_expires_at": limit,
        })));
    }
    Ok(())
}

fn check_subset(
    field: &str,
    child: &[String],
    held: &[String],
    i: usize,
    above: &Agent,
) -> Result<(), Error> {
    let extra: Vec<&String> = child.iter().filter(|c| !held.contains(c)).collect();
    if extra.is_empty() {
        return Ok(());
    }
    let whose = if i == 0 {
        "its parent"
    } else {
        "an agent above it"
    };
    Err(Error::new(
        ErrorCode::ExceedsParent,
        format!(
            "{field}: a child may not hold what {whose}, '{}', lacks: {}",
            above.name,
            extra
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .with_details(
        serde_json::json!({ "field": field, "agent": above.id, "not_held_by_parent": extra }),
    ))
}

/// A live agent below a narrowed one, and what it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Narrowed {
    /// Its position in the `below` given to [`narrow_below`].
    pub index: usize,
    /// The roles it keeps.
    pub roles: Vec<String>,
    /// The classifications it keeps.
    pub classifications: Vec<String>,
    /// The roles it loses.
    pub lost_roles: Vec<String>,
    /// The classifications it loses.
    pub lost_classifications: Vec<String>,
}

/// After `agent` changed, what each live agent below it must lose so that
/// none holds a role or classification that `agent`, an agent above it
/// (`above`, in any order), or an agent between them lacks. `below` is
/// every descendant of `agent`, each after its parent (shallowest first).
/// Only agents that lose something are returned; nothing is ever added.
pub fn narrow_below(agent: &Agent, above: &[Agent], below: &[Agent]) -> Vec<Narrowed> {
    let within = |held: &[String], allowed: &[String]| -> Vec<String> {
        held.iter()
            .filter(|h| allowed.contains(h))
            .cloned()
            .collect()
    };
    let mut roles = agent.roles.clone();
    let mut classifications = agent.classifications.clone();
    for a in above {
        roles = within(&roles, &a.roles);
        classifications = within(&classifications, &a.classifications);
    }
    // What each agent of the subtree may hold: what it holds within what
    // its parent may.
    let mut allowed: HashMap<&str, (Vec<String>, Vec<String>)> = HashMap::new();
    allowed.insert(agent.id.as_str(), (roles, classifications));
    let mut out = Vec::new();
    for (index, d) in below.iter().enumerate() {
        let Some((parent_roles, parent_classifications)) =
            d.parent_id.as_deref().and_then(|p| allowed.get(p))
        else {
            continue;
        };
        let roles = within(&d.roles, parent_roles);
        let classifications = within(&d.classifications, parent_classifications);
        if !d.state.is_terminal()
            && (roles.len() != d.roles.len() || classifications.len() != d.classifications.len())
        {
            out.push(Narrowed {
                index,
                lost_roles: d
                    .roles
                    .iter()
                    .filter(|r| !roles.contains(r))
                    .cloned()
                    .collect(),
                lost_classifications: d
                    .classifications
                    .iter()
                    .filter(|c| !classifications.contains(c))
                    .cloned()
                    .collect(),
                roles: roles.clone(),
                classifications: classifications.clone(),
            });
        }
        allowed.insert(d.id.as_str(), (roles, classifications));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use steward_types::RiskTier;

    fn agent(id: &str, roles: &[&str], classes: &[&str]) -> Agent {
        let now = Utc::now();
        Agent {
            id: id.into(),
            name: id.into(),
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

    fn names(set: &std::collections::BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    fn parent(roles: &[&str], classes: &[&str]) -> Agent {
        agent("parent", roles, classes)
    }

    /// `child` placed below `parent`.
    fn under(parent: &Agent, mut child: Agent) -> Agent {
        child.parent_id = Some(parent.id.clone());
        child.depth = parent.depth + 1;
        child
    }

    fn req<'a>(roles: &'a [String], classes: &'a [String]) -> ChildRequest<'a> {
        ChildRequest {
            roles,
            classifications: classes,
            expires_at: None,
        }
    }

    fn alone(p: &Agent, limits: SpawnLimits) -> [Ancestor<'_>; 1] {
        [Ancestor { agent: p, limits }]
    }

    #[test]
    fn limits_are_named() {
        let p = parent(&["a"], &["public"]);
        let none: Vec<String> = vec![];
        let lim = SpawnLimits {
            max_children: 2,
            max_depth: 1,
        };
        assert_eq!(
            check_spawn(&alone(&p, lim), 1, req(&none, &none)).unwrap(),
            1
        );
        let e = check_spawn(&alone(&p, lim), 2, req(&none, &none)).unwrap_err();
        assert_eq!(e.code, ErrorCode::SpawnLimitExceeded);
        assert!(e.message.contains("max_children"));
        let mut deep = p.clone();
        deep.depth = 1;
        let e = check_spawn(&alone(&deep, lim), 0, req(&none, &none)).unwrap_err();
        assert_eq!(e.code, ErrorCode::SpawnDepthExceeded);
        let mut suspended = p.clone();
        suspended.state = AgentState::Suspended;
        let e = check_spawn(&alone(&suspended, lim), 0, req(&none, &none)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ParentNotActive);
        assert!(check_spawn(&[], 0, req(&none, &none)).is_err());
    }

    #[test]
    fn child_expiry_within_parent() {
        let mut p = parent(&[], &[]);
        let t = Utc::now();
        p.expires_at = Some(t);
        let none: Vec<String> = vec![];
        let lim = alone(&p, SpawnLimits::default());
        let mut r = req(&none, &none);
        assert_eq!(
            check_spawn(&lim, 0, r).unwrap_err().code,
            ErrorCode::ExceedsParent
        );
        r.expires_at = Some(t + chrono::Duration::seconds(1));
        assert_eq!(
            check_spawn(&lim, 0, r).unwrap_err().code,
            ErrorCode::ExceedsParent
        );
        r.expires_at = Some(t);
        assert!(check_spawn(&lim, 0, r).is_ok());
    }

    /// Every agent above the parent bounds the child too: its state, its
    /// persona's limits, its roles, classifications and expiry.
    #[test]
    fn every_agent_above_bounds_the_child() {
        let t = Utc::now();
        let mut root = agent("root", &["a"], &["public"]);
        root.expires_at = Some(t);
        let mut p = under(&root, agent("p", &["a", "b"], &["public", "pii"]));
        p.expires_at = None;
        let loose = SpawnLimits {
            max_children: 10,
            max_depth: 10,
        };
        let tight = SpawnLimits {
            max_children: 1,
            max_depth: 1,
        };
        let chain = [
            Ancestor {
                agent: &p,
                limits: loose,
            },
            Ancestor {
                agent: &root,
                limits: tight,
            },
        ];
        let a = vec!["a".to_string()];
        let public = vec!["public".to_string()];
        let ok = ChildRequest {
            roles: &a,
            classifications: &public,
            expires_at: Some(t),
        };
        // Depth 2 is past the root's max_depth of 1, whatever the parent's.
        let e = check_spawn(&chain, 0, ok).unwrap_err();
        assert_eq!(e.code, ErrorCode::SpawnDepthExceeded);
        assert!(e.message.contains("'root'"), "{}", e.message);
        let tight = SpawnLimits {
            max_children: 1,
            max_depth: 2,
        };
        let chain = [
            chain[0],
            Ancestor {
                agent: &root,
                limits: tight,
            },
        ];
        assert_eq!(check_spawn(&chain, 0, ok).unwrap(), 2);
        let e = check_spawn(&chain, 1, ok).unwrap_err();
        assert_eq!(e.code, ErrorCode::SpawnLimitExceeded);
        assert!(e.message.contains("'root'"), "{}", e.message);
        // The parent holds `b` and `pii`, the root does not.
        let b = vec!["b".to_string()];
        let e = check_spawn(&chain, 0, ChildRequest { roles: &b, ..ok }).unwrap_err();
        assert_eq!(e.code, ErrorCode::ExceedsParent);
        assert!(e.message.contains("'root'"), "{}", e.message);
        let pii = vec!["pii".to_string()];
        let e = check_spawn(
            &chain,
            0,
            ChildRequest {
                classifications: &pii,
                ..ok
            },
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::ExceedsParent);
        // The parent has no expiry; the root does.
        let e = check_spawn(
            &chain,
            0,
            ChildRequest {
                expires_at: None,
                ..ok
            },
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::ExceedsParent);
        assert!(e.message.contains("'root'"), "{}", e.message);
        // A suspended root stops its whole tree from spawning.
        let mut stopped = root.clone();
        stopped.state = AgentState::Suspended;
        let chain = [
            chain[0],
            Ancestor {
                agent: &stopped,
                limits: tight,
            },
        ];
        let e = check_spawn(&chain, 0, ok).unwrap_err();
        assert_eq!(e.code, ErrorCode::ParentNotActive);
        assert!(e.message.contains("'root'"), "{}", e.message);
    }

    #[test]
    fn narrowing_reaches_every_live_agent_below() {
        let root = agent("root", &["a"], &["public"]);
        let p = under(&root, agent("p", &["a", "b"], &["public", "pii"]));
        let c = under(&p, agent("c", &["a", "b"], &["pii"]));
        let mut gone = under(&p, agent("gone", &["b"], &[]));
        gone.state = AgentState::Decommissioned;
        let below_gone = under(&gone, agent("below-gone", &["b"], &[]));
        let fine = under(&p, agent("fine", &["a"], &["public"]));
        let below = [c, gone, fine, below_gone];
        // `p` is narrowed to what the root holds.
        let mut narrowed = p.clone();
        narrowed.roles = vec!["a".into()];
        narrowed.classifications = vec!["public".into()];
        let out = narrow_below(&narrowed, std::slice::from_ref(&root), &below);
        assert_eq!(
            out,
            vec![
                Narrowed {
                    index: 0,
                    roles: vec!["a".into()],
                    classifications: vec![],
                    lost_roles: vec!["b".into()],
                    lost_classifications: vec!["pii".into()],
                },
                Narrowed {
                    index: 3,
                    roles: vec![],
                    classifications: vec![],
                    lost_roles: vec!["b".into()],
                    lost_classifications: vec![],
                },
            ]
        );
        // What the root lacks goes even if the changed agent still holds it.
        let out = narrow_below(&p, &[root], &below);
        assert_eq!(out[0].lost_roles, vec!["b".to_string()]);
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
            let ok = check_spawn(&alone(&p, SpawnLimits::default()), 0, req(&cr, &cc)).is_ok();
            prop_assert_eq!(ok, child_roles.is_subset(&parent_roles) && child_classes.is_subset(&parent_classes));
        }

        /// A child is accepted only if it holds nothing any agent above it
        /// lacks, however the chain's grants differ from one to the next.
        #[test]
        fn child_never_exceeds_any_ancestor(
            grants in proptest::collection::vec(proptest::collection::btree_set("[a-e]", 0..5), 1..5),
            child_roles in proptest::collection::btree_set("[a-e]", 0..4),
        ) {
            let agents: Vec<Agent> = grants
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    let roles: Vec<&str> = g.iter().map(String::as_str).collect();
                    let mut a = agent(&format!("a{i}"), &roles, &[]);
                    a.depth = u32::try_from(grants.len() - 1 - i).unwrap();
                    a
                })
                .collect();
            let chain: Vec<Ancestor<'_>> = agents
                .iter()
                .map(|agent| Ancestor { agent, limits: SpawnLimits { max_children: 10, max_depth: 10 } })
                .collect();
            let cr: Vec<String> = child_roles.iter().cloned().collect();
            let ok = check_spawn(&chain, 0, req(&cr, &[])).is_ok();
            prop_assert_eq!(ok, grants.iter().all(|g| child_roles.is_subset(g)));
        }

        /// After narrowing, each live agent below keeps exactly what it
        /// held that every agent above it held: nothing is gained, and one
        /// already within keeps all. Agents that have ended are left as they are.
        #[test]
        fn narrowing_leaves_every_descendant_within_its_chain(
            above in proptest::collection::btree_set("[a-e]", 0..5),
            top in proptest::collection::btree_set("[a-e]", 0..5),
            tree in proptest::collection::vec(
                (proptest::collection::btree_set("[a-e]", 0..5), any::<prop::sample::Index>(), any::<bool>()),
                0..8,
            ),
        ) {
            let root = agent("root", &names(&above), &[]);
            let changed = under(&root, agent("changed", &names(&top), &[]));
            // Each agent below hangs under the changed one or an earlier one.
            let mut below: Vec<Agent> = Vec::new();
            for (i, (roles, at, live)) in tree.iter().enumerate() {
                let j = at.index(below.len() + 1);
                let parent = below.get(j).unwrap_or(&changed).clone();
                let mut d = under(&parent, agent(&format!("d{i}"), &names(roles), &[]));
                if !live {
                    d.state = AgentState::Expired;
                }
                below.push(d);
            }
            below.sort_by_key(|d| d.depth);
            let out = narrow_below(&changed, std::slice::from_ref(&root), &below);
            for (i, d) in below.iter().enumerate() {
                let reported = out.iter().find(|n| n.index == i);
                if d.state.is_terminal() {
                    prop_assert!(reported.is_none());
                    continue;
                }
                // What it held, within what every agent above it held.
                let mut expected = d.roles.clone();
                let mut up = d.parent_id.clone();
                while let Some(id) = up {
                    let a = below.iter().chain([&changed, &root]).find(|a| a.id == id).unwrap();
                    expected.retain(|r| a.roles.contains(r));
                    up = a.parent_id.clone();
                }
                match reported {
                    Some(n) => {
                        prop_assert_eq!(&n.roles, &expected);
                        prop_assert!(!n.lost_roles.is_empty());
                        prop_assert!(n.lost_roles.iter().all(|r| d.roles.contains(r) && !expected.contains(r)));
                    }
                    None => prop_assert_eq!(&d.roles, &expected),
                }
            }
        }
    }
}
