//! Deciding a request along its delegation chain.
//!
//! The chain is the principal, then each ancestor (nearest first), then the
//! human the agent acts for. Every identity is evaluated alone against the
//! same action, resource and context; the request is allowed only if every
//! one is active and allowed. Access therefore only narrows along a chain.
//! A `forbid` policy that fails to evaluate denies (guardrails fail closed).

use std::collections::{BTreeSet, HashMap, HashSet};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityUid, Request,
    RestrictedExpression,
};
use serde_json::{Map, Value};
use steward_core::Error;
use steward_types::{ChainLink, Decision, DeterminingPolicy, ErrorCode, Remediation};

use crate::engine::Engine;

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

struct LinkResult {
    allowed: bool,
    reason: Option<String>,
    permits: Vec<String>,
    forbids: Vec<String>,
    errors: Vec<String>,
}

/// A JSON value as a Cedar restricted expression, built without parsing.
fn restricted(what: &str, v: &Value) -> Result<RestrictedExpression, Error> {
    let bad = |msg: &str| Error::new(ErrorCode::InvalidEntity, format!("{what}: {msg}"));
    Ok(match v {
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => RestrictedExpression::new_long(
            n.as_i64().ok_or_else(|| bad("numbers must be integers"))?,
        ),
        Value::Array(items) => RestrictedExpression::new_set(
            items
                .iter()
                .map(|i| restricted(what, i))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Value::Object(fields) => RestrictedExpression::new_record(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), restricted(what, v)?)))
                .collect::<Result<Vec<_>, Error>>()?,
        )
        .map_err(|e| bad(&e.to_string()))?,
        Value::Null => return Err(bad("null is not a value policies can use")),
    })
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

    /// A Cedar entity from Steward's description of it.
    fn entity(&self, e: &EntityData, extra_parents: &[(String, String)]) -> Result<Entity, Error> {
        let attrs = e
            .attrs
            .iter()
            .map(|(k, v)| Ok((k.clone(), restricted(&format!("attribute '{k}'"), v)?)))
            .collect::<Result<HashMap<_, _>, Error>>()?;
        let parents = e
            .parents
            .iter()
            .chain(extra_parents)
            .map(|(t, i)| self.uid(t, i))
            .collect::<Result<HashSet<_>, Error>>()?;
        Entity::new(self.uid(&e.entity_type, &e.id)?, attrs, parents)
            .map_err(|err| Error::new(ErrorCode::InvalidEntity, err.to_string()))
    }

    /// Decide `input`. Bad attribute or context values are `invalid_entity`
    /// (400); an undeclared action or a resource type the action does not
    /// apply to is a denial that says so.
    pub fn decide(&self, input: &DecisionInput) -> Result<Outcome, Error> {
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
        if !action.resource_types.contains(&input.resource.entity_type) {
            return Ok(deny_with(
                format!(
                    "action '{}' does not apply to resources of type '{}' (it applies to {})",
                    input.action,
                    input.resource.entity_type,
                    action.resource_types.join(", ")
                ),
                &input.chain,
            ));
        }
        let action_uid = self.uid("Action", &input.action)?;
        let context = self.context(&input.context, action, &action_uid)?;
        let resource_uid = self.uid(&input.resource.entity_type, &input.resource.id)?;
        if let Some(declared) = self.resource_types.get(&input.resource.entity_type) {
            crate::values::check_attributes("resource", declared, &input.resource.attrs)?;
        }
        let entities = self.entities(&input.chain, &input.resource, None)?;

        let mut links = Vec::with_capacity(input.chain.len());
        let mut results = Vec::with_capacity(input.chain.len());
        for subject in &input.chain {
            let result = match &subject.inactive {
                Some(why) => LinkResult {
                    allowed: false,
                    reason: Some(why.clone()),
                    permits: vec![],
                    forbids: vec![],
                    errors: vec![],
                },
                None => self.evaluate(subject, &action_uid, &resource_uid, &context, &entities)?,
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
                .filter(|id| seen.insert((*id).clone()))
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
        let (index, failed) = results
            .iter()
            .enumerate()
            .find(|(_, r)| !r.allowed)
            .unwrap_or((0, &results[0]));
        let forbidden_by: Vec<DeterminingPolicy> = failed
            .forbids
            .iter()
            .filter_map(|id| self.meta.get(id).cloned())
            .collect();
        let remediation = self.remediation(
            input,
            index,
            failed,
            forbidden_by.clone(),
            &action_uid,
            &resource_uid,
            &context,
        )?;
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
        action: &steward_types::ActionDef,
        action_uid: &EntityUid,
    ) -> Result<Context, Error> {
        let kept: Map<String, Value> = given
            .iter()
            .filter(|(k, _)| action.context.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        crate::values::check_attributes("context", &action.context, &kept)?;
        let _ = action_uid;
        let pairs = kept
            .iter()
            .map(|(k, v)| Ok((k.clone(), restricted("context", v)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        Context::from_pairs(pairs).map_err(|e| {
            Error::new(
                ErrorCode::InvalidEntity,
                format!("context does not match action '{}': {e}", action.name),
            )
        })
    }

    /// The entities of a request: the chain (optionally one identity with an
    /// extra parent, for remediation) and the resource.
    fn entities(
        &self,
        chain: &[Subject],
        resource: &EntityData,
        extra: Option<(usize, &[(String, String)])>,
    ) -> Result<Entities, Error> {
        let mut seen = HashSet::new();
        let mut list = Vec::with_capacity(chain.len() + 1);
        for (i, s) in chain.iter().enumerate() {
            if seen.insert((s.entity.entity_type.as_str(), s.entity.id.as_str())) {
                let parents = extra.filter(|(at, _)| *at == i).map_or(&[][..], |(_, p)| p);
                list.push(self.entity(&s.entity, parents)?);
            }
        }
        if seen.insert((resource.entity_type.as_str(), resource.id.as_str())) {
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
        action: &EntityUid,
        resource: &EntityUid,
        context: &Context,
        entities: &Entities,
    ) -> Result<LinkResult, Error> {
        let principal = self.uid(&subject.entity.entity_type, &subject.entity.id)?;
        let request = Request::new(
            principal,
            action.clone(),
            resource.clone(),
            context.clone(),
            None,
        )
        .map_err(|e| {
            Error::new(
                ErrorCode::InvalidEntity,
                format!("the request does not match the schema: {e}"),
            )
        })?;
        let slice = self
            .by_action
            .get(action.id().unescaped())
            .unwrap_or(&self.policies);
        let response = Authorizer::new().is_authorized(&request, slice, entities);
        let determining: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|p| p.to_string())
            .collect();
        let mut errors = Vec::new();
        let mut failed_guardrails = Vec::new();
        for err in response.diagnostics().errors() {
            let text = err.to_string();
            let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = err;
            let id = e.policy_id().to_string();
            if self.meta.get(&id).is_some_and(|m| m.effect == "forbid") {
                failed_guardrails.push(id);
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
                format!("forbidden by {}", forbids.join(", "))
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

    #[allow(clippy::too_many_arguments)]
    fn remediation(
        &self,
        input: &DecisionInput,
        index: usize,
        failed: &LinkResult,
        forbidden_by: Vec<DeterminingPolicy>,
        action: &EntityUid,
        resource: &EntityUid,
        context: &Context,
    ) -> Result<Remediation, Error> {
        let subject = &input.chain[index];
        let who = format!("{} '{}'", subject.kind, subject.name);
        if let Some(why) = &subject.inactive {
            return Ok(Remediation {
                message: format!("{who} cannot act: {why}."),
                ..Default::default()
            });
        }
        if !forbidden_by.is_empty() {
            let rules: Vec<String> = forbidden_by
                .iter()
                .map(|p| {
                    let owner = if p.owner.is_empty() {
                        "an administrator".to_string()
                    } else {
                        p.owner.clone()
                    };
                    format!(
                        "'{}' ({}; owner {owner})",
                        p.id,
                        if p.description.is_empty() {
                            "no description"
                        } else {
                            &p.description
                        }
                    )
                })
                .collect();
            return Ok(Remediation {
                message: format!(
                    "{who} is forbidden by guardrail {}. No role overrides a guardrail; if this is wrong, ask its owner.",
                    rules.join(", ")
                ),
                forbidden_by,
                ..Default::default()
            });
        }
        // Which role, or persona, would have allowed this identity?
        let held: HashSet<&(String, String)> = subject.entity.parents.iter().collect();
        let mut roles = Vec::new();
        for role in self.roles.iter().take(64) {
            if held.contains(&("Role".to_string(), role.clone())) {
                continue;
            }
            if self.would_allow(
                input,
                index,
                &[("Role".to_string(), role.clone())],
                action,
                resource,
                context,
            )? {
                roles.push(role.clone());
            }
        }
        let mut personas = Vec::new();
        if subject.kind == "agent" {
            for (persona, persona_roles) in self.personas.iter().take(32) {
                // An agent of the persona holds the persona and its roles.
                let mut extra = vec![("Persona".to_string(), persona.clone())];
                extra.extend(
                    persona_roles
                        .iter()
                        .map(|r| ("Role".to_string(), r.clone())),
                );
                if !held.contains(&extra[0])
                    && self.would_allow(input, index, &extra, action, resource, context)?
                {
                    personas.push(persona.clone());
                }
            }
        }
        let position = match (index, subject.kind) {
            (0, _) => String::new(),
            (_, "human") => " (the person it acts for)".into(),
            _ => " (an ancestor in its spawn chain)".into(),
        };
        let message = if roles.is_empty() && personas.is_empty() {
            format!(
                "{who}{position} has no permission to '{}' on {}::\"{}\", and no role grants it. Ask an administrator for a policy that permits it.",
                input.action, input.resource.entity_type, input.resource.id
            )
        } else {
            let mut options = Vec::new();
            if !roles.is_empty() {
                options.push(format!("role {}", roles.join(" or ")));
            }
            if !personas.is_empty() {
                options.push(format!("persona {}", personas.join(" or ")));
            }
            format!(
                "{who}{position} may not '{}' on {}::\"{}\". It would be allowed with {}; ask its owner or an administrator to grant it.",
                input.action,
                input.resource.entity_type,
                input.resource.id,
                options.join(", or ")
            )
        };
        let _ = failed;
        Ok(Remediation {
            message,
            roles_that_allow: roles,
            personas_that_allow: personas,
            forbidden_by: vec![],
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn would_allow(
        &self,
        input: &DecisionInput,
        index: usize,
        extra_parents: &[(String, String)],
        action: &EntityUid,
        resource: &EntityUid,
        context: &Context,
    ) -> Result<bool, Error> {
        let entities =
            self.entities(&input.chain, &input.resource, Some((index, extra_parents)))?;
        Ok(self
            .evaluate(&input.chain[index], action, resource, context, &entities)?
            .allowed)
    }
}
