//! `steward check`: ask for a decision as an enforcement point would, and
//! explain the answer in plain words: the decision, the policies that made
//! it, how each identity of the delegation chain fared and, for a denial,
//! what a person can do about it.
//!
//! Exit codes: 0 allow, 3 deny, 4 approval required (1 for errors, 2 for
//! usage errors), so scripts can branch on the answer.

use anyhow::bail;
use clap::{ArgGroup, Args};
use serde_json::{Map, Value};
use steward_types::{
    Decision, DecisionRequest, DecisionResponse, DeterminingPolicy, PrincipalRef, ResourceRef,
};

use super::Ctx;
use crate::output;

/// Exit code of a denial.
pub const EXIT_DENY: u8 = 3;
/// Exit code of an answer that needs a human's approval first.
pub const EXIT_APPROVAL_REQUIRED: u8 = 4;

/// `steward check`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("principal").required(true).args(["agent", "human"])))]
pub struct CheckArgs {
    /// The agent asking: id or name.
    #[arg(long, value_name = "NAME_OR_ID")]
    pub agent: Option<String>,
    /// The human asking: e-mail, id or external id.
    #[arg(long, value_name = "EMAIL")]
    pub human: Option<String>,
    /// The action, as declared (`steward actions list`).
    #[arg(long)]
    pub action: String,
    /// The resource as TYPE:ID (`repository:payments-api`).
    #[arg(long, value_name = "TYPE:ID", value_parser = parse_resource)]
    pub resource: (String, String),
    /// A resource attribute for this request (repeatable). The value is read
    /// as JSON when it parses (`12`, `true`, `["a","b"]`), else as a string.
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_value)]
    pub attributes: Vec<(String, Value)>,
    /// A context value (repeatable), read like --attr.
    #[arg(long = "context", value_name = "KEY=VALUE", value_parser = parse_value)]
    pub context: Vec<(String, Value)>,
    /// The human the agent acts for: e-mail, id or external id.
    #[arg(long, value_name = "EMAIL")]
    pub on_behalf_of: Option<String>,
}

/// The answer was not "allow": ends the command with its exit code once the
/// explanation is printed.
#[derive(Debug)]
pub struct Refusal(pub u8);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request was not allowed (exit code {})", self.0)
    }
}

impl std::error::Error for Refusal {}

/// The exit code an error ends `steward` with, when it is a [`Refusal`].
pub fn refusal_code(err: &anyhow::Error) -> Option<u8> {
    err.downcast_ref::<Refusal>().map(|r| r.0)
}

/// Split `TYPE:ID` at the first colon (the id may hold more).
fn parse_resource(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((t, id)) if !t.is_empty() && !id.is_empty() => Ok((t.to_owned(), id.to_owned())),
        _ => Err(format!("expected TYPE:ID, got {text:?}")),
    }
}

/// `key=value`, the value as JSON when it parses, else as a string.
fn parse_value(text: &str) -> Result<(String, Value), String> {
    let (key, value) = super::parse_label(text)?;
    let value = serde_json::from_str(&value).unwrap_or(Value::String(value));
    Ok((key, value))
}

fn to_map(pairs: Vec<(String, Value)>, what: &str) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for (key, value) in pairs {
        if map.insert(key.clone(), value).is_some() {
            bail!("{what} {key:?} is given twice");
        }
    }
    Ok(map)
}

/// `steward check`: decide, explain, exit 0 (allow), 3 (deny) or 4
/// (approval required).
pub async fn run(ctx: &Ctx, args: CheckArgs) -> anyhow::Result<()> {
    let principal = match (args.agent, args.human) {
        (Some(agent), _) => PrincipalRef {
            principal_type: "agent".into(),
            id: agent,
        },
        (None, Some(human)) => PrincipalRef {
            principal_type: "human".into(),
            id: human,
        },
        (None, None) => bail!("name the principal with --agent or --human"),
    };
    let (resource_type, id) = args.resource;
    let request = DecisionRequest {
        principal: Some(principal),
        action: args.action,
        resource: ResourceRef {
            resource_type,
            id,
            attributes: to_map(args.attributes, "attribute")?.into_iter().collect(),
        },
        context: to_map(args.context, "context value")?,
        on_behalf_of: args.on_behalf_of,
        estimate: None,
        call_arguments: None,
    };
    let response = ctx.client.decide(&request).await?;
    output::print_outcome(ctx.output, &response, |r| explain(&request, r))?;
    match response.decision {
        Decision::Allow => Ok(()),
        Decision::Deny => Err(Refusal(EXIT_DENY).into()),
        Decision::ApprovalRequired => Err(Refusal(EXIT_APPROVAL_REQUIRED).into()),
    }
}

fn policy_line(p: &DeterminingPolicy) -> String {
    let mut line = format!("  {} {}", p.effect, p.id);
    if !p.description.is_empty() {
        line.push_str(&format!(": {}", p.description));
    }
    if !p.owner.is_empty() {
        line.push_str(&format!(" (owner {})", p.owner));
    }
    line
}

/// The answer in plain words.
pub fn explain(request: &DecisionRequest, r: &DecisionResponse) -> String {
    // The chain names the principal as the inventory knows it (an e-mail
    // rather than an external id).
    let who = match (r.chain.first(), &request.principal) {
        (Some(link), _) => format!("{} {}", link.kind, link.name),
        (None, Some(p)) => format!("{} {}", p.principal_type, p.id),
        (None, None) => "the caller".to_owned(),
    };
    let what = format!(
        "{} on {}:{}",
        request.action, request.resource.resource_type, request.resource.id
    );
    let mut lines = vec![match r.decision {
        Decision::Allow => format!("ALLOW: {who} may {what}."),
        Decision::Deny => format!("DENY: {who} may not {what}."),
        Decision::ApprovalRequired => match &r.approval {
            Some(a) => format!(
                "APPROVAL REQUIRED: {who} may {what} once a person approves it (approval {}, by {}).",
                a.id,
                a.groups.join(" then ")
            ),
            None => format!("APPROVAL REQUIRED: {who} may {what} once a person approves it."),
        },
    }];
    if !r.policies.is_empty() {
        lines.push(String::new());
        lines.push(match r.decision {
            Decision::Deny => "Forbidden by:".to_owned(),
            _ => "Allowed by:".to_owned(),
        });
        lines.extend(r.policies.iter().map(policy_line));
    }
    if !r.chain.is_empty() {
        lines.push(String::new());
        lines.push("Delegation chain (every identity must be allowed):".to_owned());
        for link in &r.chain {
            let verdict = if link.allowed {
                "allowed".to_owned()
            } else {
                format!(
                    "NOT allowed: {}",
                    link.reason.as_deref().unwrap_or("no reason given")
                )
            };
            lines.push(format!("  {} {}: {verdict}", link.kind, link.name));
        }
    }
    if let Some(q) = r.exceeded.as_ref().or(r.quota.as_ref()) {
        lines.push(String::new());
        lines.push(format!(
            "Quota {}: {} of {} {} used, {} left ({}){}.",
            q.name,
            q.used,
            q.limit,
            q.currency.as_deref().unwrap_or(q.metric.as_str()),
            q.remaining,
            q.window,
            q.resets_at
                .map(|t| format!(", resets {}", output::time(&t)))
                .unwrap_or_default()
        ));
    }
    for w in &r.warnings {
        lines.push(format!("Warning: {}", w.message));
    }
    if let Some(hint) = &r.remediation {
        lines.push(String::new());
        lines.push("What to do:".to_owned());
        if !hint.message.is_empty() {
            lines.push(format!("  {}", hint.message));
        }
        if !hint.roles_that_allow.is_empty() {
            lines.push(format!(
                "  Roles that would allow it: {}",
                hint.roles_that_allow.join(", ")
            ));
        }
        if !hint.personas_that_allow.is_empty() {
            lines.push(format!(
                "  Personas whose agents would be allowed: {}",
                hint.personas_that_allow.join(", ")
            ));
        }
        // Guardrails not already listed above, with their owners.
        let unlisted: Vec<&DeterminingPolicy> = hint
            .forbidden_by
            .iter()
            .filter(|p| !r.policies.contains(p))
            .collect();
        if !unlisted.is_empty() {
            lines.push("  Guardrails (no role overrides them; ask their owner):".to_owned());
            lines.extend(unlisted.iter().map(|p| format!("  {}", policy_line(p))));
        }
    }
    if !r.errors.is_empty() {
        lines.push(String::new());
        lines.push("Evaluation errors:".to_owned());
        lines.extend(r.errors.iter().map(|e| format!("  {e}")));
    }
    lines.push(String::new());
    lines.push(format!("Decision id: {}", r.decision_id));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use steward_types::{ChainLink, Remediation};

    #[test]
    fn values_are_json_when_they_parse() {
        assert_eq!(parse_value("amount=250"), Ok(("amount".into(), json!(250))));
        assert_eq!(parse_value("ok=true"), Ok(("ok".into(), json!(true))));
        assert_eq!(
            parse_value("tags=[\"a\",\"b\"]"),
            Ok(("tags".into(), json!(["a", "b"])))
        );
        assert_eq!(
            parse_value("owner=rick@the-citadel.com"),
            Ok(("owner".into(), json!("rick@the-citadel.com")))
        );
        assert_eq!(parse_value("id=\"42\""), Ok(("id".into(), json!("42"))));
        assert_eq!(parse_value("empty="), Ok(("empty".into(), json!(""))));
        assert!(parse_value("novalue").is_err());
    }

    #[test]
    fn resources_split_at_the_first_colon() {
        assert_eq!(
            parse_resource("table:db:orders"),
            Ok(("table".into(), "db:orders".into()))
        );
        assert!(parse_resource("repository").is_err());
        assert!(parse_resource(":x").is_err());
    }

    #[test]
    fn a_denial_explains_chain_and_remedies() {
        let request = DecisionRequest {
            principal: Some(PrincipalRef {
                principal_type: "agent".into(),
                id: "support-assistant".into(),
            }),
            action: "issue_refund".into(),
            resource: ResourceRef {
                resource_type: "refund".into(),
                id: "r-1".into(),
                attributes: Default::default(),
            },
            ..Default::default()
        };
        let guardrail = DeterminingPolicy {
            id: "refunds-over-100-need-approval".into(),
            effect: "forbid".into(),
            description: "Refunds over 100 need a person".into(),
            owner: "finance@example.com".into(),
        };
        let response = DecisionResponse {
            decision: Decision::Deny,
            decision_id: "dec_1".into(),
            policies: vec![guardrail.clone()],
            errors: vec![],
            chain: vec![ChainLink {
                kind: "agent".into(),
                id: "agt_1".into(),
                name: "support-assistant".into(),
                allowed: false,
                reason: Some("forbidden by refunds-over-100-need-approval".into()),
            }],
            remediation: Some(Remediation {
                message: "Ask finance.".into(),
                roles_that_allow: vec![],
                personas_that_allow: vec![],
                forbidden_by: vec![guardrail],
            }),
            approval: None,
            quota: None,
            warnings: vec![],
            exceeded: None,
        };
        let text = explain(&request, &response);
        assert!(
            text.starts_with("DENY: agent support-assistant may not issue_refund on refund:r-1."),
            "{text}"
        );
        assert!(text.contains("NOT allowed: forbidden by"), "{text}");
        assert!(text.contains("Ask finance."), "{text}");
        assert!(text.contains("(owner finance@example.com)"), "{text}");
        assert!(text.ends_with("Decision id: dec_1"), "{text}");
    }
}
