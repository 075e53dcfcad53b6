//! `steward plan DIR` and `steward apply DIR`: governance as code.
//!
//! A directory of `*.toml` files (teams, roles, humans, personas, agents,
//! resource types, actions, known resources) and `*.cedar` files (policies)
//! becomes one [`ApplyRequest`]; the server plans it and carries it out in
//! one transaction (docs/governance.md describes the format). Everything
//! that can be checked here is checked before anything is sent: syntax,
//! unknown keys, items declared twice, each with its file and line. What the
//! server refuses names the item, and is traced back to the file and line
//! that declared it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use steward_client::ClientError;
use steward_types::{ApplyRequest, ApplyResponse, ResourceEntity};
use toml::Spanned;

use super::Ctx;
use crate::output;

/// `steward plan DIR`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The governance directory (`*.toml` and `*.cedar` files, recursively).
    pub dir: PathBuf,
    /// Also list the policies that `apply --prune-policies` would delete.
    #[arg(long)]
    pub prune_policies: bool,
}

/// `steward apply DIR`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The governance directory (`*.toml` and `*.cedar` files, recursively).
    pub dir: PathBuf,
    /// Delete the tenant's policies that the directory does not declare.
    #[arg(long)]
    pub prune_policies: bool,
}

/// `steward plan DIR`: what `apply` would change; changes nothing.
pub async fn plan(ctx: &Ctx, args: PlanArgs) -> anyhow::Result<()> {
    let mut declared = load_dir(&args.dir)?;
    declared.request.dry_run = true;
    declared.request.prune_policies = args.prune_policies;
    submit(ctx, &declared).await
}

/// `steward apply DIR`: bring the tenant to what the directory declares.
pub async fn apply(ctx: &Ctx, args: ApplyArgs) -> anyhow::Result<()> {
    let mut declared = load_dir(&args.dir)?;
    declared.request.prune_policies = args.prune_policies;
    submit(ctx, &declared).await
}

/// Send a declaration to `POST /v1/apply` and print the plan it answers
/// with. A refusal that names an item is traced back to its file and line.
pub async fn submit(ctx: &Ctx, declared: &Declared) -> anyhow::Result<()> {
    let response = ctx
        .client
        .apply(&declared.request)
        .await
        .map_err(|err| declared.sources.locate(err))?;
    output::print_outcome(ctx.output, &response, render_plan)
}

/// The plan as lines: `+` creates, `~` changes, `-` deletes, `!` warnings.
pub fn render_plan(response: &ApplyResponse) -> String {
    let mut lines: Vec<String> = response
        .changes
        .iter()
        .map(|change| format!("{} {change}", change_sign(change)))
        .collect();
    if response.changes.is_empty() {
        lines.push("No changes.".to_owned());
    }
    lines.extend(response.warnings.iter().map(|w| format!("! {w}")));
    lines.push(format!("{} unchanged", response.unchanged));
    lines.push(if response.applied {
        "applied".to_owned()
    } else {
        "plan only: nothing was changed (run `steward apply` to apply it)".to_owned()
    });
    lines.join("\n")
}

fn change_sign(change: &str) -> char {
    let verb = change.rsplit(": ").next().unwrap_or_default();
    if verb.starts_with("create") || verb.starts_with("register") {
        '+'
    } else if verb.starts_with("delete") {
        '-'
    } else {
        '~'
    }
}

/// Where an item was declared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    file: String,
    line: usize,
    column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (line {})", self.file, self.line)
    }
}

/// Where each declared item comes from, keyed like the server names items
/// in its errors: `role repo-reader`, `agent reviewer`, `policy no-pii`.
#[derive(Debug, Default)]
pub struct Sources {
    items: BTreeMap<String, Location>,
}

fn item_key(kind: &str, name: &str) -> String {
    match kind {
        // E-mail addresses are case-insensitive.
        "human" => format!("human {}", name.to_lowercase()),
        // The server names a failed activation `activate NAME`.
        "activate" => format!("agent {name}"),
        _ => format!("{kind} {name}"),
    }
}

impl Sources {
    /// Record an item; an item declared twice is an error naming both places.
    fn declare(&mut self, kind: &str, name: &str, at: Location) -> anyhow::Result<()> {
        let key = item_key(kind, name);
        if let Some(first) = self.items.get(&key) {
            bail!("{kind} {name:?} is declared twice: in {first} and in {at}");
        }
        self.items.insert(key, at);
        Ok(())
    }

    /// Trace a server refusal back to the file (and line) of the item it
    /// names: a policy in `details.policy`, or the `KIND NAME: ` prefix the
    /// server puts before the message.
    fn locate(&self, err: ClientError) -> ClientError {
        let ClientError::Api { status, mut detail } = err else {
            return err;
        };
        let details = detail.details.clone().unwrap_or(Value::Null);
        let policy = details.get("policy").and_then(Value::as_str);
        if let Some(at) = policy.and_then(|id| self.items.get(&item_key("policy", id))) {
            let within = details
                .get("line")
                .and_then(Value::as_u64)
                .zip(details.get("column").and_then(Value::as_u64));
            detail.message = match within {
                Some((line, column)) => {
                    // The server counts from the start of the policy.
                    let (line, column) = (line as usize, column as usize);
                    let relative = format!(" (line {line}, column {column})");
                    let message = detail.message.replacen(&relative, "", 1);
                    let column = if line == 1 {
                        (at.column + column).saturating_sub(1)
                    } else {
                        column
                    };
                    let line = (at.line + line).saturating_sub(1);
                    detail.details = Some(serde_json::json!({
                        "policy": policy, "file": at.file, "line": line, "column": column,
                    }));
                    format!("{}: line {line}, column {column}: {message}", at.file)
                }
                None => format!("{}: line {}: {}", at.file, at.line, detail.message),
            };
        } else if let Some(at) = self.named(&detail.message) {
            // Also a stored policy the directory does not declare, broken
            // by a declaration it does: the server names that declaration.
            detail.message = format!("{}: line {}: {}", at.file, at.line, detail.message);
        }
        ClientError::Api { status, detail }
    }

    /// The item a message starts with (`KIND NAME: ...`). Kinds are matched
    /// whole, as some have two words (`resource type`).
    fn named(&self, message: &str) -> Option<&Location> {
        let (item, _) = message.split_once(": ")?;
        KINDS.iter().find_map(|kind| {
            let name = item.strip_prefix(kind)?.strip_prefix(' ')?;
            self.items.get(&item_key(kind, name))
        })
    }
}

/// The kinds of item the server names in its refusals.
const KINDS: &[&str] = &[
    "team",
    "role",
    "human",
    "persona",
    "agent",
    "activate",
    "resource type",
    "action",
    "entity",
    "policy",
    "quota",
    "mcp_server",
    "delegation_issuer",
];

/// A loaded declaration: the request and where each item came from.
#[derive(Debug, Default)]
pub struct Declared {
    /// What the files declare.
    pub request: ApplyRequest,
    /// Where each item was declared.
    pub sources: Sources,
}

/// Read a governance directory: every `*.toml` and `*.cedar` file under
/// `dir`, recursively, in sorted path order (hidden entries are skipped).
pub fn load_dir(dir: &Path) -> anyhow::Result<Declared> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)
        .with_context(|| format!("cannot read the directory {}", dir.display()))?;
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .toml or .cedar files", dir.display());
    }
    let mut declared = Declared::default();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let file = path.display().to_string();
        if path.extension().is_some_and(|e| e == "cedar") {
            declared.add_policies(&file, &text)?;
        } else {
            declared.add_toml(&file, &text)?;
        }
    }
    Ok(declared)
}

/// Read one `.cedar` file (for `steward policies put`).
pub fn load_policy_file(path: &Path) -> anyhow::Result<Declared> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut declared = Declared::default();
    declared.add_policies(&path.display().to_string(), &text)?;
    Ok(declared)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Symbolic links to directories are not followed (no cycles).
        if entry.file_type()?.is_dir() {
            collect_files(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e == "toml" || e == "cedar")
        {
            out.push(path);
        }
    }
    Ok(())
}

/// The arrays of tables a TOML file may hold. Each table is kept as TOML
/// with its position, then converted to its request type, so an error can
/// name the line of the table it is about.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    team: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    role: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    human: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    persona: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    agent: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    resource_type: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    action: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    entity: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    quota: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    mcp_server: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    delegation_issuer: Vec<Spanned<toml::Table>>,
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn location(file: &str, text: &str, offset: usize) -> Location {
    let (line, column) = line_column(text, offset);
    Location {
        file: file.to_owned(),
        line,
        column,
    }
}

/// TOML as JSON, the form the request types read (dates become RFC 3339
/// strings).
fn toml_to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .into_iter()
                .map(|(k, v)| (k, toml_to_json(v)))
                .collect(),
        ),
    }
}

impl Declared {
    fn add_toml(&mut self, file: &str, text: &str) -> anyhow::Result<()> {
        let parsed: TomlFile = toml::from_str(text).map_err(|err| {
            // toml's messages may span lines ("invalid string\nexpected ...").
            let message = err.message().trim_end().replace('\n', "; ");
            match err.span() {
                Some(span) => {
                    let at = location(file, text, span.start);
                    anyhow::anyhow!("{file}: line {}, column {}: {message}", at.line, at.column)
                }
                None => anyhow::anyhow!("{file}: {message}"),
            }
        })?;
        let read = |kind: &str, table: Spanned<toml::Table>| {
            let at = location(file, text, table.span().start);
            (kind.to_owned(), at, table.into_inner())
        };
        let r = &mut self.request;
        let s = &mut self.sources;
        for t in parsed.team {
            let (kind, at, table) = read("team", t);
            let team: steward_types::CreateTeam = convert(&kind, &at, table)?;
            s.declare(&kind, &team.name, at)?;
            r.teams.push(team);
        }
        for t in parsed.role {
            let (kind, at, table) = read("role", t);
            let role: steward_types::CreateRole = convert(&kind, &at, table)?;
            s.declare(&kind, &role.name, at)?;
            r.roles.push(role);
        }
        for t in parsed.human {
            let (kind, at, table) = read("human", t);
            let human: steward_types::CreateHuman = convert(&kind, &at, table)?;
            s.declare(&kind, &human.email, at)?;
            r.humans.push(human);
        }
        for t in parsed.persona {
            let (kind, at, table) = read("persona", t);
            let persona: steward_types::CreatePersona = convert(&kind, &at, table)?;
            s.declare(&kind, &persona.name, at)?;
            r.personas.push(persona);
        }
        for t in parsed.agent {
            let (kind, at, mut table) = read("agent", t);
            let activate = match table.remove("activate") {
                None => false,
                Some(toml::Value::Boolean(b)) => b,
                Some(_) => bail!(
                    "{}: line {}: agent: activate must be true or false",
                    at.file,
                    at.line
                ),
            };
            let agent: steward_types::RegisterAgent = convert(&kind, &at, table)?;
            s.declare(&kind, &agent.name, at)?;
            if activate {
                r.activate.push(agent.name.clone());
            }
            r.agents.push(agent);
        }
        for t in parsed.resource_type {
            let (kind, at, table) = read("resource type", t);
            let declared: steward_types::PutResourceType = convert(&kind, &at, table)?;
            s.declare(&kind, &declared.name, at)?;
            r.resource_types.push(declared);
        }
        for t in parsed.action {
            let (kind, at, table) = read("action", t);
            let action: steward_types::PutAction = convert(&kind, &at, table)?;
            s.declare(&kind, &action.name, at)?;
            r.actions.push(action);
        }
        for t in parsed.entity {
            let (kind, at, table) = read("entity", t);
            // ResourceEntity itself tolerates unknown keys; a directory does not.
            if let Some(key) = table
                .keys()
                .find(|k| !["type", "id", "attributes"].contains(&k.as_str()))
            {
                bail!(
                    "{}: line {}: entity: unknown field `{key}`, expected one of `type`, `id`, `attributes`",
                    at.file,
                    at.line
                );
            }
            let entity: ResourceEntity = convert(&kind, &at, table)?;
            let name = format!("{}::{}", entity.resource_type, entity.id);
            s.declare(&kind, &name, at)?;
            r.entities.push(entity);
        }
        for t in parsed.quota {
            let (kind, at, table) = read("quota", t);
            let quota: steward_types::PutQuota = convert(&kind, &at, table)?;
            s.declare(&kind, &quota.name, at)?;
            r.quotas.push(quota);
        }
        for t in parsed.mcp_server {
            let (kind, at, table) = read("mcp_server", t);
            let server: steward_types::PutMcpServer = convert(&kind, &at, table)?;
            s.declare(&kind, &server.name, at)?;
            r.mcp_servers.push(server);
        }
        for t in parsed.delegation_issuer {
            let (kind, at, table) = read("delegation_issuer", t);
            let issuer: steward_types::DeclaredIssuer = convert(&kind, &at, table)?;
            s.declare(&kind, &issuer.name, at)?;
            r.delegation_issuers.push(issuer);
        }
        Ok(())
    }

    fn add_policies(&mut self, file: &str, text: &str) -> anyhow::Result<()> {
        let policies = steward_policy::split_policies(text)
            .map_err(|e| anyhow::anyhow!("{file}: {}", e.message))?;
        for policy in policies {
            let at = location(file, text, policy_offset(text, &policy.text, &policy.id));
            self.sources.declare("policy", &policy.id, at)?;
            self.request.policies.push(policy);
        }
        Ok(())
    }
}

/// Where a policy starts in its file: its text as split, else its `@id`.
fn policy_offset(file_text: &str, policy_text: &str, id: &str) -> usize {
    file_text
        .find(policy_text)
        .or_else(|| file_text.find(&format!("\"{id}\"")))
        .unwrap_or(0)
}

/// Convert one TOML table to its request type; errors name file and line.
fn convert<T: DeserializeOwned>(
    kind: &str,
    at: &Location,
    table: toml::Table,
) -> anyhow::Result<T> {
    serde_json::from_value(toml_to_json(toml::Value::Table(table)))
        .map_err(|err| anyhow::anyhow!("{}: line {}: {kind}: {err}", at.file, at.line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<Declared> {
        let mut declared = Declared::default();
        declared.add_toml("dir/a.toml", text)?;
        Ok(declared)
    }

    #[test]
    fn tables_become_request_items() {
        let d = load(
            r#"
[[team]]
name = "platform"

[[role]]
name = "repo-reader"
description = "Read repositories"

[[human]]
email = "alice@example.com"
display_name = "Alice"
teams = ["platform"]

[[agent]]
name = "reviewer"
owner = "alice@example.com"
roles = ["repo-reader"]
activate = true
expires_at = 2030-01-01T00:00:00Z

[[resource_type]]
name = "repository"
attributes = { classification = "String", archived = "Bool?" }

[[action]]
name = "read_repository"
resource_types = ["repository"]
context = { reason = "String?" }

[[entity]]
type = "repository"
id = "steward"
attributes = { classification = "internal", stars = 12 }
"#,
        )
        .unwrap();
        let r = &d.request;
        assert_eq!(r.teams[0].name, "platform");
        assert_eq!(r.roles[0].description, "Read repositories");
        assert_eq!(r.humans[0].teams, ["platform"]);
        assert_eq!(r.agents[0].name, "reviewer");
        assert!(r.agents[0].expires_at.is_some());
        assert_eq!(r.activate, ["reviewer"]);
        assert_eq!(r.resource_types[0].attributes["archived"], "Bool?");
        assert_eq!(r.actions[0].context["reason"], "String?");
        assert_eq!(r.entities[0].attributes["stars"], serde_json::json!(12));
        assert_eq!(
            d.sources.items["agent reviewer"],
            Location {
                file: "dir/a.toml".into(),
                line: 14,
                column: 1
            }
        );
    }

    #[test]
    fn syntax_errors_and_unknown_keys_name_file_and_line() {
        let err = load("[[role]]\nname = \"a\"\ndescription = \n").unwrap_err();
        assert!(
            err.to_string().starts_with("dir/a.toml: line 3, column"),
            "{err}"
        );
        let err = load("[[role]]\nname = \"a\"\n\n[[role]]\nname = \"b\"\ncolour = \"red\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("dir/a.toml: line 4: role: unknown field `colour`"),
            "{err}"
        );
        let err = load("[[agnet]]\nname = \"a\"\n").unwrap_err().to_string();
        assert!(err.starts_with("dir/a.toml: line 1"), "{err}");
        assert!(err.contains("agnet"), "{err}");
        let err = load("[[entity]]\ntype = \"t\"\nid = \"x\"\nattrs = {}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 1: entity: unknown field `attrs`"),
            "{err}"
        );
        let err = load("[[agent]]\nname = \"a\"\nowner = \"b\"\nactivate = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("activate must be true or false"), "{err}");
    }

    #[test]
    fn an_item_declared_twice_names_both_files() {
        let mut d = Declared::default();
        d.add_toml("dir/a.toml", "[[role]]\nname = \"x\"\n")
            .unwrap();
        let err = d
            .add_toml("dir/sub/b.toml", "\n[[role]]\nname = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "role \"x\" is declared twice: in dir/a.toml (line 1) and in dir/sub/b.toml (line 2)"
        );
        d.add_toml(
            "dir/c.toml",
            "[[human]]\nemail = \"A@x.com\"\ndisplay_name = \"A\"\n",
        )
        .unwrap();
        let err = d
            .add_toml(
                "dir/d.toml",
                "[[human]]\nemail = \"a@x.com\"\ndisplay_name = \"A\"\n",
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("declared twice"), "{err}");
    }

    const POLICIES: &str = "// Guardrails\n\n@id(\"a\")\n@description(\"first\")\npermit(principal, action, resource);\n\n@id(\"b\")\nforbid(\n  principal,\n  action,\n  resource\n);\n";

    #[test]
    fn policies_keep_their_file_and_line() {
        let mut d = Declared::default();
        d.add_policies("p/x.cedar", POLICIES).unwrap();
        assert_eq!(d.request.policies.len(), 2);
        // Policies keep their text exactly, so they can be found in the file.
        assert!(POLICIES.contains(&d.request.policies[1].text));
        assert_eq!(d.sources.items["policy a"].line, 3);
        assert_eq!(d.sources.items["policy b"].line, 7);
        let err = d
            .add_policies("p/y.cedar", "@id(\"c\")\npermit(principal, action,\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p/y.cedar: line "), "{err}");
        let err = d
            .add_policies("p/z.cedar", POLICIES)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("in p/x.cedar (line 3) and in p/z.cedar (line 3)"),
            "{err}"
        );
    }

    fn api_error(message: &str, details: Option<Value>) -> ClientError {
        let mut detail =
            steward_types::ErrorDetail::new(steward_types::ErrorCode::InvalidPolicy, message);
        detail.details = details;
        ClientError::Api {
            status: 400,
            detail: Box::new(detail),
        }
    }

    #[test]
    fn server_refusals_are_traced_to_their_file_and_line() {
        let mut d = Declared::default();
        d.add_policies("p/x.cedar", POLICIES).unwrap();
        d.add_toml(
            "t.toml",
            "\n[[agent]]\nname = \"bot\"\nowner = \"x@y.z\"\nactivate = true\n",
        )
        .unwrap();
        let err = d.sources.locate(api_error(
            "policy 'b' does not validate against the schema (line 3, column 3): unknown thing",
            Some(serde_json::json!({"policy": "b", "line": 3, "column": 3})),
        ));
        assert_eq!(
            err.detail().unwrap().message,
            "p/x.cedar: line 9, column 3: policy 'b' does not validate against the schema: unknown thing"
        );
        assert_eq!(
            err.detail().unwrap().details.as_ref().unwrap()["file"],
            "p/x.cedar"
        );
        assert_eq!(err.detail().unwrap().details.as_ref().unwrap()["line"], 9);
        let err = d.sources.locate(api_error(
            "the change would break policy 'a': ...",
            Some(serde_json::json!({"policy": "a"})),
        ));
        assert!(
            err.detail()
                .unwrap()
                .message
                .starts_with("p/x.cedar: line 3: the change")
        );
        let err = d
            .sources
            .locate(api_error("agent bot: owner: no human x@y.z", None));
        assert_eq!(
            err.detail().unwrap().message,
            "t.toml: line 2: agent bot: owner: no human x@y.z"
        );
        let err = d
            .sources
            .locate(api_error("activate bot: cannot activate", None));
        assert!(err.detail().unwrap().message.starts_with("t.toml: line 2:"));
        let err = d.sources.locate(api_error("something else", None));
        assert_eq!(err.detail().unwrap().message, "something else");
    }

    #[test]
    fn refusals_about_declarations_are_traced_to_their_file() {
        let mut d = Declared::default();
        d.add_toml(
            "decl.toml",
            "[[resource_type]]\nname = \"doc\"\n\n[[action]]\nname = \"read doc\"\nresource_types = [\"doc\"]\n",
        )
        .unwrap();
        d.add_policies("p/x.cedar", POLICIES).unwrap();
        // A two-word kind.
        let err = d.sources.locate(api_error(
            "resource type doc: the declarations do not form a valid Cedar schema: ...",
            None,
        ));
        assert_eq!(
            err.detail().unwrap().message,
            "decl.toml: line 1: resource type doc: the declarations do not form a valid Cedar schema: ..."
        );
        let err = d.sources.locate(api_error(
            "action read doc: resource_types: 'x' is not a declared resource type",
            None,
        ));
        assert!(
            err.detail()
                .unwrap()
                .message
                .starts_with("decl.toml: line 4: "),
            "{}",
            err.detail().unwrap().message
        );
        // A stored policy, not in the directory, broken by a declaration.
        let err = d.sources.locate(api_error(
            "resource type doc: the change would break policy 'doc.bad': ...",
            Some(serde_json::json!({"policy": "doc.bad"})),
        ));
        assert!(
            err.detail()
                .unwrap()
                .message
                .starts_with("decl.toml: line 1: "),
            "{}",
            err.detail().unwrap().message
        );
        // An id the server refuses, with a space in it.
        let mut d = Declared::default();
        d.sources
            .declare("policy", "a1 ", location("p/y.cedar", "\n\nx", 2))
            .unwrap();
        let err = d.sources.locate(api_error(
            "policy a1 : id: 'a1 ' is not a policy id",
            Some(serde_json::json!({"field": "id"})),
        ));
        assert!(
            err.detail()
                .unwrap()
                .message
                .starts_with("p/y.cedar: line 3: "),
            "{}",
            err.detail().unwrap().message
        );
    }

    #[test]
    fn a_template_in_a_policy_file_is_refused_with_its_line() {
        let mut d = Declared::default();
        let text = "@id(\"ok.one\")\npermit(principal, action == Action::\"read_ticket\", resource);\n@id(\"guard.tmpl\")\nforbid(principal == ?principal, action, resource);\n";
        let err = d.add_policies("p.cedar", text).unwrap_err().to_string();
        assert!(
            err.starts_with("p.cedar: line 3: templates are not supported"),
            "{err}"
        );
        assert!(d.request.policies.is_empty());
        let err = d
            .add_policies(
                "q.cedar",
                "@id(\"a1 \")\npermit(principal, action, resource);",
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("q.cedar: line 1: id: 'a1 ' is not a policy id"),
            "{err}"
        );
    }

    #[test]
    fn plans_read_as_signed_lines() {
        let response = ApplyResponse {
            changes: vec![
                "role x: create".into(),
                "human y: update".into(),
                "agent z: register".into(),
                "agent z: activate".into(),
                "policy p: created (version 1)".into(),
                "policy q: deleted".into(),
            ],
            unchanged: 4,
            warnings: vec!["agent w: roles differ".into()],
            applied: false,
        };
        let text = render_plan(&response);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            &lines[..6],
            [
                "+ role x: create",
                "~ human y: update",
                "+ agent z: register",
                "~ agent z: activate",
                "+ policy p: created (version 1)",
                "- policy q: deleted"
            ]
        );
        assert_eq!(lines[6], "! agent w: roles differ");
        assert_eq!(lines[7], "4 unchanged");
        let none = render_plan(&ApplyResponse {
            applied: true,
            ..ApplyResponse::default()
        });
        assert_eq!(none, "No changes.\n0 unchanged\napplied");
    }
}
