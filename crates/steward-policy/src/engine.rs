//! A tenant's compiled policies: the schema, the policy set and each policy's
//! metadata, built once and swapped whole when anything changes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{Authorizer, EntityUid, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use steward_core::Error;
use steward_types::{ActionDef, DeterminingPolicy, ErrorCode, Policy, ResourceType};

use crate::cache::EntityCache;
use crate::schema::schema_text;

/// Everything a tenant's engine is compiled from.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Declared resource types.
    pub resource_types: Vec<ResourceType>,
    /// Declared actions.
    pub actions: Vec<ActionDef>,
    /// Current policies.
    pub policies: Vec<Policy>,
    /// Role names (for remediation hints).
    pub roles: Vec<String>,
    /// Personas and their roles (for remediation hints).
    pub personas: Vec<(String, Vec<String>)>,
    /// Policies being written in this change: their errors are
    /// `invalid_policy`; errors in the others mean the change breaks them.
    pub changed_policies: Vec<String>,
    /// Policies allowed to be ones that can never apply (see
    /// [`check_policy`]): `None` when loading what is stored (each is kept,
    /// with a warning, so an engine always loads), or those that already
    /// could not apply before this change (a change must not make another
    /// one so, and a policy written must apply).
    pub tolerated_impossible: Option<Vec<String>>,
}

/// A compiled tenant: cheap to share, never mutated; changes build a new one.
pub struct Engine {
    pub(crate) schema: Schema,
    pub(crate) schema_text: String,
    pub(crate) policies: PolicySet,
    pub(crate) meta: HashMap<String, DeterminingPolicy>,
    /// Each policy's annotations (`@key("value")`), read once at compile:
    /// Cedar's own lookup parses the key on every call.
    pub(crate) annotations: HashMap<String, HashMap<String, String>>,
    /// Declared actions, each with what a decision on it needs ready.
    pub(crate) actions: HashMap<String, PreparedAction>,
    pub(crate) resource_types: HashMap<String, BTreeMap<String, String>>,
    /// The same declarations, parsed.
    pub(crate) resource_decls: HashMap<String, crate::values::Declared>,
    pub(crate) type_names: HashMap<String, cedar_policy::EntityTypeName>,
    /// Attribute names the policies can read (sorted), or `None` to keep
    /// every attribute. See [`referenced_names`].
    pub(crate) referenced: Option<Vec<String>>,
    pub(crate) authorizer: Authorizer,
    pub(crate) empty_context: cedar_policy::Context,
    /// Cedar entities of recent requests, reused only for identical data.
    pub(crate) entity_cache: EntityCache,
    /// Stored policies that can never apply, kept as they were, with why.
    pub(crate) impossible: Vec<(String, String)>,
    /// Each policy as checked, by id: the next compile reuses those whose
    /// text and schema are unchanged instead of parsing and validating them
    /// again (with ten thousand policies, seconds per change).
    pub(crate) checked: HashMap<String, CheckedPolicy>,
}

/// A policy parsed and validated against the schema of its engine.
#[derive(Clone)]
pub(crate) struct CheckedPolicy {
    text: String,
    policy: cedar_policy::Policy,
    effect: &'static str,
    /// Why it can never apply, if Cedar proves so.
    never: Option<Error>,
    /// The names it can read (see [`referenced_names`]); `None` if it has
    /// no JSON form.
    names: Option<BTreeSet<String>>,
    /// The roles and personas it names, as (`Role` or `Persona`, name).
    grants: Vec<(String, String)>,
}

/// The roles and personas `policy` names.
fn policy_grants(policy: &cedar_policy::Policy) -> Vec<(String, String)> {
    policy
        .entity_literals()
        .into_iter()
        .filter_map(|uid| {
            let ty = uid.type_name().to_string();
            (ty == "Role" || ty == "Persona").then(|| (ty, uid.id().unescaped().to_string()))
        })
        .collect()
}

// The server shares engines between threads; the cache must not change that.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Engine>();
};

/// A declared action with its Cedar uid and its slice of the policies.
pub(crate) struct PreparedAction {
    pub(crate) def: ActionDef,
    /// Its declared context, parsed.
    pub(crate) context: crate::values::Declared,
    pub(crate) uid: EntityUid,
    /// Only the policies whose scope can match this action.
    pub(crate) policies: PolicySet,
    /// The roles those policies name (that exist): the only ones whose
    /// grant could change a decision on this action, so the only ones a
    /// denial's remediation tries.
    pub(crate) roles: Vec<String>,
    /// The personas those policies name, or that hold such a role.
    pub(crate) personas: Vec<(String, Vec<String>)>,
}

/// The roles and personas `policies` name, of those that exist (each
/// policy's read when it was checked).
fn named_grants(
    policies: &PolicySet,
    checked: &HashMap<String, CheckedPolicy>,
    roles: &[String],
    personas: &[(String, Vec<String>)],
) -> (Vec<String>, Vec<(String, Vec<String>)>) {
    let mut named: HashSet<(String, String)> = HashSet::new();
    for p in policies.policies() {
        if let Some(c) = checked.get(AsRef::<str>::as_ref(p.id())) {
            named.extend(c.grants.iter().cloned());
        }
    }
    let role_named = |r: &String| named.contains(&("Role".to_string(), r.clone()));
    let roles = roles.iter().filter(|r| role_named(r)).cloned().collect();
    let personas = personas
        .iter()
        .filter(|(name, held)| {
            named.contains(&("Persona".to_string(), name.clone())) || held.iter().any(role_named)
        })
        .cloned()
        .collect();
    (roles, personas)
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policies", &self.meta.len())
            .field("actions", &self.actions.len())
            .finish()
    }
}

/// Build the Cedar schema for declarations, or `invalid_schema` with Cedar's message.
pub fn build_schema(
    resource_types: &[ResourceType],
    actions: &[ActionDef],
) -> Result<(Schema, String), Error> {
    let text = schema_text(
        resource_types
            .iter()
            .map(|r| (r.name.as_str(), &r.attributes)),
        actions,
    );
    Schema::from_cedarschema_str(&text)
        .map(|(schema, _warnings)| (schema, text))
        .map_err(|e| {
            Error::new(
                ErrorCode::InvalidSchema,
                format!(
                    "the declarations do not form a valid Cedar schema: {}",
                    full_message(&e)
                ),
            )
        })
}

/// Parse and validate one policy against a schema. Returns its effect
/// (`permit` or `forbid`), or `invalid_policy` with Cedar's message and the
/// line and column of the problem.
pub fn check_policy(
    schema: &Schema,
    id: &str,
    text: &str,
) -> Result<(cedar_policy::Policy, &'static str), Error> {
    let (policy, effect, impossible) = parse_and_validate(schema, id, text)?;
    match impossible {
        Some(e) => Err(e),
        None => Ok((policy, effect)),
    }
}

/// A policy's `@approval` says `none` or names approver groups, separated
/// by commas: one that names none (`@approval("")`, a stray comma) would
/// read as "no approval" and silently drop the gate it was meant to add.
/// Checked when a policy is put or changed; one stored before the check
/// is kept (a decision then asks the runtime group).
fn check_approval(policy: &cedar_policy::Policy, id: &str, text: &str) -> Result<(), Error> {
    let Some(said) = policy.annotation("approval") else {
        return Ok(());
    };
    let said = said.trim();
    if said == "none" {
        return Ok(());
    }
    let named = said.split(',').map(str::trim);
    if said.is_empty()
        || named
            .clone()
            .any(|g| g.is_empty() || g.chars().any(char::is_whitespace))
    {
        let (line, column) = text
            .find("@approval")
            .map_or((1, 1), |offset| line_column(text, offset));
        return Err(Error::new(
            ErrorCode::InvalidPolicy,
            format!(
                "policy '{id}': @approval(\"{said}\") names no approver group (line {line}, \
                 column {column}): name the groups, separated by commas \
                 (@approval(\"support-leads, finance\")), or say @approval(\"none\")"
            ),
        )
        .with_details(serde_json::json!({ "policy": id, "line": line, "column": column })));
    }
    Ok(())
}

/// A policy that validates, its effect, and, when Cedar proves it can
/// never apply, the error that says so.
type Validated = (cedar_policy::Policy, &'static str, Option<Error>);

fn parse_and_validate(schema: &Schema, id: &str, text: &str) -> Result<Validated, Error> {
    crate::files::check_policy_id(id)?;
    crate::shape::check_shape(text, true).map_err(|e| {
        let mut details = e.details.unwrap_or_else(|| serde_json::json!({}));
        details["policy"] = serde_json::json!(id);
        Error::new(e.code, format!("policy '{id}': {}", e.message)).with_details(details)
    })?;
    crate::shape::roomy(|| validated(schema, id, text))
}

fn validated(schema: &Schema, id: &str, text: &str) -> Result<Validated, Error> {
    let policy = cedar_policy::Policy::parse(Some(PolicyId::new(id)), text)
        .map_err(|e| located(id, text, "does not parse", &e))?;
    let mut set = PolicySet::new();
    set.add(policy.clone())
        .map_err(|e| Error::internal(format!("policy set: {e}")))?;
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    if let Some(err) = result.validation_errors().next() {
        return Err(located(
            id,
            text,
            "does not validate against the schema",
            err,
        ));
    }
    // A policy that can never apply is a guardrail that silently does
    // nothing, typically `has` on an attribute or argument no declaration
    // has (`context.arguments has amout`): refused, with where.
    let impossible = result
        .validation_warnings()
        .find(|w| matches!(w, cedar_policy::ValidationWarning::ImpossiblePolicy(_)))
        .map(|w| {
            located(
                id,
                text,
                "can never apply: its condition is false for every request the schema allows; \
                 check that each attribute it tests with `has` is declared (resource type \
                 attributes, the action's context, the tool's arguments)",
                w,
            )
        });
    let effect = match policy.effect() {
        cedar_policy::Effect::Permit => "permit",
        cedar_policy::Effect::Forbid => "forbid",
    };
    Ok((policy, effect, impossible))
}

/// An `invalid_policy` error pointing at the first labelled span.
fn located(id: &str, text: &str, what: &str, err: &dyn miette::Diagnostic) -> Error {
    let offset = err
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset());
    let (line, column) = offset.map_or((1, 1), |o| line_column(text, o));
    Error::new(
        ErrorCode::InvalidPolicy,
        format!(
            "policy '{id}' {what} (line {line}, column {column}): {}",
            full_message(err)
        ),
    )
    .with_details(serde_json::json!({ "policy": id, "line": line, "column": column }))
}

fn full_message(err: &dyn miette::Diagnostic) -> String {
    let mut message = err.to_string();
    if let Some(help) = err.help() {
        message.push_str(&format!(" ({help})"));
    }
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    if let Some(related) = err.related() {
        for r in related {
            message.push_str(&format!("; {r}"));
        }
    }
    message
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Slice policies by action, so a decision evaluates only the policies that
/// can apply to its action: a policy constrained to `action == A` or
/// `action in [A, B]` lands in those slices; an unconstrained one in all.
/// Decision cost then grows with the policies of one action, not all.
fn slice_by_action(
    actions: &[ActionDef],
    policies: &[cedar_policy::Policy],
) -> Result<HashMap<String, PolicySet>, Error> {
    let mut slices: HashMap<String, PolicySet> = actions
        .iter()
        .map(|a| (a.name.clone(), PolicySet::new()))
        .collect();
    for policy in policies {
        let targets: Vec<String> = match policy.action_constraint() {
            cedar_policy::ActionConstraint::Any => actions.iter().map(|a| a.name.clone()).collect(),
            cedar_policy::ActionConstraint::Eq(uid) => vec![uid.id().unescaped().to_string()],
            cedar_policy::ActionConstraint::In(uids) => uids
                .iter()
                .map(|u| u.id().unescaped().to_string())
                .collect(),
        };
        for t in targets {
            if let Some(set) = slices.get_mut(&t) {
                set.add(policy.clone())
                    .map_err(|e| Error::internal(format!("policy slice: {e}")))?;
            }
        }
    }
    Ok(slices)
}

/// Every string in the policies' JSON form (attribute names, literals,
/// operators, keys): a superset of the attribute names any policy can read.
/// Cedar has no way to reach an entity attribute other than naming it
/// (`e.name`, `e["name"]`, `e has name`), so an attribute whose name is not
/// in this set cannot affect a decision, and need not be built into the
/// entity. `None` (keep every attribute) if a policy has no JSON form.
fn referenced_names<'a>(
    mut per_policy: impl Iterator<Item = &'a Option<BTreeSet<String>>>,
) -> Option<Vec<String>> {
    let mut names = BTreeSet::new();
    per_policy.try_for_each(|p| {
        names.extend(p.as_ref()?.iter().cloned());
        Some(())
    })?;
    Some(names.into_iter().collect())
}

/// The strings of one policy's JSON form, for [`referenced_names`].
fn policy_names(policy: &cedar_policy::Policy) -> Option<BTreeSet<String>> {
    fn collect(v: &serde_json::Value, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::String(s) => {
                out.insert(s.clone());
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            serde_json::Value::Object(fields) => {
                for (k, v) in fields {
                    out.insert(k.clone());
                    collect(v, out);
                }
            }
            _ => {}
        }
    }
    let mut names = BTreeSet::new();
    collect(&policy.to_json().ok()?, &mut names);
    Some(names)
}

impl Engine {
    /// Stored policies Cedar proves can never apply (kept so that the
    /// engine loads), with why: fix or delete them.
    pub fn impossible(&self) -> &[(String, String)] {
        &self.impossible
    }

    /// Compile a catalog. Every policy must validate against the schema the
    /// declarations make; the first that does not is named in the error.
    pub fn compile(catalog: &Catalog) -> Result<Engine, Error> {
        Self::compile_after(catalog, None)
    }

    /// [`Engine::compile`], reusing what `previous` (the tenant's engine
    /// before the change) checked: a policy whose text is unchanged, under a
    /// schema whose text is unchanged, is not parsed and validated again.
    pub fn compile_after(catalog: &Catalog, previous: Option<&Engine>) -> Result<Engine, Error> {
        crate::shape::roomy(|| Self::compile_here(catalog, previous))
    }

    fn compile_here(catalog: &Catalog, previous: Option<&Engine>) -> Result<Engine, Error> {
        let (schema, schema_text) = build_schema(&catalog.resource_types, &catalog.actions)?;
        let reusable = previous.filter(|e| e.schema_text == schema_text);
        let mut policies = PolicySet::new();
        let mut compiled = Vec::with_capacity(catalog.policies.len());
        let mut meta = HashMap::new();
        let mut annotations = HashMap::new();
        let mut impossible = Vec::new();
        let mut checked = HashMap::with_capacity(catalog.policies.len());
        for p in &catalog.policies {
            let broken = |e: Error| {
                if catalog.changed_policies.contains(&p.id) {
                    return e;
                }
                Error::new(
                    ErrorCode::InvalidSchema,
                    format!("the change would break policy '{}': {}", p.id, e.message),
                )
                .with_details(serde_json::json!({ "policy": p.id }))
            };
            let known = reusable
                .and_then(|e| e.checked.get(&p.id))
                .filter(|c| c.text == p.text);
            let this = match known {
                Some(c) => c.clone(),
                None => {
                    let (policy, effect, never) =
                        parse_and_validate(&schema, &p.id, &p.text).map_err(broken)?;
                    CheckedPolicy {
                        text: p.text.clone(),
                        names: policy_names(&policy),
                        grants: policy_grants(&policy),
                        policy,
                        effect,
                        never,
                    }
                }
            };
            let (policy, effect) = (this.policy.clone(), this.effect);
            if catalog.changed_policies.contains(&p.id) {
                check_approval(&policy, &p.id, &p.text)?;
            }
            if let Some(e) = this.never.clone() {
                let tolerated = match &catalog.tolerated_impossible {
                    None => true,
                    Some(ids) => ids.contains(&p.id) && !catalog.changed_policies.contains(&p.id),
                };
                if !tolerated {
                    return Err(broken(e));
                }
                impossible.push((p.id.clone(), e.message));
            }
            policies
                .add(policy.clone())
                .map_err(|e| Error::internal(format!("policy set: {e}")))?;
            annotations.insert(
                p.id.clone(),
                policy
                    .annotations()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            compiled.push(policy);
            checked.insert(p.id.clone(), this);
            meta.insert(
                p.id.clone(),
                DeterminingPolicy {
                    id: p.id.clone(),
                    effect: effect.into(),
                    description: p.description.clone(),
                    owner: p.owner.clone(),
                },
            );
        }
        let mut type_names = HashMap::new();
        for name in crate::schema::BUILTIN_TYPES
            .iter()
            .copied()
            .chain(catalog.resource_types.iter().map(|r| r.name.as_str()))
        {
            let ty = cedar_policy::EntityTypeName::from_str(name)
                .map_err(|e| Error::internal(format!("type name {name}: {e}")))?;
            type_names.insert(name.to_string(), ty);
        }
        let by_action = slice_by_action(&catalog.actions, &compiled)?;
        let action_type = type_names
            .get("Action")
            .ok_or_else(|| Error::internal("the Action type name"))?;
        let actions = catalog
            .actions
            .iter()
            .map(|a| {
                let uid = EntityUid::from_type_name_and_id(
                    action_type.clone(),
                    cedar_policy::EntityId::new(&a.name),
                );
                let policies = by_action.get(&a.name).cloned().unwrap_or_default();
                let (roles, personas) =
                    named_grants(&policies, &checked, &catalog.roles, &catalog.personas);
                let prepared = PreparedAction {
                    roles,
                    personas,
                    def: a.clone(),
                    context: crate::values::Declared::parse_stored(&a.context),
                    uid,
                    policies,
                };
                (a.name.clone(), prepared)
            })
            .collect();
        Ok(Engine {
            referenced: referenced_names(
                catalog
                    .policies
                    .iter()
                    .filter_map(|p| checked.get(&p.id).map(|c: &CheckedPolicy| &c.names)),
            ),
            checked,
            authorizer: Authorizer::new(),
            empty_context: cedar_policy::Context::empty(),
            entity_cache: EntityCache::default(),
            impossible,
            type_names,
            schema,
            schema_text,
            policies,
            meta,
            annotations,
            actions,
            resource_types: catalog
                .resource_types
                .iter()
                .map(|r| (r.name.clone(), r.attributes.clone()))
                .collect(),
            resource_decls: catalog
                .resource_types
                .iter()
                .map(|r| {
                    let parsed = crate::values::Declared::parse_stored(&r.attributes);
                    (r.name.clone(), parsed)
                })
                .collect(),
        })
    }

    /// The schema, for validating a policy before it is stored.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The Cedar schema in its text form.
    pub fn schema_text(&self) -> String {
        self.schema_text.clone()
    }

    /// Declared action names, sorted.
    pub fn action_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.actions.keys().cloned().collect();
        names.sort();
        names
    }

    /// A declared action, if it is declared.
    pub fn action(&self, name: &str) -> Option<&ActionDef> {
        self.actions.get(name).map(|a| &a.def)
    }

    /// Whether `type_name` is a declared resource type.
    pub fn is_resource_type(&self, type_name: &str) -> bool {
        self.resource_types.contains_key(type_name)
    }

    /// The declared attributes of a resource type, if it is declared.
    pub fn resource_attributes(&self, type_name: &str) -> Option<&BTreeMap<String, String>> {
        self.resource_types.get(type_name)
    }

    /// Metadata of a policy by id.
    pub fn policy(&self, id: &str) -> Option<&DeterminingPolicy> {
        self.meta.get(id)
    }

    /// The value of annotation `key` on policy `id` (for example
    /// `@approval("support-leads")`), if the policy has it.
    pub fn annotation(&self, id: &str, key: &str) -> Option<&str> {
        self.annotations
            .get(id)
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    /// The policy set (benchmarks compare against bare Cedar with it).
    pub fn policy_set(&self) -> &PolicySet {
        &self.policies
    }

    /// The parsed declaration of a known resource's type, and the
    /// resource's attributes as a request's.
    fn declared_for(
        &self,
        what: &str,
        entity: &steward_types::ResourceEntity,
    ) -> Result<
        (
            &crate::values::Declared,
            serde_json::Map<String, serde_json::Value>,
        ),
        Error,
    > {
        let declared = self
            .resource_decls
            .get(&entity.resource_type)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::UnknownResourceType,
                    format!(
                        "{what}: '{}' is not a declared resource type",
                        entity.resource_type
                    ),
                )
            })?;
        let given = entity
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok((declared, given))
    }

    /// Check a resource already stored against its type as declared now:
    /// as a decision reads it, so undeclared attributes are ignored.
    pub fn check_stored_entity(&self, entity: &steward_types::ResourceEntity) -> Result<(), Error> {
        let what = format!("stored entity {}::{}", entity.resource_type, entity.id);
        let (declared, given) = self.declared_for(&what, entity)?;
        declared.check(&what, &given)
    }

    /// Check a known resource against its declared type, as a request's
    /// resource attributes are checked, and with no undeclared attribute
    /// (a misspelt one would otherwise be kept and never read).
    pub fn check_entity(&self, entity: &steward_types::ResourceEntity) -> Result<(), Error> {
        let what = format!("entity {}::{}", entity.resource_type, entity.id);
        let (declared, given) = self.declared_for(&what, entity)?;
        if let Some(name) = entity.attributes.keys().find(|k| !declared.contains(k)) {
            return Err(Error::new(
                ErrorCode::InvalidEntity,
                format!(
                    "{what}: attribute '{name}' is not declared for type '{}'",
                    entity.resource_type
                ),
            )
            .with_details(serde_json::json!({ "attribute": name })));
        }
        // Built, so that Cedar also checks what only it can (an extension
        // value's text).
        let attrs = declared.build(&what, &given, &|_| true)?;
        let uid = EntityUid::from_type_name_and_id(
            self.type_names
                .get(&entity.resource_type)
                .cloned()
                .ok_or_else(|| Error::internal("a declared type without its name"))?,
            cedar_policy::EntityId::new(&entity.id),
        );
        cedar_policy::Entity::new(uid, attrs.into_iter().collect(), Default::default())
            .map(|_| ())
            .map_err(|e| Error::new(ErrorCode::InvalidEntity, format!("{what}: {e}")))
    }
}
