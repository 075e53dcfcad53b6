//! Walking the candidates of a search: where they come from (the inventory,
//! the known resources, the declared actions), and deciding each one in the
//! place the search varies with the rest of the request held fixed.

use serde_json::{Map, Value};
use steward_core::Error;
use steward_policy::{DecisionInput, Engine, EntityData, Subject};
use steward_types::{
    AgentFilter, Decision, DecisionRequest, ErrorCode, Page, PageQuery, PolicyQuery, PrincipalRef,
    ResourceRef,
};

use super::{MAX_EXAMINED, principal_type, resource_ref};
use crate::auth::Caller;
use crate::decisions::{resolve_chain, resolve_resource};
use crate::state::AppState;

/// Candidates read from the store at a time while searching.
const SCAN_BATCH: u32 = 100;

/// Where candidates come from.
#[derive(Debug, Clone)]
pub(super) enum Source {
    Humans,
    Agents,
    Teams,
    Entities(String),
    /// The tenant's declared actions, in name order.
    Actions,
}

impl Source {
    /// The identities of an AuthZEN subject type; `None` for a type Steward
    /// has no identities of.
    pub(super) fn subjects(subject_type: &str) -> Option<Source> {
        match principal_type(subject_type)? {
            "human" => Some(Source::Humans),
            _ => Some(Source::Agents),
        }
    }

    /// The resources of a Steward resource type.
    pub(super) fn resources(resource_type: &str) -> Source {
        match resource_type {
            "Agent" => Source::Agents,
            "Human" => Source::Humans,
            "Team" => Source::Teams,
            t => Source::Entities(t.to_string()),
        }
    }
}

/// One candidate: its key (for paging), the id to answer with, and what is
/// needed to evaluate it.
enum Candidate {
    Human {
        key: String,
        answer_id: String,
    },
    Agent {
        key: String,
        answer_id: String,
    },
    Team {
        key: String,
        name: String,
    },
    Entity {
        key: String,
        attributes: Map<String, Value>,
    },
    Action {
        name: String,
    },
}

impl Candidate {
    fn key(&self) -> &str {
        match self {
            Candidate::Human { key, .. }
            | Candidate::Agent { key, .. }
            | Candidate::Team { key, .. }
            | Candidate::Entity { key, .. } => key,
            Candidate::Action { name } => name,
        }
    }

    /// The id a PEP names it by: a human's external id (else e-mail), an
    /// agent's or team's name, a resource's id, an action's name. Each
    /// resolves back to the same thing in an evaluation.
    fn answer_id(&self) -> &str {
        match self {
            Candidate::Human { answer_id, .. } | Candidate::Agent { answer_id, .. } => answer_id,
            Candidate::Team { name, .. } | Candidate::Action { name } => name,
            Candidate::Entity { key, .. } => key,
        }
    }
}

/// What a search holds fixed while it tries each candidate in the remaining
/// place.
pub(super) enum Fixed {
    /// Subject search: the action and the resource.
    ActionAndResource {
        action: String,
        resource: EntityData,
    },
    /// Resource search: the subject's chain and the action, the Steward type
    /// searched and the properties a resource must have.
    SubjectAndAction {
        chain: Vec<Subject>,
        action: String,
        resource_type: String,
        filter: Map<String, Value>,
    },
    /// Action search: the subject's chain and the resource.
    SubjectAndResource {
        chain: Vec<Subject>,
        resource: EntityData,
    },
}

/// The chain of a human or agent, resolved as the decision service does.
pub(super) async fn chain_of(
    state: &AppState,
    caller: &Caller,
    principal_type: &str,
    id: &str,
) -> Result<Vec<Subject>, Error> {
    let principal = PrincipalRef {
        principal_type: principal_type.into(),
        id: id.into(),
    };
    resolve_chain(state, caller, Some(&principal), None).await
}

/// A store page as candidates, and the cursor after it.
fn listed<T>(
    page: Page<T>,
    candidate: impl FnMut(T) -> Candidate,
) -> (Vec<Candidate>, Option<String>) {
    (
        page.items.into_iter().map(candidate).collect(),
        page.next_cursor,
    )
}

/// A search in progress.
pub(super) struct Scan<'a> {
    pub(super) state: &'a AppState,
    pub(super) caller: &'a Caller,
    pub(super) engine: &'a Engine,
    pub(super) context: Map<String, Value>,
    pub(super) fixed: Fixed,
}

impl Scan<'_> {
    /// The candidates after `cursor`, a batch at a time, and the cursor to
    /// continue from.
    async fn batch(
        &self,
        source: &Source,
        cursor: Option<String>,
    ) -> Result<(Vec<Candidate>, Option<String>), Error> {
        let tenant = self.caller.tenant_id();
        let store = &self.state.store;
        let page = PageQuery {
            cursor,
            limit: Some(SCAN_BATCH),
            ..Default::default()
        };
        Ok(match source {
            Source::Humans => listed(store.list_humans(tenant, page).await?, |h| {
                Candidate::Human {
                    answer_id: h.external_id.clone().unwrap_or_else(|| h.email.clone()),
                    key: h.id,
                }
            }),
            Source::Agents => {
                let filter = AgentFilter {
                    cursor: page.cursor,
                    limit: page.limit,
                    ..Default::default()
                };
                listed(store.list_agents(tenant, filter).await?, |a| {
                    Candidate::Agent {
                        answer_id: a.name,
                        key: a.id,
                    }
                })
            }
            Source::Teams => listed(store.list_teams(tenant, page).await?, |t| Candidate::Team {
                key: t.id,
                name: t.name,
            }),
            Source::Entities(t) => {
                let query = PolicyQuery {
                    cursor: page.cursor,
                    limit: page.limit,
                };
                listed(store.list_resource_entities(tenant, t, query).await?, |e| {
                    Candidate::Entity {
                        key: e.id,
                        attributes: e.attributes.into_iter().collect(),
                    }
                })
            }
            // Few enough to take at once.
            Source::Actions => {
                let names = self.engine.action_names().into_iter();
                let candidates = names
                    .filter(|n| page.cursor.as_ref().is_none_or(|s| n > s))
                    .map(|name| Candidate::Action { name })
                    .collect();
                (candidates, None)
            }
        })
    }

    /// A candidate as the resource of a resource search; `None` when it is
    /// a known resource without the properties asked for.
    async fn as_resource(
        &self,
        c: &Candidate,
        resource_type: &str,
        filter: &Map<String, Value>,
    ) -> Result<Option<EntityData>, Error> {
        Ok(Some(match c {
            Candidate::Entity { key, attributes } => {
                if filter.iter().any(|(k, v)| attributes.get(k) != Some(v)) {
                    return Ok(None);
                }
                let declared = self.engine.resource_attributes(resource_type);
                let mut attrs = attributes.clone();
                attrs.retain(|k, _| declared.is_some_and(|d| d.contains_key(k)));
                EntityData {
                    entity_type: resource_type.to_string(),
                    id: key.clone(),
                    attrs,
                    parents: vec![],
                }
            }
            Candidate::Team { name, .. } => EntityData {
                entity_type: "Team".into(),
                id: name.clone(),
                attrs: Map::new(),
                parents: vec![],
            },
            Candidate::Human { key, .. } | Candidate::Agent { key, .. } => {
                let kind = if matches!(c, Candidate::Human { .. }) {
                    "Human"
                } else {
                    "Agent"
                };
                let r = resource_ref(kind.into(), key, &Map::new());
                resolve_resource(self.state, self.caller.tenant_id(), self.engine, &r).await?
            }
            Candidate::Action { .. } => return Ok(None),
        }))
    }

    /// Whether the candidate, in the place the search varies, is allowed.
    async fn check(&self, c: &Candidate) -> Result<bool, Error> {
        let (chain, action, resource) = match &self.fixed {
            Fixed::ActionAndResource { action, resource } => {
                let principal_type = match c {
                    Candidate::Human { .. } => "human",
                    Candidate::Agent { .. } => "agent",
                    _ => return Ok(false),
                };
                let chain = chain_of(self.state, self.caller, principal_type, c.key()).await?;
                (chain, action.clone(), resource.clone())
            }
            Fixed::SubjectAndAction {
                chain,
                action,
                resource_type,
                filter,
            } => match self.as_resource(c, resource_type, filter).await? {
                Some(resource) => (chain.clone(), action.clone(), resource),
                None => return Ok(false),
            },
            Fixed::SubjectAndResource { chain, resource } => match c {
                Candidate::Action { name } => (chain.clone(), name.clone(), resource.clone()),
                _ => return Ok(false),
            },
        };
        let input = DecisionInput {
            chain,
            action,
            resource,
            context: self.context.clone(),
        };
        // A candidate the engine cannot decide for this request (a context
        // or attribute it needs that the request lacks or gives in the wrong
        // type: `invalid_entity`) is not allowed; it is left out rather than
        // failing the search, as each action may declare its own context.
        let outcome = match self.engine.decide(&input) {
            Ok(outcome) => outcome,
            Err(e) if e.code == ErrorCode::InvalidEntity => return Ok(false),
            Err(e) => return Err(e),
        };
        if outcome.decision != Decision::Allow {
            return Ok(false);
        }
        // What an evaluation would hold for approval is not allowed (its
        // evaluation answers false) and is left out.
        let ask = crate::approvals::approval_ask(
            self.state,
            self.caller.tenant_id(),
            self.engine,
            &input.action,
            &input,
            &outcome.policies,
        )
        .await?;
        if ask.is_some() {
            return Ok(false);
        }
        // Nor is what a quota would refuse: reserved nothing, read now.
        let tenant = self.caller.tenant_id();
        let rules = self.state.quotas.get(&self.state.store, tenant).await?;
        let req = DecisionRequest {
            principal: None,
            action: input.action.clone(),
            resource: ResourceRef {
                resource_type: input.resource.entity_type.clone(),
                id: input.resource.id.clone(),
                attributes: Default::default(),
            },
            context: input.context.clone(),
            on_behalf_of: None,
            estimate: None,
            call_arguments: None,
        };
        let charges = crate::quotas::charges(&rules, tenant, &input, &req)?;
        self.state
            .store
            .quotas_would_admit(tenant, &charges, chrono::Utc::now())
            .await
    }

    /// Walk the candidates from `start`, keeping the allowed ones, until
    /// `limit` results or [`MAX_EXAMINED`] candidates. Answers the ids found,
    /// the last candidate examined when any remain (to continue after), and
    /// how many were examined.
    pub(super) async fn run(
        &self,
        source: &Source,
        start: Option<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>, usize), Error> {
        let mut results = Vec::new();
        let mut examined = 0;
        let mut cursor = start;
        loop {
            let (items, next) = self.batch(source, cursor.clone()).await?;
            let count = items.len();
            for (i, c) in items.iter().enumerate() {
                examined += 1;
                if self.check(c).await? {
                    results.push(c.answer_id().to_string());
                }
                if results.len() >= limit || examined >= MAX_EXAMINED {
                    let more = i + 1 < count || next.is_some();
                    return Ok((results, more.then(|| c.key().to_string()), examined));
                }
            }
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok((results, None, examined)),
            }
        }
    }
}
