//! Admin endpoints (bearer admin token): nodes, service attachments, policy objects, import and
//! export, audit. Edits of policy objects go through [`Store::edit_bundle`]: each is a function
//! over the whole policy, validated by the rulesets crate before anything is stored.
//!
//! [`Store::edit_bundle`]: crate::store::Store::edit_bundle

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tenet_rulesets::api::{NodeAttributes, RegisterRequest, Registration};
use tenet_rulesets::export::{parse_filter_op, parse_logical_op, parse_ruleset_type};
use tenet_rulesets::indexmap::IndexMap;
use tenet_rulesets::names::{self, NameKind};
use tenet_rulesets::{
    Bundle, Filter, FilterEntry, FilterTest, Filterset, Meta, ModuleRef, Moduleset, Ruleset,
    RulesetType, VarValue, Variable,
};

use super::node::attach_kind;
use super::{Admin, ApiError, AppState, blocking};
use crate::error::{Error, Result};
use crate::store::{EditOutcome, Target, now_text};

fn json_body<T>(body: std::result::Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::new(e.status(), e.body_text()))
}

/// Most services one node may be assigned.
const MAX_NODE_SERVICES: usize = 1_000;

/// Checks admin-assigned attributes: a team and service names of valid grammar, services
/// listed once, at most [`MAX_NODE_SERVICES`].
fn check_attributes(a: &NodeAttributes) -> Result<(), ApiError> {
    if let Some(t) = &a.team_responsible {
        names::check(NameKind::Team, t)
            .map_err(|e| ApiError::bad_request(format!("team_responsible: {e}")))?;
    }
    if a.services.len() > MAX_NODE_SERVICES {
        return Err(ApiError::bad_request(format!(
            "services: {} services, over the limit of {MAX_NODE_SERVICES}",
            a.services.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for s in &a.services {
        names::check(NameKind::Service, s)
            .map_err(|e| ApiError::bad_request(format!("services: {e}")))?;
        if !seen.insert(s) {
            return Err(ApiError::bad_request(format!(
                "services: {} is listed twice",
                names::shown(s)
            )));
        }
    }
    Ok(())
}

/// `POST /api/v1/nodes`: registers a node, with its admin-assigned attributes
/// (`team_responsible`, `services`), and returns its credentials, once.
pub async fn register_node(
    State(state): State<AppState>,
    Admin(caller): Admin,
    body: std::result::Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = json_body(body)?;
    let name = req.name.clone();
    names::check(NameKind::Node, &name).map_err(|e| ApiError::bad_request(format!("name: {e}")))?;
    let attributes = NodeAttributes {
        team_responsible: req.team_responsible,
        services: req.services,
    };
    check_attributes(&attributes)?;
    let id = uuid::Uuid::new_v4().to_string();
    let secret = crate::auth::new_secret();
    let digest = crate::auth::digest(&secret);
    let store = state.store.clone();
    let (i, n, actor) = (id.clone(), name.clone(), caller.actor());
    blocking(move || store.register_node_with(&i, &n, &digest, &attributes, &actor)).await?;
    Ok((
        StatusCode::CREATED,
        Json(Registration {
            node_id: id,
            name,
            secret,
        }),
    )
        .into_response())
}

/// `GET /api/v1/nodes`: every node with its compliance summary.
pub async fn list_nodes(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    Ok(Json(blocking(move || store.list_nodes()).await?).into_response())
}

/// `PUT /api/v1/nodes/{node}`: replaces the node's admin-assigned attributes (a field left out
/// is emptied). These, never the node's facts, decide what it may attach and which services it
/// may act for.
pub async fn put_node_attributes(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(node): Path<String>,
    body: std::result::Result<Json<NodeAttributes>, JsonRejection>,
) -> Result<Response, ApiError> {
    let attributes = json_body(body)?;
    check_attributes(&attributes)?;
    let node = caller.node(&state, &node).await?;
    let store = state.store.clone();
    let actor = caller.actor();
    let id = node.id.clone();
    let stored = blocking(move || {
        store.set_node_attributes(&id, &attributes, &actor)?;
        store.node_attributes(&id)
    })
    .await?;
    Ok(Json(serde_json::json!({
        "node_id": node.id,
        "name": node.name,
        "team_responsible": stored.team_responsible,
        "services": stored.services,
    }))
    .into_response())
}

/// `DELETE /api/v1/nodes/{node}`.
pub async fn delete_node(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(node): Path<String>,
) -> Result<StatusCode, ApiError> {
    let node = caller.node(&state, &node).await?;
    let store = state.store.clone();
    let actor = caller.actor();
    blocking(move || store.delete_node(&node.id, &actor)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/services/{svc}/attachments`.
pub async fn service_attachments(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(svc): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    Ok(Json(blocking(move || store.attachments(&Target::Service(svc))).await?).into_response())
}

/// `POST /api/v1/services/{svc}/{modulesets|rulesets}/{name}`.
pub async fn service_attach(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path((svc, kind, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    service_change(state, caller, svc, kind, name, true).await
}

/// `DELETE /api/v1/services/{svc}/{modulesets|rulesets}/{name}`.
pub async fn service_detach(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path((svc, kind, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    service_change(state, caller, svc, kind, name, false).await
}

async fn service_change(
    state: AppState,
    caller: super::Caller,
    svc: String,
    kind: String,
    name: String,
    attach: bool,
) -> Result<Response, ApiError> {
    let kind = attach_kind(&kind)?;
    // The first attachment creates the service.
    names::check(NameKind::Service, &svc).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let store = state.store.clone();
    let actor = caller.actor();
    let target = Target::Service(svc.clone());
    let n = name.clone();
    let changed = blocking(move || {
        if attach {
            store.attach(&target, kind, &n, &actor)
        } else {
            store.detach(&target, kind, &n, &actor)
        }
    })
    .await?;
    Ok(Json(serde_json::json!({
        "service": svc, kind.as_str(): name, "attached": attach, "changed": changed
    }))
    .into_response())
}

// ---- policy objects ----

async fn bundle(state: &AppState) -> Result<std::sync::Arc<Bundle>, ApiError> {
    let policies = state.policies.clone();
    Ok(blocking(move || policies.bundle()).await?.1)
}

/// Applies an edit; answers with the generation and whether anything changed.
async fn edit(
    state: &AppState,
    caller: &super::Caller,
    status: StatusCode,
    f: impl FnOnce(&mut Bundle) -> Result<(String, String, String)> + Send + 'static,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let actor = caller.actor();
    let EditOutcome {
        generation,
        changed,
    } = blocking(move || store.edit_bundle(&actor, Box::new(f))).await?;
    Ok((
        status,
        Json(serde_json::json!({"generation": generation, "changed": changed})),
    )
        .into_response())
}

fn audit(action: &str, object: String, detail: String) -> Result<(String, String, String)> {
    Ok((action.to_string(), object, detail))
}

/// A kind of policy object: the admin API lists, shows, creates and deletes every kind the
/// same way (`GET /{kind}s`, `GET` and `DELETE /{kind}s/{name}`, and the existence check and
/// audit of `POST /{kind}s`); only what differs (the input of a create, a ruleset's list
/// summary) is written per kind.
pub trait PolicyKind: Serialize + Send + Sync + Sized + 'static {
    /// `ruleset`, `filterset`, `moduleset`: in messages and audit actions.
    const KIND: &'static str;
    /// The objects of this kind in a bundle.
    fn table(b: &Bundle) -> &IndexMap<String, Self>;
    /// The same, to edit.
    fn table_mut(b: &mut Bundle) -> &mut IndexMap<String, Self>;
    /// The object `name` of this kind, to edit (404 when there is none).
    fn find_mut<'a>(b: &'a mut Bundle, name: &str) -> Result<&'a mut Self> {
        Self::table_mut(b)
            .get_mut(name)
            .ok_or_else(|| Error::not_found(Self::KIND, name))
    }
    /// One entry of the list (`GET /{kind}s`): the whole object unless a kind says otherwise.
    fn summary(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl PolicyKind for Ruleset {
    const KIND: &'static str = "ruleset";
    fn table(b: &Bundle) -> &IndexMap<String, Self> {
        &b.rulesets
    }
    fn table_mut(b: &mut Bundle) -> &mut IndexMap<String, Self> {
        &mut b.rulesets
    }
    fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name, "kind": self.kind, "public": self.public,
            "filterset": self.filterset, "children": self.children,
            "variables": self.variables.len(),
        })
    }
}

impl PolicyKind for Filterset {
    const KIND: &'static str = "filterset";
    fn table(b: &Bundle) -> &IndexMap<String, Self> {
        &b.filtersets
    }
    fn table_mut(b: &mut Bundle) -> &mut IndexMap<String, Self> {
        &mut b.filtersets
    }
}

impl PolicyKind for Moduleset {
    const KIND: &'static str = "moduleset";
    fn table(b: &Bundle) -> &IndexMap<String, Self> {
        &b.modulesets
    }
    fn table_mut(b: &mut Bundle) -> &mut IndexMap<String, Self> {
        &mut b.modulesets
    }
}

/// Removes the member `member` (a variable, a module) of the object `owner` (404 naming
/// `owner/member` when it has none).
fn remove_member<T>(
    list: &mut Vec<T>,
    name_of: impl Fn(&T) -> &String,
    what: &'static str,
    owner: &str,
    member: &str,
) -> Result<()> {
    let before = list.len();
    list.retain(|x| name_of(x) != member);
    if list.len() == before {
        return Err(Error::not_found(what, format!("{owner}/{member}")));
    }
    Ok(())
}

/// `GET /api/v1/{kind}s`.
pub async fn list<K: PolicyKind>(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Response, ApiError> {
    let b = bundle(&state).await?;
    let list: Vec<_> = K::table(&b).values().map(K::summary).collect();
    Ok(Json(list).into_response())
}

/// `GET /api/v1/{kind}s/{name}`.
pub async fn show<K: PolicyKind>(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let b = bundle(&state).await?;
    let object = K::table(&b)
        .get(&name)
        .ok_or_else(|| ApiError::from(Error::not_found(K::KIND, &name)))?;
    Ok(Json(object).into_response())
}

/// `DELETE /api/v1/{kind}s/{name}`: refused (400, naming the referrer) while another object
/// refers to it; a moduleset's attachments go with it.
pub async fn delete<K: PolicyKind>(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    edit(&state, &caller, StatusCode::OK, move |b| {
        K::table_mut(b)
            .shift_remove(&name)
            .ok_or_else(|| Error::not_found(K::KIND, &name))?;
        let kind = K::KIND;
        audit(
            &format!("{kind}.delete"),
            format!("{kind} {name}"),
            String::new(),
        )
    })
    .await
}

/// Creates the object `build` makes under `name` (409 when it exists; 201 and an audit entry
/// otherwise).
async fn create<K: PolicyKind>(
    state: &AppState,
    caller: &super::Caller,
    name: String,
    build: impl FnOnce() -> Result<K> + Send + 'static,
) -> Result<Response, ApiError> {
    edit(state, caller, StatusCode::CREATED, move |b| {
        let kind = K::KIND;
        if K::table(b).contains_key(&name) {
            return Err(Error::Conflict(format!("{kind} {name} already exists")));
        }
        K::table_mut(b).insert(name.clone(), build()?);
        audit(
            &format!("{kind}.create"),
            format!("{kind} {name}"),
            String::new(),
        )
    })
    .await
}

/// A variable as the API takes it: `value` (any JSON) or `text` (an OpenSVC `var_value`,
/// parsed as JSON when it is JSON, kept verbatim otherwise), exactly one of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableIn {
    /// Variable name (given in the path for `PUT .../variables/{var}`).
    #[serde(default)]
    name: Option<String>,
    /// Object class (`file`, `sysctl`, `package`, `raw`, ...).
    class: String,
    /// The value as JSON.
    #[serde(default)]
    value: Option<serde_json::Value>,
    /// The value as OpenSVC text.
    #[serde(default)]
    text: Option<String>,
}

impl VariableIn {
    fn into_variable(self, name: String, at: &str, author: &str) -> Result<Variable> {
        let value = match (self.value, self.text) {
            (Some(v), None) => VarValue::Json(v),
            (None, Some(t)) => VarValue::from_text(&t),
            _ => {
                return Err(Error::BadRequest(format!(
                    "{at}: give exactly one of value (JSON) or text (OpenSVC text)"
                )));
            }
        };
        if name.is_empty() {
            return Err(Error::BadRequest(format!("{at}.name: empty")));
        }
        if self.class.is_empty() {
            return Err(Error::BadRequest(format!("{at}.class: empty")));
        }
        Ok(Variable {
            name,
            class: self.class,
            value,
            id: None,
            author: Some(author.to_string()),
            updated: Some(now_text()),
        })
    }
}

/// `POST /api/v1/rulesets` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesetIn {
    name: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    public: Option<bool>,
    #[serde(default)]
    filterset: Option<String>,
    #[serde(default)]
    children: Vec<String>,
    #[serde(default)]
    variables: Vec<VariableIn>,
    #[serde(default)]
    publications: Vec<String>,
    #[serde(default)]
    responsibles: Vec<String>,
}

fn ruleset_kind(kind: Option<&str>) -> Result<RulesetType> {
    match kind {
        None => Ok(RulesetType::Explicit),
        Some(k) => parse_ruleset_type(k).ok_or_else(|| {
            Error::BadRequest(format!("kind: {k:?} is not one of explicit, contextual"))
        }),
    }
}

/// `POST /api/v1/rulesets`.
pub async fn create_ruleset(
    State(state): State<AppState>,
    Admin(caller): Admin,
    body: std::result::Result<Json<RulesetIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let input = json_body(body)?;
    let author = caller.actor();
    create::<Ruleset>(&state, &caller, input.name.clone(), move || {
        if input.name.is_empty() {
            return Err(Error::BadRequest("name: empty".into()));
        }
        let mut variables = Vec::new();
        for (i, v) in input.variables.into_iter().enumerate() {
            let at = format!("variables[{i}]");
            let name = v
                .name
                .clone()
                .ok_or_else(|| Error::BadRequest(format!("{at}.name: missing")))?;
            variables.push(v.into_variable(name, &at, &author)?);
        }
        Ok(Ruleset {
            name: input.name,
            kind: ruleset_kind(input.kind.as_deref())?,
            filterset: input.filterset,
            public: input.public.unwrap_or(true),
            children: input.children,
            variables,
            meta: Meta {
                id: None,
                publications: input.publications,
                responsibles: input.responsibles,
            },
        })
    })
    .await
}

/// `PATCH /api/v1/rulesets/{name}` body: the fields to change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesetPatch {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    public: Option<bool>,
    /// `null` removes the filterset.
    #[serde(default, with = "double_option")]
    filterset: Option<Option<String>>,
    #[serde(default)]
    publications: Option<Vec<String>>,
    #[serde(default)]
    responsibles: Option<Vec<String>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Ok(Some(Option::deserialize(d)?))
    }
}

/// `PATCH /api/v1/rulesets/{name}`.
pub async fn patch_ruleset(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(name): Path<String>,
    body: std::result::Result<Json<RulesetPatch>, JsonRejection>,
) -> Result<Response, ApiError> {
    let patch = json_body(body)?;
    edit(&state, &caller, StatusCode::OK, move |b| {
        let rs = Ruleset::find_mut(b, &name)?;
        let mut changed = Vec::new();
        if let Some(k) = patch.kind {
            rs.kind = ruleset_kind(Some(&k))?;
            changed.push("kind");
        }
        if let Some(p) = patch.public {
            rs.public = p;
            changed.push("public");
        }
        if let Some(f) = patch.filterset {
            rs.filterset = f;
            changed.push("filterset");
        }
        if let Some(p) = patch.publications {
            rs.meta.publications = p;
            changed.push("publications");
        }
        if let Some(r) = patch.responsibles {
            rs.meta.responsibles = r;
            changed.push("responsibles");
        }
        audit(
            "ruleset.update",
            format!("ruleset {name}"),
            changed.join(","),
        )
    })
    .await
}

/// `PUT /api/v1/rulesets/{name}/variables/{var}`: creates or replaces the variable.
pub async fn put_variable(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path((name, var)): Path<(String, String)>,
    body: std::result::Result<Json<VariableIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let input = json_body(body)?;
    if input.name.as_ref().is_some_and(|n| *n != var) {
        return Err(ApiError::bad_request(format!(
            "name: {:?} differs from the variable in the path ({var:?})",
            input.name.unwrap_or_default()
        )));
    }
    let author = caller.actor();
    edit(&state, &caller, StatusCode::OK, move |b| {
        let rs = Ruleset::find_mut(b, &name)?;
        let v = input.into_variable(var.clone(), "body", &author)?;
        match rs.variables.iter_mut().find(|x| x.name == var) {
            Some(existing) => {
                // Keep the collector id of an imported variable for round-trips.
                let id = existing.id;
                *existing = Variable { id, ..v };
            }
            None => rs.variables.push(v),
        }
        audit("variable.set", format!("ruleset {name}"), var)
    })
    .await
}

/// `DELETE /api/v1/rulesets/{name}/variables/{var}`.
pub async fn delete_variable(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path((name, var)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    edit(&state, &caller, StatusCode::OK, move |b| {
        let rs = Ruleset::find_mut(b, &name)?;
        remove_member(&mut rs.variables, |v| &v.name, "variable", &name, &var)?;
        audit("variable.delete", format!("ruleset {name}"), var)
    })
    .await
}

/// `POST /api/v1/rulesets/{name}/children/{child}`: nests `child` (cycles are refused).
pub async fn add_ruleset_child(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path((name, child)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    edit(&state, &caller, StatusCode::OK, move |b| {
        if !b.rulesets.contains_key(&child) {
            return Err(Error::not_found("ruleset", &child));
        }
        let rs = Ruleset::find_mut(b, &name)?;
        if !rs.children.contains(&child) {
            rs.children.push(child.clone());
        }
        audit("ruleset.nest", format!("ruleset {name}"), child)
    })
    .await
}

/// `DELETE /api/v1/rulesets/{name}/children/{child}`.
pub async fn remove_ruleset_child(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path((name, child)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    edit(&state, &caller, StatusCode::OK, move |b| {
        let rs = Ruleset::find_mut(b, &name)?;
        rs.children.retain(|c| *c != child);
        audit("ruleset.unnest", format!("ruleset {name}"), child)
    })
    .await
}

/// One filterset entry as the API takes it: a comparison or a nested filterset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterIn {
    /// `AND`, `OR`, `AND NOT`, `OR NOT` (default `AND`).
    #[serde(default)]
    logical_op: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    value: Option<String>,
    /// A nested filterset, instead of table/field/op/value.
    #[serde(default)]
    filterset: Option<String>,
}

/// A filterset as the API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiltersetIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    stats: bool,
    filters: Vec<FilterIn>,
}

fn filterset_from(name: String, input: FiltersetIn) -> Result<Filterset> {
    let mut filters = Vec::new();
    for (i, f) in input.filters.into_iter().enumerate() {
        let at = format!("filters[{i}]");
        let lop = f.logical_op.as_deref().unwrap_or("AND");
        let logical_op = parse_logical_op(lop).ok_or_else(|| {
            Error::BadRequest(format!(
                "{at}.logical_op: {lop:?} is not one of AND, OR, AND NOT, OR NOT"
            ))
        })?;
        let test = match (f.filterset, f.table, f.field, f.op, f.value) {
            (Some(fs), None, None, None, None) => FilterTest::Filterset(fs),
            (None, Some(table), Some(field), Some(op), Some(value)) => {
                let op_parsed = parse_filter_op(&op).ok_or_else(|| {
                    Error::BadRequest(format!(
                        "{at}.op: {op:?} is not one of =, !=, LIKE, NOT LIKE, <, <=, >, >=, IN, NOT IN"
                    ))
                })?;
                FilterTest::Filter(Filter {
                    table,
                    field,
                    op: op_parsed,
                    value,
                    id: None,
                })
            }
            _ => {
                return Err(Error::BadRequest(format!(
                    "{at}: give either filterset, or all of table, field, op and value"
                )));
            }
        };
        filters.push(FilterEntry {
            logical_op,
            order: i as i64,
            test,
        });
    }
    Ok(Filterset {
        name,
        stats: input.stats,
        id: None,
        filters,
    })
}

/// `POST /api/v1/filtersets`.
pub async fn create_filterset(
    State(state): State<AppState>,
    Admin(caller): Admin,
    body: std::result::Result<Json<FiltersetIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let input = json_body(body)?;
    let Some(name) = input.name.clone().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request("name: missing"));
    };
    create::<Filterset>(&state, &caller, name.clone(), move || {
        filterset_from(name, input)
    })
    .await
}

/// `PUT /api/v1/filtersets/{name}`: creates or replaces the filterset.
pub async fn replace_filterset(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(name): Path<String>,
    body: std::result::Result<Json<FiltersetIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let input = json_body(body)?;
    if input.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::bad_request(
            "name: differs from the filterset in the path",
        ));
    }
    edit(&state, &caller, StatusCode::OK, move |b| {
        let fs = filterset_from(name.clone(), input)?;
        b.filtersets.insert(name.clone(), fs);
        audit("filterset.set", format!("filterset {name}"), String::new())
    })
    .await
}

/// A moduleset as the API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulesetIn {
    name: String,
    #[serde(default)]
    modules: Vec<ModuleIn>,
    #[serde(default)]
    children: Vec<String>,
    #[serde(default)]
    rulesets: Vec<String>,
    #[serde(default)]
    publications: Vec<String>,
    #[serde(default)]
    responsibles: Vec<String>,
}

/// A module of a moduleset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    autofix: bool,
}

/// `POST /api/v1/modulesets`.
pub async fn create_moduleset(
    State(state): State<AppState>,
    Admin(caller): Admin,
    body: std::result::Result<Json<ModulesetIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let input = json_body(body)?;
    if input.name.is_empty() {
        return Err(ApiError::from(Error::BadRequest("name: empty".into())));
    }
    create::<Moduleset>(&state, &caller, input.name.clone(), move || {
        let mut modules = Vec::new();
        for (i, m) in input.modules.into_iter().enumerate() {
            let name = m
                .name
                .filter(|n| !n.is_empty())
                .ok_or_else(|| Error::BadRequest(format!("modules[{i}].name: missing")))?;
            modules.push(ModuleRef {
                name,
                autofix: m.autofix,
            });
        }
        Ok(Moduleset {
            name: input.name,
            modules,
            children: input.children,
            rulesets: input.rulesets,
            meta: Meta {
                id: None,
                publications: input.publications,
                responsibles: input.responsibles,
            },
        })
    })
    .await
}

/// `PUT /api/v1/modulesets/{name}/modules/{module}` body `{"autofix": bool}`.
pub async fn put_module(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path((name, module)): Path<(String, String)>,
    body: std::result::Result<Json<ModuleIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let input = json_body(body)?;
    edit(&state, &caller, StatusCode::OK, move |b| {
        let ms = Moduleset::find_mut(b, &name)?;
        match ms.modules.iter_mut().find(|m| m.name == module) {
            Some(m) => m.autofix = input.autofix,
            None => ms.modules.push(ModuleRef {
                name: module.clone(),
                autofix: input.autofix,
            }),
        }
        audit("module.set", format!("moduleset {name}"), module)
    })
    .await
}

/// `DELETE /api/v1/modulesets/{name}/modules/{module}`.
pub async fn delete_module(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path((name, module)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    edit(&state, &caller, StatusCode::OK, move |b| {
        let ms = Moduleset::find_mut(b, &name)?;
        remove_member(&mut ms.modules, |m| &m.name, "module", &name, &module)?;
        audit("module.delete", format!("moduleset {name}"), module)
    })
    .await
}

fn relation_edit(
    list: impl FnOnce(&mut Bundle) -> Result<&mut Vec<String>>,
    b: &mut Bundle,
    item: &str,
    add: bool,
) -> Result<()> {
    let l = list(b)?;
    if add {
        if !l.iter().any(|x| x == item) {
            l.push(item.to_string());
        }
    } else {
        l.retain(|x| x != item);
    }
    Ok(())
}

/// `POST /api/v1/modulesets/{name}/children/{child}`.
pub async fn add_moduleset_child(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path((name, child)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    moduleset_relation(state, caller, name, child, true, true).await
}

/// `DELETE /api/v1/modulesets/{name}/children/{child}`.
pub async fn remove_moduleset_child(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path((name, child)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    moduleset_relation(state, caller, name, child, true, false).await
}

/// `POST /api/v1/modulesets/{name}/rulesets/{ruleset}`.
pub async fn add_moduleset_ruleset(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path((name, rs)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    moduleset_relation(state, caller, name, rs, false, true).await
}

/// `DELETE /api/v1/modulesets/{name}/rulesets/{ruleset}`.
pub async fn remove_moduleset_ruleset(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path((name, rs)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    moduleset_relation(state, caller, name, rs, false, false).await
}

async fn moduleset_relation(
    state: AppState,
    caller: super::Caller,
    name: String,
    item: String,
    child: bool,
    add: bool,
) -> Result<Response, ApiError> {
    edit(&state, &caller, StatusCode::OK, move |b| {
        if add {
            let exists = if child {
                b.modulesets.contains_key(&item)
            } else {
                b.rulesets.contains_key(&item)
            };
            if !exists {
                let kind = if child { "moduleset" } else { "ruleset" };
                return Err(Error::not_found(kind, &item));
            }
        }
        let n = name.clone();
        relation_edit(
            move |b| {
                let ms = Moduleset::find_mut(b, &n)?;
                Ok(if child {
                    &mut ms.children
                } else {
                    &mut ms.rulesets
                })
            },
            b,
            &item,
            add,
        )?;
        let what = match (child, add) {
            (true, true) => "moduleset.nest",
            (true, false) => "moduleset.unnest",
            (false, true) => "moduleset.ruleset.add",
            (false, false) => "moduleset.ruleset.remove",
        };
        audit(what, format!("moduleset {name}"), item)
    })
    .await
}

// ---- import / export ----

/// Merges `incoming` into `b` by name: objects with a new name are added, objects with an
/// existing name are replaced whole; objects not in `incoming` are kept. Returns the counts.
pub fn merge(b: &mut Bundle, incoming: Bundle) -> (usize, usize, usize) {
    let counts = (
        incoming.rulesets.len(),
        incoming.filtersets.len(),
        incoming.modulesets.len(),
    );
    for (k, v) in incoming.filtersets {
        b.filtersets.insert(k, v);
    }
    for (k, v) in incoming.rulesets {
        b.rulesets.insert(k, v);
    }
    for (k, v) in incoming.modulesets {
        b.modulesets.insert(k, v);
    }
    counts
}

/// Parses an import body: an OpenSVC export JSON, or one Tenet TOML document.
pub fn parse_import(body: &[u8], content_type: Option<&str>) -> Result<Bundle> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Error::BadRequest("request body: not UTF-8".into()))?;
    let is_toml =
        content_type.is_some_and(|c| c.contains("toml")) || !text.trim_start().starts_with('{');
    Ok(if is_toml {
        tenet_rulesets::toml_format::from_toml_str(text, "request body")?
    } else {
        tenet_rulesets::export::from_json(text, "request body")?
    })
}

/// `POST /api/v1/import`: all or nothing.
pub async fn import(
    State(state): State<AppState>,
    Admin(caller): Admin,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let incoming = parse_import(&body, ct.as_deref())?;
    edit(&state, &caller, StatusCode::OK, move |b| {
        let (r, f, m) = merge(b, incoming);
        audit(
            "import",
            "policy".into(),
            format!("{r} rulesets, {f} filtersets, {m} modulesets"),
        )
    })
    .await
}

/// Query of `GET /api/v1/export`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `json` (OpenSVC export, default) or `toml` (one Tenet TOML document).
    #[serde(default)]
    format: Option<String>,
}

/// `GET /api/v1/export[?format=json|toml]`.
pub async fn export(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let b = bundle(&state).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok((
            [(header::CONTENT_TYPE, "application/json")],
            tenet_rulesets::export::to_json(&b),
        )
            .into_response()),
        Some("toml") => Ok((
            [(header::CONTENT_TYPE, "application/toml")],
            tenet_rulesets::toml_format::to_toml_string(&b),
        )
            .into_response()),
        Some(other) => Err(ApiError::bad_request(format!(
            "format: {other:?} is not one of json, toml"
        ))),
    }
}

/// `GET /api/v1/policies/{hash}`: a policy as served, by hash.
pub async fn policy_snapshot(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(hash): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let h = hash.clone();
    match blocking(move || store.policy_snapshot(&h)).await? {
        Some(text) => Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response()),
        None => Err(Error::not_found("policy", hash).into()),
    }
}

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    limit: Option<u32>,
}

/// `GET /api/v1/audit[?limit=N]`: newest first (default 100, at most 10,000).
pub async fn audit_log(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).min(10_000);
    let store = state.store.clone();
    Ok(Json(blocking(move || store.audit_log(limit)).await?).into_response())
}

/// Query of `GET /api/v1/compliance/daily`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyQuery {
    /// Days back from today (default 30, at most 3660).
    days: Option<u32>,
    /// One module instead of whole nodes.
    module: Option<String>,
}

/// `GET /api/v1/compliance/daily[?days=30][&module=M]` (admin): compliance per day from the
/// daily aggregates, oldest first, each day with its compliant share.
pub async fn compliance_daily(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<DailyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let days = i64::from(q.days.unwrap_or(30).min(3660));
    let since = (time::OffsetDateTime::now_utc() - time::Duration::days(days)).date();
    let f = time::macros::format_description!("[year]-[month]-[day]");
    let since = since.format(&f).unwrap_or_default();
    let store = state.store.clone();
    let rows = blocking(move || store.compliance_daily(&since, q.module.as_deref())).await?;
    let out: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            let share = if r.subjects > 0 {
                r.compliant as f64 / r.subjects as f64
            } else {
                0.0
            };
            serde_json::json!({
                "day": r.day, "subjects": r.subjects, "compliant": r.compliant,
                "share": share, "ok": r.ok, "nok": r.nok, "na": r.na,
            })
        })
        .collect();
    Ok(Json(out).into_response())
}
