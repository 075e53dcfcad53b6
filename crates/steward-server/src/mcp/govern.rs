//! What Steward decides and records about MCP traffic: a tool call is a
//! decision (`call_tool` on `Tool::"server/tool"`, arguments in the
//! context); a listing keeps what the agent may use; every call's outcome
//! goes to the audit log through [`report_outcome`].

use std::collections::HashSet;

use serde_json::{Map, Value, json};
use steward_core::{AuditEvent, Error};
use steward_policy::DecisionInput;
use steward_types::{
    Decision, DecisionRequest, DecisionResponse, MCP_CALL_TOOL, MCP_GET_PROMPT, MCP_PROMPT_TYPE,
    MCP_READ_RESOURCE, MCP_RESOURCE_TYPE, MCP_TOOL_TYPE, McpDecisionRecord, McpServer, ResourceRef,
};

use super::GatewayCall;
use crate::audit_log::Recording;
use crate::auth::Caller;
use crate::decisions;
use crate::state::AppState;

/// What an agent reaches through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tool,
    Prompt,
    Resource,
    /// A resource template (`uriTemplate`): read as a resource is.
    Template,
}

impl Kind {
    fn resource_type(self) -> &'static str {
        match self {
            Kind::Tool => MCP_TOOL_TYPE,
            Kind::Prompt => MCP_PROMPT_TYPE,
            Kind::Resource | Kind::Template => MCP_RESOURCE_TYPE,
        }
    }

    fn action(self) -> &'static str {
        match self {
            Kind::Tool => MCP_CALL_TOOL,
            Kind::Prompt => MCP_GET_PROMPT,
            Kind::Resource | Kind::Template => MCP_READ_RESOURCE,
        }
    }

    pub(crate) fn noun(self) -> &'static str {
        match self {
            Kind::Tool => "tool",
            Kind::Prompt => "prompt",
            Kind::Resource => "resource",
            Kind::Template => "resource template",
        }
    }
}

/// The policy resource for `name` (a tool, prompt or resource URI) of `server`:
/// `Tool::"server/tool"` carries the registered metadata as attributes.
pub(crate) fn resource(server: &McpServer, kind: Kind, name: &str) -> ResourceRef {
    let mut attributes: std::collections::BTreeMap<String, Value> =
        [("server".to_string(), Value::from(server.name.clone()))].into();
    match kind {
        Kind::Tool => {
            let meta = server.tools.get(name).cloned().unwrap_or_default();
            attributes.insert("name".into(), name.into());
            attributes.insert("classification".into(), meta.classification.into());
            attributes.insert("risk".into(), meta.risk.into());
            attributes.insert("cost_estimate".into(), meta.cost_estimate.into());
        }
        Kind::Prompt => {
            attributes.insert("name".into(), name.into());
        }
        Kind::Resource | Kind::Template => {
            attributes.insert("uri".into(), name.into());
        }
    }
    ResourceRef {
        resource_type: kind.resource_type().into(),
        id: format!("{}/{name}", server.name),
        attributes,
    }
}

/// Why a call was not made, worded for the model and the person behind it.
pub(crate) enum Refusal {
    /// The decision said no (or not yet); the text names the decision.
    Decided(String),
    /// The arguments cannot be checked against the policies.
    Arguments(String),
}

/// A call Steward allowed.
pub(crate) struct Allowed {
    /// The decision's id.
    pub decision_id: String,
    /// Whether the decision reserved quota, which the outcome settles.
    pub reserved: bool,
    /// The decision's record, when it is written while the call runs (the
    /// server's `decision_record = "with_call"`); the answer waits for it.
    pub recording: Option<Recording>,
}

/// Whether a call of `kind` `name` may go upstream while its decision
/// record commits: a tool call on a server that asks for it, of a tool not
/// registered as high risk. Its risk as the policies saw it must not be
/// high either (see [`not_high_risk`]); quotas and approvals commit first
/// all the same (`decisions::decide_queued`).
fn record_with_call(server: &McpServer, kind: Kind, name: &str) -> bool {
    kind == Kind::Tool
        && server.decision_record == McpDecisionRecord::WithCall
        && server.tools.get(name).is_none_or(|m| m.risk != "high")
}

/// The `risk` of the tool a decision was about, as its policies saw it: a
/// stored `Tool` entity's overrides the registration's.
fn not_high_risk(input: &DecisionInput) -> bool {
    input.resource.attrs.get("risk").and_then(Value::as_str) != Some("high")
}

/// Decide a call of `kind` `name` with `arguments`. `Ok(Ok(_))` allows it.
pub(crate) async fn decide_call(
    call: &GatewayCall,
    kind: Kind,
    name: &str,
    arguments: &Map<String, Value>,
) -> Result<Result<Allowed, Refusal>, Error> {
    let state = &call.state;
    let engine = state
        .engines
        .get(&state.store, call.caller.tenant_id())
        .await?;
    let declared = engine
        .action(kind.action())
        .and_then(|a| a.context.get("arguments"))
        .map(String::as_str);
    let mut context = Map::new();
    match super::arguments::for_policies(declared, arguments) {
        Ok(Some(args)) => {
            context.insert("arguments".into(), args);
        }
        Ok(None) => {}
        Err(why) => {
            return Ok(Err(Refusal::Arguments(format!(
                "Steward refused this call of {} '{name}' on '{}': {why}.",
                kind.noun(),
                call.server.name
            ))));
        }
    }
    // A tool's registered cost estimate (millionths of the currency) is
    // reserved against cost quotas, in each one's own currency; the
    // response size settles bytes quotas.
    let cost = match kind {
        Kind::Tool => call
            .server
            .tools
            .get(name)
            .map_or(0, |m| m.cost_estimate.max(0)),
        _ => 0,
    };
    let request = DecisionRequest {
        principal: None,
        action: kind.action().into(),
        resource: resource(&call.server, kind, name),
        context,
        on_behalf_of: call.on_behalf_of.clone(),
        estimate: (cost > 0).then(|| steward_types::UsageEstimate {
            cost: Some(cost as f64 / steward_core::quota::COST_SCALE as f64),
            in_each_quotas_currency: true,
            ..Default::default()
        }),
        call_arguments: Some(arguments.clone()),
    };
    let (response, recording) = if record_with_call(&call.server, kind, name) {
        decisions::decide_queued(state, &call.caller, request, not_high_risk).await?
    } else {
        (decisions::decide(state, &call.caller, request).await?, None)
    };
    Ok(match response.decision {
        // A reservation reports where its tightest quota stands; a decision
        // no quota applied to reserved nothing.
        Decision::Allow => Ok(Allowed {
            reserved: response.quota.is_some(),
            decision_id: response.decision_id,
            recording,
        }),
        _ => Err(Refusal::Decided(refusal_text(
            &response,
            &call.server,
            kind,
            name,
        ))),
    })
}

/// A denial or an approval to wait for, as text a model can relay and a
/// person can act on.
fn refusal_text(r: &DecisionResponse, server: &McpServer, kind: Kind, name: &str) -> String {
    let what = format!(
        "the {} '{name}' on MCP server '{}'",
        kind.noun(),
        server.name
    );
    let mut out = match r.decision {
        Decision::ApprovalRequired => {
            format!("Steward holds this call of {what}: it needs a person's approval first.")
        }
        _ => format!("Steward denied this call of {what}."),
    };
    if let Some(rem) = &r.remediation {
        if !rem.message.is_empty() {
            out.push(' ');
            out.push_str(&rem.message);
        }
        if !rem.forbidden_by.is_empty() {
            let rules: Vec<String> = rem
                .forbidden_by
                .iter()
                .map(|p| {
                    let mut s = format!("'{}'", p.id);
                    if !p.description.is_empty() {
                        s.push_str(&format!(" ({})", p.description));
                    }
                    if !p.owner.is_empty() {
                        s.push_str(&format!(", owned by {}", p.owner));
                    }
                    s
                })
                .collect();
            out.push_str(&format!(" Forbidden by {}.", rules.join("; ")));
        }
        if !rem.roles_that_allow.is_empty() {
            out.push_str(&format!(
                " Roles that would allow it: {}.",
                rem.roles_that_allow.join(", ")
            ));
        }
        if !rem.personas_that_allow.is_empty() {
            out.push_str(&format!(
                " Personas that would allow it: {}.",
                rem.personas_that_allow.join(", ")
            ));
        }
    }
    // The approval (when the approvals layer adds one) is rendered as given.
    if let Ok(Value::Object(fields)) = serde_json::to_value(r)
        && let Some(approval) = fields.get("approval").filter(|a| !a.is_null())
    {
        let id = approval
            .get("id")
            .and_then(Value::as_str)
            .map(|id| format!(" {id}"))
            .unwrap_or_default();
        out.push_str(&format!(
            " Approval{id}: {approval}. Once it is approved, make the same call again."
        ));
    } else if r.decision == Decision::ApprovalRequired {
        out.push_str(" Ask an approver, then make the same call again.");
    }
    if r.decision == Decision::Deny
        && r.remediation
            .as_ref()
            .is_none_or(|m| m.roles_that_allow.is_empty())
    {
        out.push_str(" To get access, ask the owner of the policy or of this agent.");
    }
    out.push_str(&format!(" (decision {})", r.decision_id));
    out
}

/// Which of `names` the caller may use; one summary audit entry.
pub(crate) async fn visible(
    call: &GatewayCall,
    kind: Kind,
    names: &[String],
) -> Result<HashSet<String>, Error> {
    let allowed = allowed(call, kind, names).await?;
    let mut shown: Vec<&String> = allowed.iter().collect();
    shown.sort();
    let after = json!({
        "server": call.server.name,
        "agent": agent_name(&call.caller),
        "on_behalf_of": call.on_behalf_of,
        "offered": names.len(),
        "shown": shown,
    });
    let action = format!("mcp.list_{}s", kind.noun().replace(' ', "_"));
    record_summary(call, action, after).await?;
    Ok(allowed)
}

/// Which of the resources `uris` whose contents an answer to `method` on
/// `requested` holds the caller may read: a directory's resource can hold
/// its files, a tool's or a prompt's answer can embed resources, each one a
/// policy may name. (The resource a read asked for was decided before the
/// read, and is not among them.) One audit entry says what was passed on
/// and what was withheld.
pub(crate) async fn readable_contents(
    call: &GatewayCall,
    method: &str,
    requested: &str,
    uris: &[String],
) -> Result<HashSet<String>, Error> {
    let allowed = allowed(call, Kind::Resource, uris).await?;
    let (mut shown, mut withheld): (Vec<&String>, Vec<&String>) =
        uris.iter().partition(|u| allowed.contains(*u));
    shown.sort();
    withheld.sort();
    let after = json!({
        "server": call.server.name,
        "agent": agent_name(&call.caller),
        "on_behalf_of": call.on_behalf_of,
        "method": method,
        "requested": requested,
        "shown": shown,
        "withheld": withheld,
    });
    record_summary(call, "mcp.resource_contents".into(), after).await?;
    Ok(allowed)
}

/// An audit entry about what the gateway passed on from `call.server`.
async fn record_summary(call: &GatewayCall, action: String, after: Value) -> Result<(), Error> {
    let event = AuditEvent {
        action,
        resource_type: "mcp_server".into(),
        resource_id: call.server.id.clone(),
        before: None,
        after: Some(after),
        reason: None,
    };
    call.state
        .audit
        .record(call.caller.context(), event)
        .await?;
    Ok(())
}

/// Which of `names` of `kind` the policies let the caller (along its
/// chain) use; a name that cannot be decided is not.
async fn allowed(
    call: &GatewayCall,
    kind: Kind,
    names: &[String],
) -> Result<HashSet<String>, Error> {
    let state = &call.state;
    let tenant = call.caller.tenant_id();
    let engine = state.engines.get(&state.store, tenant).await?;
    let chain =
        decisions::resolve_chain(state, &call.caller, None, call.on_behalf_of.as_deref()).await?;
    let mut allowed = HashSet::new();
    for name in names {
        let resource = decisions::resolve_resource(
            state,
            tenant,
            &engine,
            &resource(&call.server, kind, name),
        )
        .await;
        let Ok(resource) = resource else {
            continue;
        };
        let input = DecisionInput {
            chain: chain.clone(),
            action: kind.action().into(),
            resource,
            context: Map::new(),
        };
        if engine
            .decide(&input)
            .is_ok_and(|o| o.decision == Decision::Allow)
        {
            allowed.insert(name.clone());
        }
    }
    Ok(allowed)
}

fn agent_name(caller: &Caller) -> Option<String> {
    match caller {
        Caller::Agent { agent, .. } => Some(agent.name.clone()),
        Caller::Token { .. } => None,
    }
}

/// What happened to a tool call Steward let through (or refused before
/// asking the upstream).
#[derive(Debug, Clone)]
pub struct CallOutcome {
    /// Upstream server name.
    pub server: String,
    /// Tool name.
    pub tool: String,
    /// `success`, `error` (the tool or the upstream failed) or `refused`.
    pub outcome: &'static str,
    /// Bytes of the result as JSON (0 when there was none).
    pub response_bytes: usize,
    /// The error, when there was one.
    pub error: Option<String>,
    /// Milliseconds the upstream took.
    pub duration_ms: u64,
}

/// Most of an upstream's error text an outcome record keeps.
const MAX_ERROR_TEXT: usize = 2048;

/// Text from elsewhere as a record may hold it: no NUL (PostgreSQL refuses
/// one, and one refused record fails its whole group commit), at most
/// [`MAX_ERROR_TEXT`] bytes, cut on a character boundary.
fn record_text(text: &str) -> String {
    let mut out: String = text.chars().filter(|c| *c != '\0').collect();
    if out.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// How long a call's outcome record, written after its answer, waits to
/// ride with another record's commit (typically the client's next call)
/// before it is committed alone: a commit of its own would hold up that
/// next call's decision record, which must be durable before its call
/// goes upstream.
const OUTCOME_LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// Record a tool call's outcome: the one place the gateway reports what a
/// call did. Its quota reservation (`reserved`: a quota applied to the
/// decision) settles on the same report: the estimate for cost, the response
/// size for bytes. Once its caller has been `answered`, the record lingers
/// for [`OUTCOME_LINGER`] to share a commit (less if the server stops).
pub async fn report_outcome(
    state: &AppState,
    caller: &Caller,
    decision_id: Option<&str>,
    reserved: bool,
    outcome: &CallOutcome,
    answered: bool,
) -> Result<(), Error> {
    // An upstream's error text is the upstream's: kept to what a record holds.
    let error = outcome.error.as_deref().map(record_text);
    let event = AuditEvent {
        action: "mcp.tool_call".into(),
        resource_type: MCP_TOOL_TYPE.into(),
        resource_id: format!("{}/{}", outcome.server, outcome.tool),
        before: None,
        after: Some(json!({
            "decision_id": decision_id,
            "agent": agent_name(caller),
            "server": outcome.server,
            "tool": outcome.tool,
            "outcome": outcome.outcome,
            "response_bytes": outcome.response_bytes,
            "duration_ms": outcome.duration_ms,
            "error": error,
        })),
        reason: error,
    };
    let recording = state.audit.queue_record(caller.context(), event).await?;
    if answered {
        // Not past the start of a shutdown, which then waits for it.
        let linger = async {
            tokio::select! {
                () = tokio::time::sleep(OUTCOME_LINGER) => {}
                () = state.mcp.stopping() => {}
            }
        };
        recording.wait_lingering(linger).await?;
    } else {
        recording.wait().await?;
    }
    match decision_id.filter(|_| reserved) {
        Some(decision_id) => {
            let status = if outcome.outcome == "success" {
                "success"
            } else {
                "error"
            };
            let error = outcome.error.as_deref();
            settle(
                state,
                caller,
                decision_id,
                status,
                outcome.response_bytes,
                error,
            )
            .await
        }
        None => Ok(()),
    }
}

/// Settle the quota reservation of the allowed request `decision_id` with
/// what its answer came to: its `status` (`success` or `error`), and its
/// size in bytes against `bytes` quotas (the cost settles at the
/// estimate). The one place the gateway settles: a tool call's through
/// [`report_outcome`], a read's (a resource, a prompt, a completion, a
/// subscription) once it is answered. The store records the settlement
/// (`decision.outcome`).
pub(crate) async fn settle(
    state: &AppState,
    caller: &Caller,
    decision_id: &str,
    status: &str,
    response_bytes: usize,
    error: Option<&str>,
) -> Result<(), Error> {
    let settled = steward_types::Outcome {
        status: Some(status.into()),
        bytes: Some(response_bytes as u64),
        detail: error.map(record_text),
        ..Default::default()
    };
    let principal = match caller {
        Caller::Agent { agent, .. } => Some(agent.id.as_str()),
        Caller::Token { .. } => None,
    };
    match state
        .store
        .settle(&caller.context(), decision_id, principal, &settled)
        .await
    {
        // No quota applied to the call: nothing was reserved.
        Err(e) if e.code == steward_types::ErrorCode::NotFound => Ok(()),
        other => other.map(|_| ()),
    }
}

/// The schemes the WHATWG URL standard (which Node's `URL`, and so most MCP
/// servers, follow) reads in its own way: `\` as `/`, the host in lower
/// case, the default port dropped, `file:/x` as `file:///x`.
const SPECIAL_SCHEMES: [&str; 6] = ["file", "ftp", "http", "https", "ws", "wss"];

/// A resource URI as an upstream reads it. Leading and trailing spaces and
/// control characters go, as a WHATWG parser drops them. A URL of a special
/// scheme (`file`, `http`, ...) is then written as that parser (the `url`
/// crate) writes it: host in lower case, default port dropped, `\` as
/// `/`, no dot segments (`%2e` is a dot too), spaces and the like
/// percent-encoded. Any other URI (RFC 3986 §6.2.2) gets its scheme in lower
/// case and its path without dot segments, and keeps the rest as sent.
pub(crate) fn canonical_uri(uri: &str) -> String {
    let trimmed = uri.trim_matches(|c: char| c <= ' ');
    let decoded = decoded_path(trimmed);
    let uri = decoded.as_str();
    let Some((scheme, rest)) = uri.split_once(':').filter(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    }) else {
        return uri.to_string();
    };
    let scheme = scheme.to_ascii_lowercase();
    let special = SPECIAL_SCHEMES.contains(&scheme.as_str());
    if special && let Ok(url) = url::Url::parse(uri) {
        return url.into();
    }
    // Not a URL a WHATWG parser takes (so not one an upstream could read
    // as one either): decided as any other URI, `\` still read as `/`.
    let slashed;
    let rest = if special && rest.contains('\\') {
        let end = rest.find(['?', '#']).unwrap_or(rest.len());
        slashed = format!("{}{}", rest[..end].replace('\\', "/"), &rest[end..]);
        slashed.as_str()
    } else {
        rest
    };
    let (authority, rest) = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            (Some(&after[..end]), &after[end..])
        }
        None => (None, rest),
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let (path, tail) = rest.split_at(end);
    let mut out = scheme;
    out.push(':');
    if let Some(authority) = authority {
        out.push_str("//");
        out.push_str(authority);
    }
    out.push_str(&without_dot_segments(path));
    out.push_str(tail);
    out
}

/// A resource template (`uriTemplate`, RFC 6570) in the spelling
/// [`canonical_uri`] gives a URI: its literal text canonical, each `{...}`
/// expression kept as it is (a WHATWG parser would percent-encode the
/// braces of one in a `file:` path, and an upstream knows its templates by
/// their own text). So `DEMO://a/./{id}` is `demo://a/{id}`, and
/// `file:///srv/./{name}` is `file:///srv/{name}`. `None` for a template
/// whose expressions do not come through whole (a dot segment after one
/// drops it, or the text already holds what stands in for one): it is not
/// decided.
pub(crate) fn canonical_template(template: &str) -> Option<String> {
    // Each expression stands in as a word that `canonical_uri` leaves as
    // it is, in a path or a host alike.
    const HOLDER: &str = "stewardexpression";
    if template.to_ascii_lowercase().contains(HOLDER) {
        return None;
    }
    let holder = |i: usize| format!("{HOLDER}{i}{HOLDER}");
    let mut expressions = Vec::new();
    let mut literal = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(length) = rest[open..].find('}') else {
            break;
        };
        let end = open + length + 1;
        literal.push_str(&rest[..open]);
        literal.push_str(&holder(expressions.len()));
        expressions.push(&rest[open..end]);
        rest = &rest[end..];
    }
    literal.push_str(rest);
    let mut canonical = canonical_uri(&literal);
    for (i, expression) in expressions.iter().enumerate() {
        let holder = holder(i);
        if canonical.matches(&holder).count() != 1 {
            return None;
        }
        canonical = canonical.replacen(&holder, expression, 1);
    }
    Some(canonical)
}

/// `uri` with the escapes in its path an upstream would read as plain
/// characters decoded, before anything is decided on it: unreserved ones
/// (RFC 3986 §6.2.2.2: `%73` is `s`, so `secret` cannot hide as
/// `%73ecret`), and `%2F` and `%5C` as the `/` and `\` a server that
/// decodes its path would see (so `..%2F` climbs in the decision as it
/// would in the upstream). The query and fragment are left as sent.
fn decoded_path(uri: &str) -> String {
    let end = uri.find(['?', '#']).unwrap_or(uri.len());
    let (path, tail) = uri.split_at(end);
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(uri.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b'\\')
            });
        match escaped {
            Some(b) => {
                out.push(char::from(b));
                i += 3;
            }
            None => {
                let c = path[i..].chars().next().unwrap_or_default();
                out.push(c);
                i += c.len_utf8().max(1);
            }
        }
    }
    out.push_str(tail);
    out
}

/// RFC 3986 §5.2.4, on whole segments; `%2e` counts as `.`.
fn without_dot_segments(path: &str) -> String {
    /// How many dots a segment is, if it is only dots (one or two).
    fn dots(segment: &str) -> Option<usize> {
        match segment.to_ascii_lowercase().replace("%2e", ".").as_str() {
            "." => Some(1),
            ".." => Some(2),
            _ => None,
        }
    }
    let (root, relative) = match path.strip_prefix('/') {
        Some(rest) => ("/", rest),
        None => ("", path),
    };
    let segments: Vec<&str> = relative.split('/').collect();
    if segments.iter().all(|s| dots(s).is_none()) {
        return path.to_string();
    }
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        match dots(segment) {
            None => kept.push(segment),
            Some(n) => {
                if n == 2 {
                    kept.pop();
                }
                // A dot segment at the end leaves the path ending in a slash.
                if i + 1 == segments.len() {
                    kept.push("");
                }
            }
        }
    }
    format!("{root}{}", kept.join("/"))
}

#[cfg(test)]
mod tests {
    use super::canonical_uri;

    #[test]
    fn resource_uris_are_read_in_one_spelling() {
        for (sent, read) in [
            (
                "demo://resource/dynamic/text/1",
                "demo://resource/dynamic/text/1",
            ),
            // Escapes a decoding upstream reads as plain characters are
            // decided as those characters; others, and the query, as sent.
            (
                "file:///srv/data/%73ecret.txt",
                "file:///srv/data/secret.txt",
            ),
            ("file:///srv/pub/..%2F..%2Fetc/passwd", "file:///etc/passwd"),
            ("file:///srv/pub/..%5c..%5Cetc/passwd", "file:///etc/passwd"),
            ("demo://r/%7Euser/%41/..%2fb", "demo://r/~user/b"),
            ("demo://r/a%3Fb?q=%73", "demo://r/a%3Fb?q=%73"),
            ("demo://r/%zz/%4", "demo://r/%zz/%4"),
            ("demo://r/caf%C3%A9", "demo://r/caf%C3%A9"),
            (
                "DEMO://resource/dynamic/text/1",
                "demo://resource/dynamic/text/1",
            ),
            (
                "Demo://resource/dynamic/./text/2",
                "demo://resource/dynamic/text/2",
            ),
            (
                "demo://resource/dynamic/blob/../text/1",
                "demo://resource/dynamic/text/1",
            ),
            (
                "demo://resource/dynamic/blob/%2E%2e/text/1",
                "demo://resource/dynamic/text/1",
            ),
            ("file:///tmp/a/../../../etc/passwd", "file:///etc/passwd"),
            ("file:///tmp/a/..", "file:///tmp/"),
            (
                "file:///tmp/a b?x=/../y#/./z",
                "file:///tmp/a%20b?x=/../y#/./z",
            ),
            ("urn:isbn:0451450523", "urn:isbn:0451450523"),
            ("not a uri/../x", "not a uri/../x"),
            ("mem:a/./b/../c", "mem:a/c"),
            ("demo://HOST/x", "demo://HOST/x"),
            // A WHATWG parser reads `\` as `/` in special schemes only.
            (
                r"file:///srv/pub/..\priv\secret.txt",
                "file:///srv/priv/secret.txt",
            ),
            (
                r"FILE:///srv/pub/%2e%2e\priv/s?q=\..",
                r"file:///srv/priv/s?q=\..",
            ),
            (r"http:\\host\a\..\b", "http://host/b"),
            (r"demo://a/b\..\c", r"demo://a/b\..\c"),
            // Other spellings a WHATWG parser reads as one URL.
            (
                "http://EXAMPLE.com:80/secret/a",
                "http://example.com/secret/a",
            ),
            ("http:example.com/secret/d", "http://example.com/secret/d"),
            ("file:/tmp/secret/f", "file:///tmp/secret/f"),
            ("HTTPS://x.example:443/./a", "https://x.example/a"),
            (
                " demo://resource/dynamic/blob/3\n",
                "demo://resource/dynamic/blob/3",
            ),
        ] {
            assert_eq!(canonical_uri(sent), read, "{sent}");
        }
    }

    use super::canonical_template;

    #[test]
    fn resource_templates_are_read_in_one_spelling_with_their_expressions() {
        for (sent, read) in [
            (
                "demo://resource/dynamic/text/{resourceId}",
                Some("demo://resource/dynamic/text/{resourceId}"),
            ),
            ("DEMO://shelf/./{item}", Some("demo://shelf/{item}")),
            (
                "file:///srv/./shelf/{item}",
                Some("file:///srv/shelf/{item}"),
            ),
            (
                "file:///srv/%73helf/{+path}{?q,r}",
                Some("file:///srv/shelf/{+path}{?q,r}"),
            ),
            ("HTTP://{host}/a/../b/{id}", Some("http://{host}/b/{id}")),
            (
                "demo://shelf/x/../../other/{item}",
                Some("demo://shelf/other/{item}"),
            ),
            ("demo://a/{b/c}/d", Some("demo://a/{b/c}/d")),
            // A brace that opens no expression is text, as in a URI.
            ("demo://a/{b", Some("demo://a/{b")),
            ("file:///a/{b", Some("file:///a/%7Bb")),
            // An expression a dot segment drops cannot be decided on.
            ("demo://a/{b}/../c", None),
            ("demo://a/stewardExpression0stewardexpression/{b}", None),
        ] {
            assert_eq!(canonical_template(sent).as_deref(), read, "{sent}");
        }
    }

    use super::{MAX_ERROR_TEXT, record_text};

    #[test]
    fn upstream_text_is_kept_to_what_a_record_holds() {
        assert_eq!(record_text("plain"), "plain");
        assert_eq!(record_text("a\0b"), "ab");
        let long = "é".repeat(MAX_ERROR_TEXT);
        let kept = record_text(&long);
        assert!(kept.len() <= MAX_ERROR_TEXT + '…'.len_utf8());
        assert!(kept.ends_with('…') && kept.starts_with("éé"));
    }
}
