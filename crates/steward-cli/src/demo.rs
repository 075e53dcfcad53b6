//! `steward demo`: start a throwaway server on a temporary store, seed it
//! through the real client and tell what happens, one line per step.

use std::collections::HashMap;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::json;
use steward_client::Client;
use steward_server::Config;
use steward_types::*;

use crate::logging::{self, LogFormat};
use crate::output::{say, table};

/// Options of `steward demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the server running after the story, until Ctrl-C or SIGTERM,
    /// to look around in the dashboard (`/ui`) or with the CLI.
    #[arg(long)]
    pub keep: bool,
}

/// The example personas the server seeds into the default tenant; the demo
/// registers one agent for each.
const PERSONAS: [&str; 3] = [
    "Code Review Bot",
    "Data Pipeline Agent",
    "Customer Support Assistant",
];
const TEAM: &str = "platform";
const OWNER: &str = "alice@example.com";
const LOW_RISK_AGENT: &str = "docs-helper";
const SUSPENSION_REASON: &str = "unexpected pushes to main";

/// Run the demo: start, seed, tell the story, shut down.
pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    // Only warnings, so the story stays readable; RUST_LOG still wins.
    logging::init(LogFormat::Pretty, "warn")?;
    let data_dir = tempfile::tempdir().context("cannot create a temporary store")?;
    let admin_token = random_token();
    let config = Config {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: data_dir.path().to_path_buf(),
        admin_token: Some(admin_token.clone()),
        ..Config::default()
    };
    let running = steward_server::start(config)
        .await
        .context("cannot start the demo server")?;

    let mut story = Story::default();
    story.step(format!(
        "Started a throwaway Steward at {} on a temporary store.",
        running.url()
    ))?;
    let client = Client::new(&running.url(), Some(admin_token.clone()));
    let told = scenario(&client, &mut story).await;
    // Shut down even when the scenario failed, then report the first error.
    let stopped = if args.keep && told.is_ok() {
        let signal = steward_server::ShutdownSignal::listen()?;
        let url = running.url();
        story.step(format!(
            "The server stays up until Ctrl-C. The dashboard: {url}/ui (sign in with {admin_token}). \
             The CLI: export STEWARD_SERVER={url} STEWARD_TOKEN={admin_token}"
        ))?;
        running.stop_on(signal).await
    } else {
        running.shutdown().await
    };
    told?;
    stopped?;
    story.step("Stopped the server; the temporary store is deleted.")?;
    drop(data_dir);
    Ok(())
}

async fn scenario(client: &Client, story: &mut Story) -> anyhow::Result<()> {
    let team = client
        .create_team(&CreateTeam {
            name: TEAM.into(),
            description: "Runs the internal developer platform".into(),
        })
        .await?;
    story.step(format!("Created the team \"{}\".", team.name))?;

    let alice = client
        .create_human(&CreateHuman {
            external_id: None,
            email: OWNER.into(),
            display_name: "Alice Example".into(),
            teams: vec![TEAM.into()],
            roles: vec![],
        })
        .await?;
    story.step(format!(
        "{} <{}> joins it; she will own every agent in this story.",
        alice.display_name, alice.email
    ))?;

    let personas = client
        .list_personas(&PageQuery {
            limit: Some(500),
            ..PageQuery::default()
        })
        .await?
        .items;
    let mut agents = Vec::new();
    for persona_name in PERSONAS {
        let persona = personas
            .iter()
            .find(|p| p.name == persona_name)
            .ok_or_else(|| anyhow!("the server did not seed the persona {persona_name:?}"))?;
        let agent = client
            .register_agent(&RegisterAgent {
                name: slug(persona_name),
                owner: OWNER.into(),
                team: Some(TEAM.into()),
                purpose: persona.description.clone(),
                persona: Some(persona.name.clone()),
                ..RegisterAgent::default()
            })
            .await?;
        story.step(format!(
            "Registered {} from the persona \"{}\": {} risk, {}.",
            agent.name,
            persona.name,
            agent.risk_tier.as_str(),
            agent.state.as_str()
        ))?;
        agents.push(agent);
    }

    let helper = client
        .register_agent(&RegisterAgent {
            name: LOW_RISK_AGENT.into(),
            owner: OWNER.into(),
            team: Some(TEAM.into()),
            purpose: "Answers questions from the public documentation".into(),
            classifications: Some(vec!["public".into()]),
            ..RegisterAgent::default()
        })
        .await?;
    story.step(format!(
        "Registered {}, which only reads public data: {} risk, {}.",
        helper.name,
        helper.risk_tier.as_str(),
        helper.state.as_str()
    ))?;
    agents.push(helper);

    let approvers = Approvers::join(client, story).await?;
    for agent in &mut agents {
        if agent.state == AgentState::PendingApproval {
            let decided = approvers.walk_registration(client, &agent.name).await?;
            *agent = client.get_agent(&agent.id).await?;
            story.step(format!(
                "{} is {} risk, so people decide: its registration is approved by {}; it is now {}.",
                agent.name,
                agent.risk_tier.as_str(),
                decided.join(", then "),
                agent.state.as_str()
            ))?;
        }
    }

    decisions(client, story).await?;
    runtime_approval(client, &approvers, story).await?;

    let bot = agents
        .first()
        .ok_or_else(|| anyhow!("no agent was registered"))?;
    let key = client
        .create_key(
            &bot.id,
            &CreateKey {
                name: "ci-runner".into(),
                expires_at: None,
            },
        )
        .await?;
    story.step(format!(
        "Issued an API key ({}...) to {} for its CI runner.",
        key.key.prefix, bot.name
    ))?;

    let as_bot = client.with_token(key.secret);
    match as_bot.whoami().await? {
        WhoAmI::Agent { agent_name, .. } => story.step(format!(
            "{agent_name} asks the server who it is, with its key: \"agent {agent_name}\"."
        ))?,
        other => bail!("the key should identify an agent; the server said {other:?}"),
    }

    let suspended = client
        .suspend_agent(&bot.id, Some(SUSPENSION_REASON))
        .await?;
    story.step(format!(
        "The administrator suspends {} (\"{SUSPENSION_REASON}\"): now {}.",
        suspended.agent.name,
        suspended.agent.state.as_str()
    ))?;

    match as_bot.whoami().await {
        Err(err) if err.status() == Some(401) => story.step(format!(
            "{} tries its key again and is refused with 401: {err}.",
            bot.name
        ))?,
        Err(err) => {
            return Err(err).context("the suspended agent's key should be refused with 401");
        }
        Ok(me) => bail!("the suspended agent's key was still accepted: {me:?}"),
    }

    let after = client
        .decide(&ask(&bot.name, "read", "repo", "steward", json!({})))
        .await?;
    story.step(format!(
        "{} asks to read the repository again: {} ({}).",
        bot.name,
        verdict(&after),
        after
            .chain
            .first()
            .and_then(|l| l.reason.clone())
            .unwrap_or_default()
    ))?;

    let checkpoint = client.audit_checkpoint().await?;
    let verified = client.audit_verify().await?;
    story.step(format!(
        "The audit log holds {} entries under a signed checkpoint (root {}...); verifying it: {}.",
        checkpoint.size,
        &checkpoint.root[..12],
        if verified.ok {
            "intact".to_string()
        } else {
            format!("PROBLEM: {}", verified.problem.unwrap_or_default())
        }
    ))?;

    let agents = client
        .list_agents(&AgentFilter {
            team: Some(TEAM.into()),
            limit: Some(500),
            ..AgentFilter::default()
        })
        .await?
        .items;
    say(format!(
        "\nThe inventory now:\n\n{}\n",
        summary(&agents, &personas)
    ))?;
    Ok(())
}

/// The people who decide approvals, each with their own token.
struct Approvers {
    /// (group, e-mail, client acting as them).
    people: Vec<(&'static str, &'static str, Client)>,
}

impl Approvers {
    /// Sam (security), Lucia (legal) and Lee (runtime approvers) join.
    async fn join(client: &Client, story: &mut Story) -> anyhow::Result<Approvers> {
        let mut people = Vec::new();
        for (group, email, name) in [
            ("security", "sam@example.com", "Sam Security"),
            ("legal", "lucia@example.com", "Lucia Legal"),
            ("approvers", "lee@example.com", "Lee Support-Lead"),
        ] {
            let human = client
                .create_human(&CreateHuman {
                    external_id: None,
                    email: email.into(),
                    display_name: name.into(),
                    teams: vec![],
                    roles: vec![group.into()],
                })
                .await?;
            let token = client
                .create_token(&CreateToken {
                    name: format!("{group} approvals"),
                    role: TokenRole::Auditor,
                    human: Some(human.id),
                    expires_at: None,
                    tenant: None,
                })
                .await?;
            people.push((group, email, client.with_token(token.secret)));
        }
        story.step("Sam (security), Lucia (legal) and Lee (approves refunds) join, each with their own token: approvals are attributable.")?;
        Ok(Approvers { people })
    }

    fn of(&self, group: &str) -> anyhow::Result<(&'static str, &Client)> {
        self.people
            .iter()
            .find(|(g, _, _)| *g == group)
            .map(|(_, email, c)| (*email, c))
            .ok_or_else(|| anyhow!("nobody in the demo approves for {group}"))
    }

    /// Approve an agent's registration step by step; returns who decided.
    async fn walk_registration(&self, client: &Client, agent: &str) -> anyhow::Result<Vec<String>> {
        let pending = client
            .list_approvals(&ApprovalFilter {
                agent: Some(agent.into()),
                kind: Some("registration".into()),
                status: Some("pending".into()),
                ..ApprovalFilter::default()
            })
            .await?
            .items;
        let mut approval = pending
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{agent} has no pending registration approval"))?;
        let mut decided = Vec::new();
        while let Some(group) = approval.current_group().map(str::to_owned) {
            let (email, person) = self.of(&group)?;
            approval = person
                .approve(&approval.id, Some("reviewed in the demo"))
                .await?;
            decided.push(format!("{email} ({group})"));
        }
        Ok(decided)
    }
}

/// A refund over 100 waits for a person, is allowed once, then waits again.
async fn runtime_approval(
    client: &Client,
    approvers: &Approvers,
    story: &mut Story,
) -> anyhow::Result<()> {
    let refund = ask(
        "customer-support-assistant",
        "refund",
        "ticket",
        "T-89",
        json!({"amount": 250}),
    );
    let held = client.decide(&refund).await?;
    let approval = held
        .approval
        .clone()
        .ok_or_else(|| anyhow!("the refund of 250 should wait for an approval"))?;
    story.step(format!(
        "It tries to refund 250 on T-89: {} (approval {}, for the {} group; it may wait at {}).",
        verdict(&held),
        approval.id,
        approval.groups.join(", "),
        approval.wait
    ))?;
    let (email, lee) = approvers.of("approvers")?;
    let decided = lee
        .approve(&approval.id, Some("customer was double-charged"))
        .await?;
    story.step(format!(
        "{email} reads the exact request (amount {}) and approves it: {}.",
        decided.request["context"]["amount"],
        decided.status.as_str()
    ))?;
    let retry = client.decide(&refund).await?;
    story.step(format!(
        "The identical request again: {} (the grant is used once).",
        verdict(&retry)
    ))?;
    let again = client.decide(&refund).await?;
    story.step(format!(
        "And once more: {}; an approval is never reused.",
        verdict(&again)
    ))?;
    Ok(())
}

/// A decision request for an agent.
fn ask(
    agent: &str,
    action: &str,
    resource_type: &str,
    id: &str,
    context: serde_json::Value,
) -> DecisionRequest {
    DecisionRequest {
        principal: Some(PrincipalRef {
            principal_type: "agent".into(),
            id: agent.into(),
        }),
        action: action.into(),
        resource: ResourceRef {
            resource_type: resource_type.into(),
            id: id.into(),
            attributes: Default::default(),
        },
        context: context.as_object().cloned().unwrap_or_default(),
        on_behalf_of: None,
        estimate: None,
        call_arguments: None,
    }
}

fn verdict(d: &DecisionResponse) -> String {
    match d.decision {
        Decision::Allow => format!(
            "allowed by {}",
            d.policies
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Decision::Deny => "denied".into(),
        Decision::ApprovalRequired => "held for a human's approval".into(),
    }
}

/// Declare what agents act on, write three policies, and ask.
async fn decisions(client: &Client, story: &mut Story) -> anyhow::Result<()> {
    for (name, attrs) in [("repo", vec![]), ("ticket", vec![])] {
        let attributes = attrs
            .into_iter()
            .map(|(k, v): (&str, &str)| (k.to_string(), v.to_string()))
            .collect();
        client
            .put_resource_type(&PutResourceType {
                name: name.into(),
                description: String::new(),
                attributes,
            })
            .await?;
    }
    for (name, ty, context) in [
        ("read", "repo", None),
        ("write", "repo", None),
        ("refund", "ticket", Some(("amount", "Long"))),
    ] {
        client
            .put_action(&PutAction {
                name: name.into(),
                description: String::new(),
                resource_types: vec![ty.into()],
                context: context
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .await?;
    }
    let policies = [
        (
            "repo-readers-read",
            "Repository readers may read repositories",
            r#"permit(principal in Role::"repo-reader", action == Action::"read", resource is repo);"#,
        ),
        (
            "commenters-write",
            "PR commenters may write to repositories",
            r#"permit(principal in Role::"pr-commenter", action == Action::"write", resource is repo);"#,
        ),
        (
            "small-refunds",
            "Refund issuers may refund up to 100",
            r#"permit(principal in Role::"refund-issuer", action == Action::"refund", resource is ticket) when { context.amount <= 100 };"#,
        ),
        (
            "large-refunds-with-approval",
            "Refunds over 100 need a support lead's approval",
            r#"@approval("approvers") permit(principal in Role::"refund-issuer", action == Action::"refund", resource is ticket) when { context.amount > 100 };"#,
        ),
    ];
    for (id, description, text) in policies {
        client
            .put_policy(&PutPolicy {
                id: id.into(),
                description: description.into(),
                owner: "security@example.com".into(),
                text: text.into(),
            })
            .await?;
    }
    story.step("Declared repositories and tickets, read/write/refund, and four Cedar policies (validated against the schema; refunds over 100 carry @approval).")?;

    let read = client
        .decide(&ask(
            "code-review-bot",
            "read",
            "repo",
            "steward",
            json!({}),
        ))
        .await?;
    story.step(format!(
        "code-review-bot asks to read repo \"steward\": {}.",
        verdict(&read)
    ))?;
    if let Some(q) = &read.quota {
        story.step(format!(
            "That counted against its persona's default quota \"{}\": {} of {} {} used, {} left today.",
            q.name,
            q.used,
            q.limit,
            q.metric.as_str(),
            q.remaining
        ))?;
    }
    let write = client
        .decide(&ask("docs-helper", "write", "repo", "steward", json!({})))
        .await?;
    let hint = write
        .remediation
        .as_ref()
        .map(|r| r.message.clone())
        .unwrap_or_default();
    story.step(format!(
        "docs-helper asks to write to it: {}. Steward says: {hint}",
        verdict(&write)
    ))?;
    let small = client
        .decide(&ask(
            "customer-support-assistant",
            "refund",
            "ticket",
            "T-88",
            json!({"amount": 80}),
        ))
        .await?;
    story.step(format!(
        "customer-support-assistant refunds 80 on ticket T-88: {}.",
        verdict(&small)
    ))?;
    Ok(())
}

/// The closing table: each agent with its persona's name, risk and state.
fn summary(agents: &[Agent], personas: &[Persona]) -> String {
    let persona_names: HashMap<&str, &str> = personas
        .iter()
        .map(|p| (p.id.as_str(), p.name.as_str()))
        .collect();
    let rows = agents.iter().map(|agent| {
        let persona = agent
            .persona_id
            .as_deref()
            .and_then(|id| persona_names.get(id).copied())
            .unwrap_or("-");
        vec![
            agent.name.clone(),
            persona.to_owned(),
            agent.risk_tier.as_str().to_owned(),
            agent.state.as_str().to_owned(),
        ]
    });
    table(&["AGENT", "PERSONA", "RISK", "STATE"], rows)
}

/// Numbered lines of the story.
#[derive(Debug, Default)]
struct Story {
    steps: usize,
}

impl Story {
    fn step(&mut self, text: impl AsRef<str>) -> std::io::Result<()> {
        self.steps += 1;
        say(format!("{:>2}. {}", self.steps, text.as_ref()))
    }
}

/// A bootstrap admin token nobody else knows; the demo's server lives only
/// as long as the command.
fn random_token() -> String {
    let secret: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("{}{secret}", steward_types::API_TOKEN_PREFIX)
}

/// `Code Review Bot` becomes `code-review-bot`.
fn slug(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persona_names_become_agent_names() {
        assert_eq!(slug("Code Review Bot"), "code-review-bot");
        assert_eq!(
            slug("  Customer Support Assistant! "),
            "customer-support-assistant"
        );
    }

    #[test]
    fn demo_tokens_are_api_tokens_and_differ() {
        let a = random_token();
        assert!(a.starts_with("stwt_"));
        assert_eq!(a.len(), 45);
        assert_ne!(a, random_token());
    }
}
