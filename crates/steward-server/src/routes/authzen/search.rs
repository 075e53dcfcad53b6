//! `POST /access/v1/search/{subject,resource,action}`. The three share one
//! code path: validate the request, resolve what it holds fixed, scan the
//! candidates for the place searched (see `scan`), answer a page and record
//! one summary audit entry.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};
use steward_core::{AuditEvent, Error};
use steward_policy::{Engine, EntityData, Subject};
use steward_types::ErrorCode;

use super::scan::{Fixed, Scan, Source, chain_of};
use super::wire::{
    ACTION_HINT, ActionSearchRequest, AuthzenEntity, AuthzenJson, ENTITY_HINT, SearchPage,
    SearchPageOut, SearchRequest, SearchResponse, TYPE_HINT, action_name, entity_id, entity_type,
    merged_context, present,
};
use super::{
    DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT, change_context, is_unknown, may_ask, principal_type,
    resource_ref, resource_type,
};
use crate::auth::Caller;
use crate::decisions::resolve_resource;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Which of the three searches: the place it varies, the shape of its
/// results, and the search a page token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchKind {
    Subject,
    Resource,
    Action,
}

impl SearchKind {
    fn as_str(self) -> &'static str {
        match self {
            SearchKind::Subject => "subject",
            SearchKind::Resource => "resource",
            SearchKind::Action => "action",
        }
    }
}

/// What a page token is bound to: the tenant, the search's kind and
/// everything it holds fixed (subject, action, resource, the resource's
/// properties and the context), as a short digest. A token from another
/// search (or another tenant's) would start this one at a position from
/// another list (or one filtered or decided otherwise).
fn query_digest(
    tenant: &str,
    kind: SearchKind,
    fixed: [&str; 5],
    properties: &Map<String, Value>,
    context: &Map<String, Value>,
) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(tenant);
    h.update([0]);
    h.update(kind.as_str());
    for part in fixed {
        h.update([0]);
        h.update(part);
    }
    for map in [properties, context] {
        let mut text = String::new();
        steward_core::approval::canonical(&Value::Object(map.clone()), &mut text);
        h.update([0]);
        h.update(text);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An opaque page token: the kind of search, its query's digest, its page
/// size and the position, hex-encoded.
fn encode_token(kind: SearchKind, query: &str, limit: usize, position: &str) -> String {
    format!("{}:{query}:{limit}:{position}", kind.as_str())
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The page size and position a token continues from.
fn decode_token(kind: SearchKind, query: &str, token: &str) -> Result<(usize, String), Error> {
    let bad = || {
        Error::invalid(
            "page.token",
            format!(
                "not a token from this {} search (a token continues the search that gave it, with the same subject, action, resource, resource properties and context)",
                kind.as_str()
            ),
        )
    };
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(4, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(k), Some(q), Some(limit), Some(position))
            if k == kind.as_str() && q == query && !position.is_empty() =>
        {
            // Only a limit a first page could have asked for.
            match limit.parse::<usize>() {
                Ok(limit) if (1..=MAX_SEARCH_LIMIT as usize).contains(&limit) => {
                    Ok((limit, position.to_string()))
                }
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

/// The page size and start position of a search. The token is `page.token`
/// (AuthZEN 1.0) or `page.next_token` (its drafts); a page after the first
/// keeps the first's size.
fn paging(
    kind: SearchKind,
    query: &str,
    page: Option<&SearchPage>,
) -> Result<(usize, Option<String>), Error> {
    let token = match page.map(|p| (p.token.as_deref(), p.next_token.as_deref())) {
        Some((Some(token), Some(draft))) if token != draft => {
            return Err(Error::invalid(
                "page.token",
                "page.token and page.next_token differ: send the next_token of the page before as page.token",
            ));
        }
        Some((Some(token), _) | (None, Some(token))) if !token.is_empty() => Some(token),
        _ => None,
    };
    let asked = page.and_then(|p| p.limit);
    if let Some(limit) = asked
        && (limit == 0 || limit > MAX_SEARCH_LIMIT)
    {
        return Err(Error::invalid(
            "page.limit",
            format!("{limit} is not between 1 and {MAX_SEARCH_LIMIT}"),
        ));
    }
    let Some(token) = token else {
        return Ok((asked.unwrap_or(DEFAULT_SEARCH_LIMIT) as usize, None));
    };
    let (limit, start) = decode_token(kind, query, token)?;
    match asked {
        Some(asked) if asked as usize != limit => Err(Error::invalid(
            "page.limit",
            format!(
                "{asked} is not the limit the search began with ({limit}): a page after the first keeps the first's limit (leave page.limit out)"
            ),
        )),
        _ => Ok((limit, Some(start))),
    }
}

/// A search request, validated. The place searched has only its `type`
/// (subject, resource) or nothing (action): its id or name is `None`.
struct SearchQuery {
    subject_type: String,
    subject_id: Option<String>,
    action: Option<String>,
    resource_type: String,
    resource_id: Option<String>,
    resource_properties: Map<String, Value>,
    context: Map<String, Value>,
    limit: usize,
    start: Option<String>,
    /// The digest page tokens are bound to ([`query_digest`]).
    query: String,
}

/// A search's subject or resource: its `type`, and its `id` unless it is
/// the place searched.
fn fixed_or_searched<'a>(
    entity: Option<&'a AuthzenEntity>,
    field: &str,
    searched: bool,
) -> Result<(&'a AuthzenEntity, String, Option<String>), Error> {
    let e = present(
        entity,
        field,
        if searched { TYPE_HINT } else { ENTITY_HINT },
    )?;
    let type_name = entity_type(e, field)?;
    let id = if searched {
        None
    } else {
        Some(entity_id(e, field)?)
    };
    Ok((e, type_name, id))
}

impl SearchQuery {
    /// Fields are checked in order: subject, action (not in an action
    /// search), resource, page.
    fn parse(kind: SearchKind, req: &SearchRequest, tenant: &str) -> Result<SearchQuery, Error> {
        let (_, subject_type, subject_id) =
            fixed_or_searched(req.subject.as_ref(), "subject", kind == SearchKind::Subject)?;
        let a = match kind {
            SearchKind::Action => None,
            _ => Some(present(req.action.as_ref(), "action", ACTION_HINT)?),
        };
        let action = a.map(action_name).transpose()?;
        let (r, resource_type, resource_id) = fixed_or_searched(
            req.resource.as_ref(),
            "resource",
            kind == SearchKind::Resource,
        )?;
        // Checked before anything is looked up or recorded (the search's
        // audit record holds them).
        let fixed = [
            ("subject.type", Some(&subject_type)),
            ("subject.id", subject_id.as_ref()),
            ("action.name", action.as_ref()),
            ("resource.type", Some(&resource_type)),
            ("resource.id", resource_id.as_ref()),
        ];
        for (field, value) in fixed {
            if let Some(v) = value {
                steward_core::validate::key(field, v)?;
            }
        }
        let resource_properties = r.properties.clone().unwrap_or_default();
        let context = merged_context(a, req.context.as_ref());
        let query = query_digest(
            tenant,
            kind,
            fixed.map(|(_, v)| v.map_or("", String::as_str)),
            &resource_properties,
            &context,
        );
        let (limit, start) = paging(kind, &query, req.page.as_ref())?;
        Ok(SearchQuery {
            query,
            subject_type,
            subject_id,
            action,
            resource_type,
            resource_id,
            resource_properties,
            context,
            limit,
            start,
        })
    }
}

/// Subject search needs an admin or pep token; the others are asked like
/// an evaluation.
fn may_search(caller: &Caller, kind: SearchKind) -> ApiResult<()> {
    if kind != SearchKind::Subject {
        return may_ask(caller);
    }
    if !matches!(caller, Caller::Token { .. }) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "subject search needs an admin or pep token; an agent asks only about itself",
        ));
    }
    caller.decider()
}

/// A lookup's result, with "Steward does not know it" as `None`: a search
/// for it finds nothing rather than failing.
fn known<T>(found: Result<T, Error>) -> Result<Option<T>, Error> {
    match found {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_unknown(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The subject chain a resource or action search holds fixed; `None` in a
/// subject search or when Steward does not know the subject.
async fn fixed_chain(
    state: &AppState,
    caller: &Caller,
    q: &SearchQuery,
) -> Result<Option<Vec<Subject>>, Error> {
    let Some(id) = &q.subject_id else {
        return Ok(None);
    };
    let Some(principal_type) = principal_type(&q.subject_type) else {
        // An agent's key asks about that agent only, whatever the type.
        if let Caller::Agent { agent, .. } = caller {
            crate::decisions::asks_about_itself(agent, &q.subject_type, id)?;
        }
        return Ok(None);
    };
    known(chain_of(state, caller, principal_type, id).await)
}

/// The resource a subject or action search holds fixed; `None` in a
/// resource search or when Steward does not know the resource. An agent
/// asking about an agent, person or team the tenant does not know searches
/// as a decision decides: over one that is not active, so that what it
/// finds never says whether the identity exists.
async fn fixed_resource(
    state: &AppState,
    caller: &Caller,
    engine: &Engine,
    q: &SearchQuery,
) -> Result<Option<EntityData>, Error> {
    let (Some(id), Some(resource_type)) = (&q.resource_id, resource_type(engine, &q.resource_type))
    else {
        return Ok(None);
    };
    let r = resource_ref(resource_type, id, &q.resource_properties);
    let found = known(resolve_resource(state, caller.tenant_id(), engine, &r).await)?;
    Ok(match (found, caller) {
        (None, Caller::Agent { .. }) => crate::decisions::unknown_identity(&r.resource_type, &r.id),
        (found, _) => found,
    })
}

/// Where a search's candidates come from and what it holds fixed (`chain`
/// and `resource` as resolved, `None` where unknown or searched for); `None`
/// when there is nothing to search: a subject or resource type Steward has no
/// candidates of, or a fixed subject or resource it does not know.
fn plan(
    kind: SearchKind,
    q: &SearchQuery,
    engine: &Engine,
    chain: Option<Vec<Subject>>,
    resource: Option<EntityData>,
) -> Option<(Source, Fixed)> {
    let action = q.action.clone();
    Some(match kind {
        SearchKind::Subject => (
            Source::subjects(&q.subject_type)?,
            Fixed::ActionAndResource {
                action: action?,
                resource: resource?,
            },
        ),
        SearchKind::Resource => {
            let resource_type = resource_type(engine, &q.resource_type)?;
            let source = Source::resources(&resource_type);
            let fixed = Fixed::SubjectAndAction {
                chain: chain?,
                action: action?,
                resource_type,
                filter: q.resource_properties.clone(),
            };
            (source, fixed)
        }
        SearchKind::Action => (
            Source::Actions,
            Fixed::SubjectAndResource {
                chain: chain?,
                resource: resource?,
            },
        ),
    })
}

/// One summary audit record per search request.
async fn record_search(
    state: &AppState,
    caller: &Caller,
    kind: SearchKind,
    req: &SearchRequest,
    examined: usize,
    results: &[Value],
    next_token: &str,
) -> Result<(), Error> {
    let event = AuditEvent {
        action: "decision.search".into(),
        resource_type: "authzen_search".into(),
        resource_id: kind.as_str().into(),
        before: None,
        after: Some(json!({
            "search": kind.as_str(),
            "subject": req.subject,
            "action": req.action,
            "resource": req.resource,
            "context": req.context,
            "examined": examined,
            "results": results,
            "next_token": next_token,
            "api": "authzen",
        })),
        reason: None,
    };
    state
        .audit
        .record(change_context(caller), event)
        .await
        .map(|_| ())
}

/// Every search: what the request holds fixed is resolved first (a subject,
/// resource or resource type Steward does not know finds nothing), then the
/// candidates for the place searched are scanned from the page token on.
async fn search(
    state: &AppState,
    caller: &Caller,
    kind: SearchKind,
    req: &SearchRequest,
) -> ApiResult<Json<SearchResponse>> {
    may_search(caller, kind)?;
    let tenant = caller.tenant_id();
    let q = SearchQuery::parse(kind, req, tenant)?;
    let engine = state.engines.get(&state.store, tenant).await?;
    let chain = fixed_chain(state, caller, &q).await?;
    let resource = fixed_resource(state, caller, &engine, &q).await?;
    let (ids, next, examined) = match plan(kind, &q, &engine, chain, resource) {
        Some((source, fixed)) => {
            let scan = Scan {
                state,
                caller,
                engine: &engine,
                context: q.context,
                fixed,
            };
            scan.run(&source, q.start, q.limit).await?
        }
        None => (Vec::new(), None, 0),
    };
    let results: Vec<Value> = ids
        .into_iter()
        .map(|id| match kind {
            SearchKind::Subject => json!({ "type": q.subject_type, "id": id }),
            SearchKind::Resource => json!({ "type": q.resource_type, "id": id }),
            SearchKind::Action => json!({ "name": id }),
        })
        .collect();
    let next_token = next
        .map(|n| encode_token(kind, &q.query, q.limit, &n))
        .unwrap_or_default();
    record_search(state, caller, kind, req, examined, &results, &next_token).await?;
    Ok(Json(SearchResponse {
        results,
        page: SearchPageOut { next_token },
    }))
}

/// Which subjects of `subject.type` (`user`/`human`: humans; `agent`:
/// agents) may do `action` on `resource`? Results are `{type, id}` with the
/// requested type; humans are named by external id, else e-mail; agents by
/// name. Needs an admin token. Paged with `page.next_token` and `page.limit`.
#[utoipa::path(post, path = "/access/v1/search/subject", tag = "authzen",
    request_body = SearchRequest,
    responses(
        (status = 200, body = SearchResponse),
        (status = 400, body = steward_types::ErrorBody),
        (status = 403, body = steward_types::ErrorBody)))]
pub async fn search_subject(
    State(state): State<AppState>,
    caller: Caller,
    AuthzenJson(req): AuthzenJson<SearchRequest>,
) -> ApiResult<Json<SearchResponse>> {
    search(&state, &caller, SearchKind::Subject, &req).await
}

/// Which resources of `resource.type` may `subject` do `action` on? Declared
/// types list the known resources (`POST /v1/entities`; `resource.properties`
/// keeps those whose stored attributes equal them); `agent`, `human`/`user`
/// and `team` list the inventory. Paged with `page.next_token` and
/// `page.limit`.
#[utoipa::path(post, path = "/access/v1/search/resource", tag = "authzen",
    request_body = SearchRequest,
    responses(
        (status = 200, body = SearchResponse),
        (status = 400, body = steward_types::ErrorBody),
        (status = 403, body = steward_types::ErrorBody)))]
pub async fn search_resource(
    State(state): State<AppState>,
    caller: Caller,
    AuthzenJson(req): AuthzenJson<SearchRequest>,
) -> ApiResult<Json<SearchResponse>> {
    search(&state, &caller, SearchKind::Resource, &req).await
}

/// Which declared actions may `subject` do on `resource`? Results are
/// `{name}` in name order. Paged with `page.next_token` and `page.limit`.
#[utoipa::path(post, path = "/access/v1/search/action", tag = "authzen",
    request_body = SearchRequest,
    responses(
        (status = 200, body = SearchResponse),
        (status = 400, body = steward_types::ErrorBody),
        (status = 403, body = steward_types::ErrorBody)))]
pub async fn search_action(
    State(state): State<AppState>,
    caller: Caller,
    AuthzenJson(ActionSearchRequest(req)): AuthzenJson<ActionSearchRequest>,
) -> ApiResult<Json<SearchResponse>> {
    search(&state, &caller, SearchKind::Action, &req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_search() {
        let none = Map::new();
        let digest = |tenant: &str, subject: &str| {
            query_digest(
                tenant,
                SearchKind::Resource,
                ["user", subject, "read", "todo", ""],
                &none,
                &none,
            )
        };
        let q = digest("default", "rick");
        let t = encode_token(SearchKind::Resource, &q, 7, "todo:1");
        assert_eq!(
            decode_token(SearchKind::Resource, &q, &t).ok(),
            Some((7, "todo:1".to_string()))
        );
        assert!(decode_token(SearchKind::Subject, &q, &t).is_err());
        // The same kind of search with another fixed subject.
        let other = digest("default", "morty");
        assert_ne!(q, other);
        assert!(decode_token(SearchKind::Resource, &other, &t).is_err());
        // The same search in another tenant.
        let elsewhere = digest("t2", "rick");
        assert!(decode_token(SearchKind::Resource, &elsewhere, &t).is_err());
        // A limit no first page could have asked for.
        for limit in [0, MAX_SEARCH_LIMIT as usize + 1, 100_000] {
            let edited = encode_token(SearchKind::Resource, &q, limit, "todo:1");
            assert!(decode_token(SearchKind::Resource, &q, &edited).is_err());
        }
        assert!(decode_token(SearchKind::Resource, &q, "zz").is_err());
        assert!(decode_token(SearchKind::Resource, &q, "abc").is_err());
        assert!(decode_token(SearchKind::Action, &q, "").is_err());
    }

    /// A page after the first is asked for with `page.token` (AuthZEN 1.0)
    /// or `page.next_token` (its drafts), and keeps the first page's size.
    #[test]
    fn later_pages_take_either_spelling_and_keep_the_first_limit() {
        let none = Map::new();
        let q = query_digest(
            "default",
            SearchKind::Subject,
            ["user", "", "read", "todo", "1"],
            &none,
            &none,
        );
        let t = encode_token(SearchKind::Subject, &q, 3, "hum_b");
        let page = |token: Option<&str>, next_token: Option<&str>, limit: Option<u32>| SearchPage {
            token: token.map(str::to_string),
            next_token: next_token.map(str::to_string),
            limit,
        };
        let paged = |p: SearchPage| paging(SearchKind::Subject, &q, Some(&p));
        let second = Some("hum_b".to_string());
        assert_eq!(
            paged(page(Some(&t), None, None)).ok(),
            Some((3, second.clone()))
        );
        assert_eq!(
            paged(page(None, Some(&t), None)).ok(),
            Some((3, second.clone()))
        );
        assert_eq!(
            paged(page(Some(&t), Some(&t), Some(3))).ok(),
            Some((3, second))
        );
        assert_eq!(paged(page(Some(""), None, Some(9))).ok(), Some((9, None)));
        assert_eq!(paging(SearchKind::Subject, &q, None).ok(), Some((50, None)));
        for refused in [
            page(Some(&t), None, Some(4)),
            page(Some(&t), Some("other"), None),
            page(None, None, Some(0)),
            page(None, None, Some(MAX_SEARCH_LIMIT + 1)),
        ] {
            assert!(paged(refused.clone()).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn tokens_are_bound_to_properties_and_context_in_any_key_order() {
        let fixed = ["user", "rick", "", "todo", "t1"];
        let map = |v: Value| v.as_object().cloned().unwrap_or_default();
        let digest = |p: Value, c: Value| {
            query_digest("default", SearchKind::Action, fixed, &map(p), &map(c))
        };
        let base = digest(
            json!({"a": 1, "b": {"x": [1, {"q": 1, "p": 2}], "y": "s"}}),
            json!({"reason": "audit", "n": 2}),
        );
        // The same query with its keys in another order, at any depth.
        let reordered: Value =
            serde_json::from_str(r#"{"b": {"y": "s", "x": [1, {"p": 2, "q": 1}]}, "a": 1}"#)
                .unwrap_or_default();
        let context: Value =
            serde_json::from_str(r#"{"n": 2, "reason": "audit"}"#).unwrap_or_default();
        assert_eq!(digest(reordered, context), base);
        // Another value, key or place is another query.
        for (p, c) in [
            (
                json!({"a": 2, "b": {"x": [1, {"q": 1, "p": 2}], "y": "s"}}),
                json!({"reason": "audit", "n": 2}),
            ),
            (json!({"a": 1}), json!({"reason": "audit", "n": 2})),
            (
                json!({"a": 1, "b": {"x": [1, {"q": 1, "p": 2}], "y": "s"}}),
                json!({"reason": "other", "n": 2}),
            ),
            (
                json!({"a": 1, "b": {"x": [1, {"q": 1, "p": 2}], "y": "s"}}),
                json!({}),
            ),
            (
                json!({}),
                json!({"a": 1, "b": {"x": [1, {"q": 1, "p": 2}], "y": "s"}, "reason": "audit", "n": 2}),
            ),
        ] {
            assert_ne!(digest(p.clone(), c.clone()), base, "{p} {c}");
        }
        let t = encode_token(SearchKind::Action, &base, 50, "can_read");
        let other = digest(json!({}), json!({}));
        assert!(decode_token(SearchKind::Action, &other, &t).is_err());
    }
}
