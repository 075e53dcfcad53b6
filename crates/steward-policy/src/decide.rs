//! Deciding a request along its delegation chain.
//!
//! The chain is the principal, then each ancestor (nearest first), then the
//! human the agent acts for. Every identity is evaluated alone against the
//! same action, resource and context; the request is allowed only if every
//! one is active and allowed. Access therefore only narrows along a chain.
//! A `forbid` policy that fails to evaluate denies (guardrails fail closed).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use cedar_policy::{
    Context, Decision as CedarDecision, Entities, Entity, EntityUid, PolicyId, PolicySet, Request,
    RestrictedExpression,
};
use serde_json::{Map, Value};
use steward_core::Error;
use steward_types::{ChainLink, Decision, DeterminingPolicy, ErrorCode, Remediation};

use crate::cache::Cached;
use crate::engine::Engine;

/// Stack a decision needs left where it starts (Cedar itself wants 100 KiB).
const RED_ZONE: usize = 1024 * 1024;

/// The stack a decision gets when less than [`RED_ZONE`] is left.
const FRESH_STACK: usize = 4 * 1024 * 1024;

/// An entity as the engine sees it: Cedar type, id, attributes, parents.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityData {
    /// Cedar entity type (`Agent`, `Human`, a declared type).
    pub entity_type: String,
    /// Entity id.
    pub id: String,
    /// Attribute values in Cedar's JSON form.
    pub attrs: Map<String, Value>,
    /// Parents as (type, id): roles, persona, teams.
    pub parents: Vec<(String, String)>,
}

/// One identity in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    /// `agent` or `human`.
    pub kind: &'static str,
    /// Display name (agent name or e-mail).
    pub name: String,
    /// Why it may not act at all (suspended, deactivated...), if so.
    pub inactive: Option<String>,
    /// The entity.
    pub entity: EntityData,
}

/// What to decide.
#[derive(Debug, Clone)]
pub struct DecisionInput {
    /// Principal first, ancestors nearest first, the human acted for last.
    pub chain: Vec<Subject>,
    /// Action name.
    pub action: String,
    /// The resource.
    pub resource: EntityData,
    /// Context attributes (undeclared ones are ignored).
    pub context: Map<String, Value>,
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// allow or deny (approval comes from the approvals layer).
    pub decision: Decision,
    /// Policies that determined it.
    pub policies: Vec<DeterminingPolicy>,
    /// Evaluation errors.
    pub errors: Vec<String>,
    /// How each identity fared.
    pub chain: Vec<ChainLink>,
    /// For a denial, what to do.
    pub remediation: Option<Remediation>,
}

/// What every identity of a request is evaluated against.
struct Prepared<'a> {
    /// The action, with the roles and personas its policies name.
    prepared: &'a crate::engine::PreparedAction,
    action: &'a EntityUid,
    resource: &'a EntityUid,
    context: &'a Context,
    /// The action's slice of the policies.
    policies: &'a PolicySet,
}

struct LinkResult {
    allowed: bool,
    reason: Option<String>,
    permits: Vec<PolicyId>,
    forbids: Vec<PolicyId>,
    errors: Vec<String>,
}

/// A JSON value as a Cedar restricted expression, built without parsing.
/// The error is the problem with the value, for the caller to place.
fn restricted(v: &Value) -> Result<RestrictedExpression, String> {
    Ok(match v {
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => RestrictedExpression::new_long(n.as_i64().ok_or(NOT_INTEGER)?),
        Value::Array(items) => RestrictedExpression::new_set(
            items
                .iter()
                .map(restricted)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Value::Object(fields) => RestrictedExpression::new_record(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), restricted(v)?)))
                .collect::<Result<Vec<_>, String>>()?,
        )
        .map_err(|e| e.to_string())?,
        Value::Null => return Err(NULL.into()),
    })
}

const NOT_INTEGER: &str = "numbers must be integers";
const NULL: &str = "null is not a value policies can use";

/// Whether [`restricted`] would accept `v`, with the same error, without
/// building anything (for attributes no policy reads). A record's fields
/// come from a JSON object, so they are distinct and `new_record` accepts
/// them whenever their values are accepted.
fn check_value(v: &Value) -> Result<(), String> {
    match v {
        Value::String(_) | Value::Bool(_) => Ok(()),
        Value::Number(n) if n.as_i64().is_some() => Ok(()),
        Value::Number(_) => Err(NOT_INTEGER.into()),
        Value::Array(items) => items.iter().try_for_each(check_value),
        Value::Object(fields) => fields.values().try_for_each(check_value),
        Value::Null => Err(NULL.into()),
    }
}

fn invalid(what: &str, problem: &str) -> Error {
    Error::new(ErrorCode::InvalidEntity, format!("{what}: {problem}"))
}

impl Engine {
    /// An entity uid from a cached type name (no parsing on the hot path).
    fn uid(&self, entity_type: &str, id: &str) -> Result<EntityUid, Error> {
        let ty = self.type_names.get(entity_type).ok_or_else(|| {
            Error::new(
                ErrorCode::UnknownResourceType,
                format!("'{entity_type}' is not a declared entity type"),
            )
        })?;
        Ok(EntityUid::from_type_name_and_id(
            ty.clone(),
            cedar_policy::EntityId::new(id),
        ))
    }

    /// Whether some policy may read an attribute of this name.
    fn is_referenced(&self, attribute: &str) -> bool {
        self.referenced.as_ref().is_none_or(|names| {
            names
                .binary_search_by(|n| n.as_str().cmp(attribute))
                .is_ok()
        })
    }

    /// A Cedar entity from Steward's description of it. Every attribute
    /// value is checked; only those some policy can read are built.
    fn entity(&self, e: &EntityData, extra_parents: &[(String, String)]) -> Result<Entity, Error> {
        let attrs = match self.resource_decls.get(&e.entity_type) {
            // A declared type's attributes, each to its declared type
            // (undeclared ones no policy can read are left out).
            Some(declared) => declared.build("resource", &e.attrs, &|k| self.is_referenced(k))?,
            // Steward's own entities, built by Steward.
            None => {
                let mut attrs = Vec::new();
                for (k, v) in &e.attrs {
                    let at = || format!("attribute '{k}'");
                    if self.is_referenced(k) {
                        attrs.push((k.clone(), restricted(v).map_err(|p| invalid(&at(), &p))?));
                    } else {
                        check_value(v).map_err(|p| invalid(&at(), &p))?;
                    }
                }
                attrs
            }
        };
        let parents = e
            .parents
            .iter()
            .chain(extra_parents)
            .map(|(t, i)| self.uid(t, i))
            .collect::<Result<Vec<_>, Error>>()?;
        Entity::new_with_tags(self.uid(&e.entity_type, &e.id)?, attrs, parents, [])
            .map_err(|err| Error::new(ErrorCode::InvalidEntity, err.to_string()))
    }

    /// The checks of values [`Engine::decide`] makes before it evaluates:
    /// the context against `action`'s declared context, and `resource`
    /// (when given) against its declared type. A request refused before a
    /// decision (for a subject Steward does not know) is refused for a bad
    /// value first, as a decision would have been. An undeclared action,
    /// or one that does not apply to `resource_type`, is decided without
    /// reading either, so has nothing to check.
    pub fn check_values(
        &self,
        action: &str,
        resource_type: &str,
        resource: Option<&EntityData>,
        context: &Map<String, Value>,
    ) -> Result<(), Error> {
        let Some(prepared) = self.actions.get(action) else {
            return Ok(());
        };
        if !prepared
            .def
            .resource_types
            .iter()
            .any(|t| t == resource_type)
        {
            return Ok(());
        }
        self.context(context, prepared)?;
        match resource {
            Some(resource) => self.entity(resource, &[]).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Decide `input`. Bad attribute or context values are `invalid_entity`
    /// (400); an undeclared action or a resource type the action does not
    /// apply to is a denial that says so.
    ///
    /// Cedar refuses to evaluate with less than 100 KiB of stack left
    /// ("recursion limit reached"), and a refused `forbid` denies: a
    /// decision made deep in a task's stack (the MCP gateway's handlers, in
    /// a debug build) was denied for it. With less than [`RED_ZONE`] left,
    /// the decision runs on a fresh stack of [`FRESH_STACK`].
    pub fn decide(&self, input: &DecisionInput) -> Result<Outcome, Error> {
        stacker::maybe_grow(RED_ZONE, FRESH_STACK, || self.decide_here(input))
    }

    fn decide_here(&self, input: &DecisionInput) -> Result<Outcome, Error> {
        let deny_with = |message: String, chain: &[Subject]| Outcome {
            decision: Decision::Deny,
            policies: vec![],
            errors: vec![message.clone()],
            chain: chain
                .iter()
                .map(|s| ChainLink {
                    kind: s.kind.into(),
                    id: s.entity.id.clone(),
                    name: s.name.clone(),
                    allowed: false,
                    reason: Some(message.clone()),
                })
                .collect(),
            remediation: Some(Remediation {
                message,
                ..Default::default()
            }),
        };
        if input.chain.is_empty() {
            return Ok(deny_with(
                "the request names no principal to decide for".into(),
                &input.chain,
            ));
        }
        let Some(action) = self.actions.get(&input.action) else {
            let known = self.action_names().join(", ");
            return Ok(deny_with(
                format!(
                    "action '{}' is not declared in this tenant (declared: {known})",
                    input.action
                ),
                &input.chain,
            ));
        };
        if !action
            .def
            .resource_types
            .contains(&input.resource.entity_type)
        {
            return Ok(deny_with(
                format!(
                    "action '{}' does not apply to resources of type '{}' (it applies to {})",
                    input.action,
                    input.resource.entity_type,
                    action.def.resource_types.join(", ")
                ),
                &input.chain,
            ));
        }
        let context = self.context(&input.context, action)?;
        let built = self.request_entities(&input.chain, &input.resource)?;
        let request = Prepared {
            prepared: action,
            action: &action.uid,
            resource: &built.resource_uid,
            context: &context,
            policies: &action.policies,
        };

        let mut links = Vec::with_capacity(input.chain.len());
        let mut results = Vec::with_capacity(input.chain.len());
        for (subject, principal) in input.chain.iter().zip(&built.principals) {
            let result = match &subject.inactive {
                Some(why) => LinkResult {
                    allowed: false,
                    reason: Some(why.clone()),
                    permits: vec![],
                    forbids: vec![],
                    errors: vec![],
                },
                None => self.evaluate(subject, principal, &request, &built.entities)?,
            };
            links.push(ChainLink {
                kind: subject.kind.into(),
                id: subject.entity.id.clone(),
                name: subject.name.clone(),
                allowed: result.allowed,
                reason: result.reason.clone(),
            });
            results.push(result);
        }
        let errors: Vec<String> = results
            .iter()
            .flat_map(|r| r.errors.iter().cloned())
            .collect();
        let allowed = !results.is_empty() && results.iter().all(|r| r.allowed);
        if allowed {
            let mut seen = BTreeSet::new();
            let policies = results
                .iter()
                .flat_map(|r| r.permits.iter())
                .map(AsRef::<str>::as_ref)
                .filter(|id| seen.insert(*id))
                .filter_map(|id| self.meta.get(id).cloned())
                .collect();
            return Ok(Outcome {
                decision: Decision::Allow,
                policies,
                errors,
                chain: links,
                remediation: None,
            });
        }
        // Every guardrail that forbade any identity of the chain, once.
        let mut seen = BTreeSet::new();
        let forbidden_by: Vec<DeterminingPolicy> = results
            .iter()
            .filter(|r| !r.allowed)
            .flat_map(|r| r.forbids.iter())
            .map(AsRef::<str>::as_ref)
            .filter(|id| seen.insert(*id))
            .filter_map(|id| self.meta.get(id).cloned())
            .collect();
        let remediation = self.remediation(input, &results, forbidden_by.clone(), &request)?;
        Ok(Outcome {
            decision: Decision::Deny,
            policies: forbidden_by,
            errors,
            chain: links,
            remediation: Some(remediation),
        })
    }

    /// The request context, keeping only declared attributes.
    fn context(
        &self,
        given: &Map<String, Value>,
        action: &crate::engine::PreparedAction,
    ) -> Result<Context, Error> {
        // Only declared names are looked up, so the undeclared ones given
        // need not be dropped first.
        let pairs = action.context.build("context", given, &|_| true)?;
        if pairs.is_empty() {
            return Ok(self.empty_context.clone());
        }
        Context::from_pairs(pairs).map_err(|e| {
            Error::new(
                ErrorCode::InvalidEntity,
                format!("context does not match action '{}': {e}", action.def.name),
            )
        })
    }

    /// The resource checked against its declared type, and the Cedar uids
    /// and entities of a request: reused from the cache when the chain and
    /// resource are exactly those of a recent request (which passed the same
    /// checks, so would pass them again), built and checked otherwise.
    fn request_entities(
        &self,
        chain: &[Subject],
        resource: &EntityData,
    ) -> Result<Arc<Cached>, Error> {
        let key = self.entity_cache.key(chain, resource);
        if let Some(hit) = self.entity_cache.get(key, chain, resource) {
            return Ok(hit);
        }
        let resource_uid = self.uid(&resource.entity_type, &resource.id)?;
        // Building the resource checks its attributes against its type.
        let entities = self.entities(chain, resource, None)?;
        // Every identity's type was resolved building its entity.
        let principals = chain
            .iter()
            .map(|s| self.uid(&s.entity.entity_type, &s.entity.id))
            .collect::<Result<Vec<_>, Error>>()?;
        let built = Arc::new(Cached::new(
            chain,
            resource,
            entities,
            resource_uid,
            principals,
        ));
        self.entity_cache.put(key, Arc::clone(&built));
        Ok(built)
    }

    /// The entities of a request: the chain (optionally one identity with an
    /// extra parent, for remediation) and the resource.
    fn entities<'a>(
        &self,
        chain: &'a [Subject],
        resource: &'a EntityData,
        extra: Option<(usize, &[(String, String)])>,
    ) -> Result<Entities, Error> {
        let mut seen: Vec<(&str, &str)> = Vec::with_capacity(chain.len() + 1);
        let mut list = Vec::with_capacity(chain.len() + 1);
        // Each (type, id) once: the first occurrence is the one built.
        let mut first = |e: &'a EntityData| {
            let uid = (e.entity_type.as_str(), e.id.as_str());
            let new = !seen.contains(&uid);
            if new {
                seen.push(uid);
            }
            new
        };
        for (i, s) in chain.iter().enumerate() {
            if first(&s.entity) {
                let parents = extra.filter(|(at, _)| *at == i).map_or(&[][..], |(_, p)| p);
                list.push(self.entity(&s.entity, parents)?);
            }
        }
        if first(resource) {
            list.push(self.entity(resource, &[])?);
        }
        // Values were checked against their declarations already (resource
        // attributes in `decide`, identities are built by Steward).
        Entities::from_entities(list, None).map_err(|e| {
            Error::new(
                ErrorCode::InvalidEntity,
                format!("the resource's attributes do not match its declared type: {e}"),
            )
        })
    }

    fn evaluate(
        &self,
        subject: &Subject,
        principal: &EntityUid,
        prepared: &Prepared<'_>,
        entities: &Entities,
    ) -> Result<LinkResult, Error> {
        let request = Request::new(
            principal.clone(),
            prepared.action.clone(),
            prepared.resource.clone(),
            prepared.context.clone(),
            None,
        )
        .map_err(|e| {
            Error::new(
                ErrorCode::InvalidEntity,
                format!("the request does not match the schema: {e}"),
            )
        })?;
        let response = self
            .authorizer
            .is_authorized(&request, prepared.policies, entities);
        let determining: Vec<PolicyId> = response.diagnostics().reason().cloned().collect();
        let mut errors = Vec::new();
        let mut failed_guardrails = Vec::new();
        for err in response.diagnostics().errors() {
            let text = err.to_string();
            let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = err;
            let id = e.policy_id();
            if self
                .meta
                .get(AsRef::<str>::as_ref(id))
                .is_some_and(|m| m.effect == "forbid")
            {
                failed_guardrails.push(id.clone());
            }
            errors.push(text);
        }
        let allowed = response.decision() == CedarDecision::Allow && failed_guardrails.is_empty();
        let (permits, forbids) = if response.decision() == CedarDecision::Allow {
            (determining, failed_guardrails)
        } else {
            let mut f = determining;
            f.extend(failed_guardrails);
            (vec![], f)
        };
        let reason = (!allowed).then(|| {
            if forbids.is_empty() {
                format!(
                    "no policy permits {} '{}' to do this",
                    subject.kind, subject.name
                )
            } else {
                let ids: Vec<&str> = forbids.iter().map(AsRef::as_ref).collect();
                format!("forbidden by {}", ids.join(", "))
            }
        });
        Ok(LinkResult {
            allowed,
            reason,
            permits,
            forbids,
            errors,
        })
    }

    /// What to do about a denial, for every identity of the chain that was
    /// refused: guardrails first (no role overrides them, so nothing else
    /// would help), then identities that cannot act at all, then the roles
    /// or personas that would allow each refused identity. A role is
    /// offered only when it would allow every refused identity.
    fn remediation(
        &self,
        input: &DecisionInput,
        results: &[LinkResult],
        forbidden_by: Vec<DeterminingPolicy>,
        request: &Prepared<'_>,
    ) -> Result<Remediation, Error> {
        let refused: Vec<usize> = (0..results.len())
            .filter(|i| !results[*i].allowed)
            .collect();
        let who = |i: usize| {
            let subject = &input.chain[i];
            let position = match (i, subject.kind) {
                (0, _) => "",
                (_, "human") => " (the person it acts for)",
                _ => " (an ancestor in its spawn chain)",
            };
            format!("{} '{}'{position}", subject.kind, subject.name)
        };
        let whom = |ids: &[usize]| {
            ids.iter()
                .map(|i| who(*i))
                .collect::<Vec<_>>()
                .join(" and ")
        };
        let target = format!(
            "'{}' on {}::\"{}\"",
            input.action, input.resource.entity_type, input.resource.id
        );
        if !forbidden_by.is_empty() {
            let rules: Vec<String> = forbidden_by
                .iter()
                .map(|p| {
                    let owner = if p.owner.is_empty() {
                        "an administrator".to_string()
                    } else {
                        p.owner.clone()
                    };
                    let description = if p.description.is_empty() {
                        "no description"
                    } else {
                        &p.description
                    };
                    let forbade: Vec<usize> = refused
                        .iter()
                        .copied()
                        .filter(|i| results[*i].forbids.iter().any(|f| f.as_ref() == p.id))
                        .collect();
                    format!(
                        "'{}' ({description}; owner {owner}) forbids {}",
                        p.id,
                        whom(&forbade)
                    )
                })
                .collect();
            return Ok(Remediation {
                message: format!(
                    "Guardrail {}. No role overrides a guardrail; if this is wrong, ask its owner.",
                    rules.join("; ")
                ),
                forbidden_by,
                ..Default::default()
            });
        }
        let inactive: Vec<String> = refused
            .iter()
            .filter_map(|i| {
                let why = input.chain[*i].inactive.as_ref()?;
                Some(format!("{} cannot act: {why}", who(*i)))
            })
            .collect();
        if !inactive.is_empty() {
            return Ok(Remediation {
                message: format!("{}.", inactive.join("; ")),
                ..Default::default()
            });
        }
        // Which roles, or personas, would allow each refused identity?
        let mut roles: Option<Vec<String>> = None;
        let mut personas: Option<Vec<String>> = None;
        for &i in &refused {
            let (r, p) = self.grants_allowing(input, i, request)?;
            roles = Some(match roles {
                None => r,
                Some(before) => before.into_iter().filter(|x| r.contains(x)).collect(),
            });
            personas = Some(match personas {
                None => p,
                Some(before) => before.into_iter().filter(|x| p.contains(x)).collect(),
            });
        }
        let (roles, personas) = (roles.unwrap_or_default(), personas.unwrap_or_default());
        let all = whom(&refused);
        let chain_rule = if refused.len() > 1 {
            " Every identity in the chain must be allowed."
        } else {
            ""
        };
        let message = if roles.is_empty() && personas.is_empty() {
            format!(
                "{all} {} no permission to {target}, and no single role grants it to {}.{chain_rule} Ask an administrator for a policy that permits it.",
                if refused.len() > 1 { "have" } else { "has" },
                if refused.len() > 1 {
                    "all of them"
                } else {
                    "it"
                },
            )
        } else {
            let mut options = Vec::new();
            if !roles.is_empty() {
                options.push(format!("role {}", roles.join(" or ")));
            }
            if !personas.is_empty() {
                options.push(format!("persona {}", personas.join(" or ")));
            }
            // A child holds no more than its parent: ancestors first.
            let order: Vec<usize> = refused.iter().rev().copied().collect();
            let grant = if refused.len() > 1 {
                format!(" Grant it to {}, in that order.", whom(&order))
            } else if input.chain[refused[0]].kind == "agent" {
                " Ask its owner or an administrator to grant it.".to_string()
            } else {
                " Ask an administrator to grant it.".to_string()
            };
            format!(
                "{all} may not {target}. {} be allowed with {}.{chain_rule}{grant}",
                if refused.len() > 1 {
                    "All would"
                } else {
                    "It would"
                },
                options.join(", or ")
            )
        };
        Ok(Remediation {
            message,
            roles_that_allow: roles,
            personas_that_allow: personas,
            forbidden_by: vec![],
        })
    }

    /// The roles, and for an agent the personas, that would allow identity
    /// `index` of the chain: of those the action's policies name, the ones
    /// it does not hold already.
    fn grants_allowing(
        &self,
        input: &DecisionInput,
        index: usize,
        request: &Prepared<'_>,
    ) -> Result<(Vec<String>, Vec<String>), Error> {
        let subject = &input.chain[index];
        let held: HashSet<&(String, String)> = subject.entity.parents.iter().collect();
        let mut roles = Vec::new();
        for role in &request.prepared.roles {
            let extra = [("Role".to_string(), role.clone())];
            if !held.contains(&extra[0]) && self.would_allow(input, index, &extra, request)? {
                roles.push(role.clone());
            }
        }
        let mut personas = Vec::new();
        if subject.kind == "agent" {
            for (persona, persona_roles) in &request.prepared.personas {
                // An agent of the persona holds the persona and its roles.
                let mut extra = vec![("Persona".to_string(), persona.clone())];
                extra.extend(
                    persona_roles
                        .iter()
                        .map(|r| ("Role".to_string(), r.clone())),
                );
                if !held.contains(&extra[0]) && self.would_allow(input, index, &extra, request)? {
                    personas.push(persona.clone());
                }
            }
        }
        Ok((roles, personas))
    }

    fn would_allow(
        &self,
        input: &DecisionInput,
        index: usize,
        extra_parents: &[(String, String)],
        request: &Prepared<'_>,
    ) -> Result<bool, Error> {
        let entities =
            self.entities(&input.chain, &input.resource, Some((index, extra_parents)))?;
        let subject = &input.chain[index];
        let principal = self.uid(&subject.entity.entity_type, &subject.entity.id)?;
        Ok(self
            .evaluate(subject, &principal, request, &entities)?
            .allowed)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::{check_value, restricted};

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Checking an unused attribute refuses exactly what building it
        /// would, with the same message.
        #[test]
        fn check_agrees_with_build(v in json_value()) {
            prop_assert_eq!(check_value(&v).err(), restricted(&v).err());
        }
    }
}
