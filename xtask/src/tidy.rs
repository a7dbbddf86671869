//! Architecture checks, each mechanical, each run by `cargo xtask tidy` and by `cargo test`:
//!
//! - **Layers.** Every workspace crate has exactly one layer in [`LAYERS`], and every entry there
//!   is a workspace crate, so the table cannot drift from the workspace.
//! - **Domain crates are pure.** A domain crate may not reach, directly or through anything it
//!   pulls in, a database driver, web framework, cache client, cloud SDK, async runtime, or any
//!   workspace crate outside the domain layer.
//! - **The use-case layer reaches no transport.** `app` may use adapters (and so sqlx, tokio) but
//!   not the HTTP server, the command line or the configuration loader of the doors.
//! - **Adapters stand side by side.** An adapter uses another adapter only through an edge written
//!   down in [`ADAPTER_DEPENDENCIES`] with its reason, and never reaches `app` or `api`.
//! - **Routes stay thin.** Route files do not talk to the database or write audit events
//!   themselves: that is the use-case layer's job. [`ROUTES_NOT_YET_THIN`] lists the files still
//!   waiting for their move.
//! - **The Postgres adapter sends its statements one way.** Outside `sql.rs`, no file of
//!   `crates/store-postgres/src` calls `sqlx::query`, `query_as` or `query_scalar` (or their
//!   macros) directly: those always name and cache their statements, which a transaction pooler
//!   that cannot track them breaks; `sql.rs` sends them as `database.prepared_statements` says.
//! - **The RLS context changes only where written down.** `store_postgres::audit::record_unsealed`
//!   writes several practices' entries in one transaction, switching the context between them:
//!   outside the Postgres adapter that defines it, only the files in [`CONTEXT_SWITCHERS`] may
//!   name it, each with its reason, so no use case can quietly act for a second practice in its
//!   transaction.
//! - **No module import cycles** between the top-level modules of any workspace crate, apart from
//!   the ones in [`KNOWN_CYCLES`] (empty today).
//!
//! The dependency checks read `cargo metadata`, so they see the real resolved graph. Normal
//! dependencies only: dev- and build-dependencies do not end up in the crate itself. The baselines
//! ([`ROUTES_NOT_YET_THIN`], [`KNOWN_CYCLES`], [`ADAPTER_DEPENDENCIES`]) only shrink: an entry that
//! no longer matches anything is itself a failure, so a fixed file cannot regress unnoticed.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a crate sits in the architecture. Dependencies point from the doors down:
/// doors -> use cases -> adapters -> domain. Tooling stands aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Rules and ports only: no I/O, no framework types.
    Domain,
    /// The use cases (`crates/app`): one function per thing a caller can do, transport-free.
    UseCases,
    /// Implementations of the domain's ports: database, cache, KMS, notifications, telemetry.
    Adapter,
    /// The ways in: HTTP API and command line. The only place that wires adapters to ports.
    Doors,
    /// Test support and the project's own tooling.
    Tooling,
}

/// Every workspace crate and its layer. One table, checked against `cargo metadata` both ways.
pub const LAYERS: &[(&str, Layer)] = &[
    ("kernel", Layer::Domain),
    ("audit", Layer::Domain),
    ("crypto", Layer::Domain),
    ("consent", Layer::Domain),
    ("patients", Layer::Domain),
    ("scheduling", Layer::Domain),
    ("identity", Layer::Domain),
    ("webhooks", Layer::Domain),
    ("app", Layer::UseCases),
    ("store-postgres", Layer::Adapter),
    ("cache-redis", Layer::Adapter),
    ("kms-local", Layer::Adapter),
    ("kms-aws", Layer::Adapter),
    ("kms-vault", Layer::Adapter),
    ("kms-azure", Layer::Adapter),
    ("kms-http", Layer::Adapter),
    ("notifiers", Layer::Adapter),
    ("telemetry", Layer::Adapter),
    ("api", Layer::Doors),
    ("testkit", Layer::Tooling),
    ("xtask", Layer::Tooling),
];

/// Crate name prefixes a domain crate must never reach.
const FORBIDDEN_PREFIXES: &[&str] = &[
    "sqlx",
    "actix",
    "awc",
    "redis",
    "deadpool",
    "aws-",
    "azure_",
    "vaultrs",
    "tokio",
    "hyper",
    "reqwest",
    "tonic",
    "opentelemetry",
];

/// Crate name prefixes of transports and configuration loading, which belong to the doors: the
/// use-case layer must never reach them (nor the `api` crate itself).
const TRANSPORT_PREFIXES: &[&str] = &["actix", "awc", "clap", "utoipa", "figment"];

/// The only direct dependencies allowed between two adapter crates: (from, to, reason).
pub const ADAPTER_DEPENDENCIES: &[(&str, &str, &str)] = &[
    (
        "store-postgres",
        "telemetry",
        "metrics: the transaction-open latency and the audit append counter are recorded where \
         they happen, one call each into telemetry::metrics (a no-op until metrics are installed)",
    ),
    (
        "kms-vault",
        "kms-http",
        "Vault transit is called over HTTPS: kms-http is the one shared client (rustls on ring, \
         no redirects, optional private CA) and retry policy, so a fix reaches every HTTP adapter",
    ),
    (
        "kms-azure",
        "kms-http",
        "Azure Key Vault is called over HTTPS: kms-http is the one shared client (rustls on ring, \
         no redirects, optional private CA) and retry policy, so a fix reaches every HTTP adapter",
    ),
    (
        "notifiers",
        "kms-http",
        "the Twilio and WhatsApp notifiers call HTTPS APIs: they reuse kms-http's client (rustls \
         on ring, no redirects) and retry policy instead of building a second one",
    ),
];

/// The route files, relative to the workspace root.
const ROUTES_DIR: &str = "apps/api/src/routes";

/// What a thin route file must not contain: database access and audit writing belong to the
/// use-case layer (`crates/app`). Opening a transaction (`begin(`) is checked separately.
const FAT_ROUTE_TOKENS: &[&str] = &["store_postgres", "sqlx", "AuditEvent::new"];

/// Route files (relative to `apps/api/src/routes/`) still doing the use-case layer's work, and why.
/// Shrinks as handlers move into `crates/app`: a listed file that is thin now, or gone, fails.
pub const ROUTES_NOT_YET_THIN: &[(&str, &str)] = &[];

/// Module import cycles tolerated while they are broken up: (crate, sorted top-level modules of
/// the cycle, reason). Empty: no workspace crate has one. A cycle that is not listed fails, and
/// so does a listed one that is gone (or changed its members).
pub const KNOWN_CYCLES: &[(&str, &[&str], &str)] = &[];

/// The source files outside `crates/store-postgres` that may call
/// `store_postgres::audit::record_unsealed` (several practices in one transaction), each with the
/// reason. Every other use case works for one practice per transaction.
pub const CONTEXT_SWITCHERS: &[(&str, &str)] = &[(
    "crates/app/src/access_log.rs",
    "the group commit of read audit entries: many practices' reads in one commit, each practice's \
     entries inserted under that practice's own context",
)];

/// Runs every check, prints one line per passing check, and fails with every violation.
pub fn run(root: &Path) -> Result<(), String> {
    let metadata = cargo_metadata(root)?;
    let workspace = Workspace::new(&metadata)?;
    let checks = [
        ("every workspace crate has exactly one layer", layer_violations(&workspace)),
        ("domain crates are pure", domain_violations(&workspace)),
        ("the use-case layer reaches no transport", use_case_violations(&workspace)),
        (
            "adapters depend on each other only through ADAPTER_DEPENDENCIES",
            adapter_violations(&workspace, ADAPTER_DEPENDENCIES),
        ),
        ("routes stay thin", route_check(root)?),
        ("store-postgres sends its statements through crate::sql", unnamed_statement_check(root)?),
        ("only CONTEXT_SWITCHERS switch the RLS context inside a transaction", context_switch_check(root)?),
        ("no module import cycles outside KNOWN_CYCLES", cycle_check(&workspace)?),
    ];
    let mut failures = Vec::new();
    for (name, violations) in checks {
        if violations.is_empty() {
            println!("xtask: tidy: {name}");
        } else {
            failures.push(format!("{name}: failed\n  {}", violations.join("\n  ")));
        }
    }
    if failures.is_empty() { Ok(()) } else { Err(format!("tidy:\n{}", failures.join("\n"))) }
}

/// The resolved dependency graph of this platform, as `cargo metadata` prints it.
pub fn cargo_metadata(root: &Path) -> Result<Value, String> {
    // Only this platform's graph: it is what gets built here, and it needs no download of crates
    // that exist for other platforms only.
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--filter-platform", &host_triple()?])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("cargo metadata output: {e}"))
}

fn host_triple() -> Result<String, String> {
    let output = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .map_err(|e| format!("cannot run rustc -vV: {e}"))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_owned))
        .ok_or_else(|| "rustc -vV printed no host triple".to_owned())
}

/// The layer of a workspace crate, from [`LAYERS`].
fn layer_of(name: &str) -> Option<Layer> {
    LAYERS.iter().find(|(crate_name, _)| *crate_name == name).map(|(_, layer)| *layer)
}

/// The parts of `cargo metadata` the checks need, indexed.
#[derive(Debug)]
struct Workspace<'a> {
    /// Package id -> package name, for every package in the graph.
    names: HashMap<&'a str, &'a str>,
    /// Workspace member name -> package id.
    members: BTreeMap<&'a str, &'a str>,
    /// Package id -> its `Cargo.toml` (absent in the unit tests' fake metadata).
    manifests: HashMap<&'a str, &'a str>,
    /// Package id -> ids of its normal (non-dev, non-build) dependencies.
    deps: HashMap<&'a str, Vec<&'a str>>,
}

/// A package met while walking the graph.
#[derive(Debug, Clone, Copy)]
struct Package<'a> {
    name: &'a str,
    /// Whether it is a member of this workspace (a crates.io crate could share a member's name).
    in_workspace: bool,
}

impl Package<'_> {
    /// Its layer, for workspace crates listed in [`LAYERS`].
    fn layer(&self) -> Option<Layer> {
        if self.in_workspace { layer_of(self.name) } else { None }
    }
}

impl<'a> Workspace<'a> {
    fn new(metadata: &'a Value) -> Result<Self, String> {
        let packages = metadata["packages"].as_array().ok_or("cargo metadata: no packages")?;
        let names: HashMap<&str, &str> =
            packages.iter().filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?))).collect();
        let manifests: HashMap<&str, &str> =
            packages.iter().filter_map(|p| Some((p["id"].as_str()?, p["manifest_path"].as_str()?))).collect();
        let members = metadata["workspace_members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|id| Some((*names.get(id)?, id)))
            .collect();
        let nodes = metadata["resolve"]["nodes"].as_array().ok_or("cargo metadata: no resolve graph")?;
        let deps = nodes
            .iter()
            .filter_map(|node| {
                let id = node["id"].as_str()?;
                let deps = node["deps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|dep| dep["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null()))
                    .filter_map(|dep| dep["pkg"].as_str())
                    .collect();
                Some((id, deps))
            })
            .collect();
        Ok(Self { names, members, manifests, deps })
    }

    fn package(&self, id: &'a str) -> Package<'a> {
        let name = self.names.get(id).copied().unwrap_or("?");
        Package { name, in_workspace: self.members.get(name) == Some(&id) }
    }

    /// Workspace members of a layer, as (name, id).
    fn members_of(&self, layer: Layer) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.members.iter().filter(move |(name, _)| layer_of(name) == Some(layer)).map(|(n, id)| (*n, *id))
    }

    /// Direct normal dependencies of `id`.
    fn direct(&self, id: &str) -> impl Iterator<Item = Package<'a>> + '_ {
        self.deps.get(id).into_iter().flatten().map(|dep| self.package(dep))
    }

    /// Every path from `from` to a package `forbidden` accepts, as "a -> b -> c", sorted. The
    /// search does not go past a forbidden package: the first one on a path is what to fix.
    fn forbidden_paths(&self, from: &'a str, forbidden: impl Fn(Package<'_>) -> bool) -> Vec<String> {
        let mut found = Vec::new();
        // Depth-first search remembering the path, so the report shows how the crate got there.
        let mut stack = vec![(from, vec![self.package(from).name])];
        let mut seen = BTreeSet::new();
        while let Some((id, path)) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            for dep in self.deps.get(id).into_iter().flatten() {
                let package = self.package(dep);
                let mut next = path.clone();
                next.push(package.name);
                if forbidden(package) {
                    found.push(next.join(" -> "));
                } else {
                    stack.push((dep, next));
                }
            }
        }
        found.sort();
        found.dedup();
        found
    }
}

/// (a) Every workspace member is in [`LAYERS`], and every entry of [`LAYERS`] is a member.
fn layer_violations(workspace: &Workspace<'_>) -> Vec<String> {
    let mut found: Vec<String> = workspace
        .members
        .keys()
        .filter(|name| layer_of(name).is_none())
        .map(|name| format!("workspace crate `{name}` has no layer: add it to LAYERS"))
        .collect();
    for (name, _) in LAYERS {
        if !workspace.members.contains_key(name) {
            found.push(format!("LAYERS lists `{name}`, which is not a workspace crate: remove it"));
        }
    }
    found
}

/// (a) Domain crates reach no I/O framework and no workspace crate outside the domain layer.
fn domain_violations(workspace: &Workspace<'_>) -> Vec<String> {
    workspace
        .members_of(Layer::Domain)
        .flat_map(|(_, id)| {
            workspace.forbidden_paths(id, |package| {
                (package.in_workspace && package.layer() != Some(Layer::Domain))
                    || FORBIDDEN_PREFIXES.iter().any(|prefix| package.name.starts_with(prefix))
            })
        })
        .collect()
}

/// (b) The use-case layer reaches neither the doors nor a transport or configuration crate.
fn use_case_violations(workspace: &Workspace<'_>) -> Vec<String> {
    workspace
        .members_of(Layer::UseCases)
        .flat_map(|(_, id)| {
            workspace.forbidden_paths(id, |package| {
                package.layer() == Some(Layer::Doors)
                    || TRANSPORT_PREFIXES.iter().any(|prefix| package.name.starts_with(prefix))
            })
        })
        .collect()
}

/// (c) Adapter-to-adapter edges are listed in `allowed` (and every listed edge exists); adapters
/// reach neither the use-case layer nor the doors; the use-case layer does not reach the doors.
fn adapter_violations(workspace: &Workspace<'_>, allowed: &[(&str, &str, &str)]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, id) in workspace.members_of(Layer::Adapter) {
        for dep in workspace.direct(id).filter(|dep| dep.layer() == Some(Layer::Adapter)) {
            if !allowed.iter().any(|(from, to, _)| *from == name && *to == dep.name) {
                found.push(format!(
                    "{name} -> {}: adapters depend on each other only through ADAPTER_DEPENDENCIES \
                     (list the edge with its reason, or remove the dependency)",
                    dep.name
                ));
            }
        }
        let upward = |package: Package<'_>| matches!(package.layer(), Some(Layer::UseCases | Layer::Doors));
        for path in workspace.forbidden_paths(id, upward) {
            found.push(format!("{path}: an adapter must not depend on the use-case layer or the doors"));
        }
    }
    for (_, id) in workspace.members_of(Layer::UseCases) {
        for path in workspace.forbidden_paths(id, |package| package.layer() == Some(Layer::Doors)) {
            found.push(format!("{path}: the use-case layer must not depend on the doors"));
        }
    }
    for (from, to, _) in allowed {
        let exists = workspace.members.get(from).is_some_and(|id| workspace.direct(id).any(|dep| dep.name == *to));
        if !exists {
            found
                .push(format!("ADAPTER_DEPENDENCIES lists {from} -> {to}, which is no dependency any more: remove it"));
        }
    }
    found
}

/// The code of a source file, numbered from 1: comment lines (`//`, `///`, `//!`) are skipped and
/// a trailing `// ...` is cut. Scanning stops at a `#[cfg(test)]` followed by an inline module
/// (`mod tests {`): a heuristic, not a parser, relying on test modules coming last in a file, so
/// test code importing siblings does not count as the module's own dependencies. A `//` inside a
/// string literal also cuts the line: that can only hide a finding, never invent one.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut code = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed == "#[cfg(test)]" {
            let next = lines.iter().skip(index + 1).map(|l| l.trim()).find(|l| !l.is_empty());
            if next.is_some_and(|next| {
                let declaration = next.strip_prefix("pub ").unwrap_or(next);
                declaration.starts_with("mod ") && declaration.ends_with('{')
            }) {
                break;
            }
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push((index + 1, line.find("//").map_or(*line, |at| &line[..at])));
    }
    code
}

/// (d) What makes one route file not thin, one entry per offending line and token.
fn route_findings(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (number, line) in code_lines(text) {
        for token in FAT_ROUTE_TOKENS {
            if line.contains(token) {
                found.push(format!("line {number}: `{token}`"));
            }
        }
        if opens_transaction(line) {
            found.push(format!("line {number}: opens a transaction (`begin(`)"));
        }
    }
    found
}

/// A call of `begin(` (`store_postgres::begin(`, `pool.begin(`, `begin(`), but not a longer name
/// ending in it (`tx_begin(`) and not a function definition (`fn begin(`).
fn opens_transaction(line: &str) -> bool {
    line.match_indices("begin(").any(|(at, _)| {
        let before = &line[..at];
        !before.chars().next_back().is_some_and(is_ident_char) && !before.trim_end().ends_with("fn")
    })
}

/// (d) Every route file is thin, or listed in `exempt`; every file in `exempt` exists and is not
/// thin yet. `files` are (path relative to the routes directory, text).
fn route_violations(files: &[(String, String)], exempt: &[(&str, &str)]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, text) in files {
        let findings = route_findings(text);
        let is_exempt = exempt.iter().any(|(file, _)| file == name);
        if is_exempt && findings.is_empty() {
            found.push(format!("{ROUTES_DIR}/{name} is thin now: remove it from ROUTES_NOT_YET_THIN"));
        } else if !is_exempt {
            for finding in findings {
                found.push(format!("{ROUTES_DIR}/{name} {finding}: routes stay thin, move the work into crates/app"));
            }
        }
    }
    for (file, _) in exempt {
        if !files.iter().any(|(name, _)| name == file) {
            found.push(format!("ROUTES_NOT_YET_THIN lists {file}, which is not in {ROUTES_DIR}: remove it"));
        }
    }
    found
}

/// (d) The routes check on the real tree.
fn route_check(root: &Path) -> Result<Vec<String>, String> {
    Ok(route_violations(&rust_files(&root.join(ROUTES_DIR))?, ROUTES_NOT_YET_THIN))
}

/// Where the Postgres adapter's sources live, and the one file that may call sqlx's builders.
const STORE_POSTGRES_SRC: &str = "crates/store-postgres/src";
const STATEMENT_BUILDERS: &[&str] = &[
    "sqlx::query(",
    "sqlx::query_as(",
    "sqlx::query_scalar(",
    "sqlx::query!",
    "sqlx::query_as!",
    "sqlx::query_scalar!",
];

/// Calls of sqlx's statement builders outside `sql.rs` (test modules excepted: tests connect to
/// Postgres directly), one entry per offending line.
fn named_statement_findings(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, text) in files.iter().filter(|(name, _)| name != "sql.rs") {
        for (number, line) in code_lines(text) {
            for builder in STATEMENT_BUILDERS.iter().filter(|builder| line.contains(*builder)) {
                found.push(format!(
                    "{STORE_POSTGRES_SRC}/{name} line {number}: `{builder}` names its statement; use `crate::sql`"
                ));
            }
        }
    }
    found
}

fn unnamed_statement_check(root: &Path) -> Result<Vec<String>, String> {
    Ok(named_statement_findings(&rust_files(&root.join(STORE_POSTGRES_SRC))?))
}

/// Where the context switch is defined: the adapter may use it freely (its own tests, its docs).
const CONTEXT_SWITCH_HOME: &str = "crates/store-postgres/";

/// The adapter's one call that acts for several practices in one transaction.
const CONTEXT_SWITCH: &str = "record_unsealed";

/// Files (paths relative to the workspace root) whose code names [`CONTEXT_SWITCH`] without being
/// the adapter that defines it or listed in `allowed`; and listed files that no longer name it
/// or are gone. Test modules at the end of a file are skipped like everywhere in tidy.
fn context_switch_violations(files: &[(String, String)], allowed: &[(&str, &str)]) -> Vec<String> {
    let names_it = |text: &str| code_lines(text).iter().any(|(_, line)| line.contains(CONTEXT_SWITCH));
    let mut found = Vec::new();
    for (name, text) in files.iter().filter(|(name, _)| !name.starts_with(CONTEXT_SWITCH_HOME)) {
        if names_it(text) && !allowed.iter().any(|(file, _)| file == name) {
            found.push(format!(
                "{name} switches the RLS context inside a transaction: one use case, one practice per \
                 transaction (or add it to CONTEXT_SWITCHERS with the reason)"
            ));
        }
    }
    for (file, _) in allowed {
        if !files.iter().any(|(name, text)| name == file && names_it(text)) {
            found.push(format!("CONTEXT_SWITCHERS lists {file}, which no longer switches the context: remove it"));
        }
    }
    found
}

/// The context-switch check on every crate's and app's `src/` in the real tree.
fn context_switch_check(root: &Path) -> Result<Vec<String>, String> {
    let mut files = Vec::new();
    for parent in ["crates", "apps"] {
        let entries = std::fs::read_dir(root.join(parent)).map_err(|e| format!("{parent}: {e}"))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{parent}: {e}"))?;
            let src = entry.path().join("src");
            if !src.is_dir() {
                continue;
            }
            let prefix = format!("{parent}/{}/src/", entry.file_name().to_string_lossy());
            files.extend(rust_files(&src)?.into_iter().map(|(name, text)| (format!("{prefix}{name}"), text)));
        }
    }
    files.sort();
    Ok(context_switch_violations(&files, CONTEXT_SWITCHERS))
}

/// Every `.rs` file under `dir`, as (path relative to `dir` with `/` separators, text), sorted.
fn rust_files(dir: &Path) -> Result<Vec<(String, String)>, String> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let entries =
            std::fs::read_dir(dir.join(&relative)).map_err(|e| format!("{}: {e}", dir.join(&relative).display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = relative.join(entry.file_name());
            let is_dir = entry.file_type().map_err(|e| format!("{}: {e}", entry.path().display()))?.is_dir();
            if is_dir {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text =
                    std::fs::read_to_string(entry.path()).map_err(|e| format!("{}: {e}", entry.path().display()))?;
                let name = path.iter().map(|part| part.to_string_lossy()).collect::<Vec<_>>().join("/");
                files.push((name, text));
            }
        }
    }
    files.sort();
    Ok(files)
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifier `text` starts with, if any.
fn ident_at(text: &str) -> Option<&str> {
    let end = text.find(|c: char| !is_ident_char(c)).unwrap_or(text.len());
    let ident = &text[..end];
    (!ident.is_empty() && !ident.starts_with(|c: char| c.is_ascii_digit())).then_some(ident)
}

/// The first segment of every path starting with `prefix` (`crate::` or `super::`) in `code`,
/// including each item of a group: `crate::{a::x, b}` names `a` and `b`. `$crate::` counts (a
/// macro's paths into its own crate); `other_crate::` does not.
fn path_heads<'t>(code: &'t str, prefix: &str) -> Vec<&'t str> {
    let mut heads = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        if code[..at].chars().next_back().is_some_and(is_ident_char) {
            continue;
        }
        let rest = code[at + prefix.len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            heads.extend(group_heads(group));
        } else {
            heads.extend(ident_at(rest));
        }
    }
    heads
}

/// The first segment of each item of a `{...}` use group; `text` starts just after the `{`.
/// Nested groups (`{a::{x, y}, b}`) count once, by their first segment.
fn group_heads(text: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let mut depth = 1;
    let mut item_start = true;
    for (index, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => item_start = true,
            c if depth == 1 && item_start && is_ident_char(c) => {
                heads.extend(ident_at(&text[index..]));
                item_start = false;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level module a file under `src/` belongs to: `a.rs`, `a/mod.rs` and `a/b/c.rs` all
/// belong to `a`. `None` for the crate roots (`lib.rs`, `main.rs`: they only declare modules) and
/// for `bin/` (each file there is a crate of its own).
fn top_module(path: &str) -> Option<&str> {
    match path.split_once('/') {
        None if path == "lib.rs" || path == "main.rs" => None,
        None => path.strip_suffix(".rs"),
        Some(("bin", _)) => None,
        Some((first, _)) => Some(first),
    }
}

/// The top-level module graph of one crate: module -> the other top-level modules it names.
///
/// Edges come from `crate::b` paths anywhere in a module's files (`use` or inline), and from
/// `super::b` in a top-level file (`a.rs`, `a/mod.rs`), where `super` is the crate root. Names
/// that are not module files (re-exports from the crate root, inline modules) make no edge.
/// `files` are (path relative to `src/`, text).
fn module_graph(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> =
        files.iter().filter_map(|(path, _)| top_module(path)).map(|m| (m.to_owned(), BTreeSet::new())).collect();
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for (path, text) in files {
        let Some(module) = top_module(path) else { continue };
        let code = code_lines(text).into_iter().map(|(_, line)| line).collect::<Vec<_>>().join("\n");
        let is_top_level_file = !path.contains('/') || path == &format!("{module}/mod.rs");
        let mut heads = path_heads(&code, "crate::");
        if is_top_level_file {
            heads.extend(path_heads(&code, "super::"));
        }
        for head in heads {
            if head != module && modules.contains(head) {
                graph.entry(module.to_owned()).or_default().insert(head.to_owned());
            }
        }
    }
    graph
}

/// Every module reachable from `from` through one or more edges.
fn reachable<'g>(graph: &'g BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<&'g str> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = graph.get(from).into_iter().flatten().map(String::as_str).collect();
    while let Some(module) = stack.pop() {
        if seen.insert(module) {
            stack.extend(graph.get(module).into_iter().flatten().map(String::as_str));
        }
    }
    seen
}

/// One shortest cycle through `start`, as `start -> ... -> start` (empty if there is none).
fn shortest_cycle<'g>(graph: &'g BTreeMap<String, BTreeSet<String>>, start: &'g str) -> Vec<&'g str> {
    // Breadth-first from `start`, remembering how each module was reached.
    let mut reached_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(module) = queue.pop_front() {
        for next in graph.get(module).into_iter().flatten().map(String::as_str) {
            if next == start {
                let mut cycle = vec![start, module];
                // Walk back to `start`, the only module without an entry in `reached_from`.
                while let Some(previous) = cycle.last().and_then(|last| reached_from.get(last)) {
                    cycle.push(*previous);
                }
                cycle.reverse();
                return cycle;
            }
            if !reached_from.contains_key(next) {
                reached_from.insert(next, module);
                queue.push_back(next);
            }
        }
    }
    Vec::new()
}

/// A set of top-level modules that import each other in a circle.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cycle {
    krate: String,
    /// Sorted.
    members: Vec<String>,
    /// One concrete cycle through the first member, to start untangling from.
    example: Vec<String>,
}

/// The module cycles of one crate: strongly connected components of more than one module. With
/// few modules per crate, "reaches and is reached by" over full reachability sets is plenty fast
/// and simpler than Tarjan's algorithm.
fn cycles(krate: &str, graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Cycle> {
    let reach: BTreeMap<&str, BTreeSet<&str>> = graph.keys().map(|m| (m.as_str(), reachable(graph, m))).collect();
    let mut assigned: BTreeSet<&str> = BTreeSet::new();
    let mut found = Vec::new();
    for (module, from_module) in &reach {
        // No edge goes from a module to itself, so a module that reaches itself is in a cycle of
        // two or more, which contains it.
        if assigned.contains(module) || !from_module.contains(module) {
            continue;
        }
        let members: Vec<&str> = from_module
            .iter()
            .copied()
            .filter(|other| reach.get(other).is_some_and(|back| back.contains(module)))
            .collect();
        assigned.extend(&members);
        let example = shortest_cycle(graph, module).into_iter().map(str::to_owned).collect();
        found.push(Cycle {
            krate: krate.to_owned(),
            members: members.into_iter().map(str::to_owned).collect(),
            example,
        });
    }
    found
}

/// (e) Every cycle found is in `known`, and every entry of `known` is still found as is.
fn cycle_violations(found: &[Cycle], known: &[(&str, &[&str], &str)]) -> Vec<String> {
    let same = |cycle: &Cycle, krate: &str, members: &[&str]| {
        cycle.krate == krate
            && cycle.members.iter().map(String::as_str).collect::<BTreeSet<_>>() == members.iter().copied().collect()
    };
    let mut violations = Vec::new();
    for cycle in found {
        if !known.iter().any(|(krate, members, _)| same(cycle, krate, members)) {
            violations.push(format!(
                "{}: module import cycle {{{}}} (e.g. {}) is not in KNOWN_CYCLES: break it",
                cycle.krate,
                cycle.members.join(", "),
                cycle.example.join(" -> ")
            ));
        }
    }
    for (krate, members, _) in known {
        if !found.iter().any(|cycle| same(cycle, krate, members)) {
            violations.push(format!(
                "{krate}: KNOWN_CYCLES lists {{{}}}, which is no longer a cycle as is: remove or update the entry",
                members.join(", ")
            ));
        }
    }
    violations
}

/// (e) The module cycle check on every workspace crate's `src/`.
fn cycle_check(workspace: &Workspace<'_>) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for (name, id) in &workspace.members {
        let manifest = workspace.manifests.get(id).ok_or_else(|| format!("cargo metadata: no manifest for {name}"))?;
        let src = Path::new(manifest).parent().map(|dir| dir.join("src")).unwrap_or_default();
        if !src.is_dir() {
            continue;
        }
        found.extend(cycles(name, &module_graph(&rust_files(&src)?)));
    }
    Ok(cycle_violations(&found, KNOWN_CYCLES))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::OnceLock;

    /// Fake metadata: packages named by their id, the given workspace members and normal edges.
    fn metadata_with(members: &[&str], edges: &[(&str, &str)]) -> Value {
        let mut names: BTreeSet<&str> = members.iter().copied().collect();
        for (a, b) in edges {
            names.insert(a);
            names.insert(b);
        }
        json!({
            "packages": names.iter().map(|n| json!({"id": n, "name": n})).collect::<Vec<_>>(),
            "workspace_members": members,
            "resolve": { "nodes": names.iter().map(|n| json!({
                "id": n,
                "deps": edges.iter().filter(|(a, _)| a == n).map(|(_, b)| json!({"pkg": b, "dep_kinds": [{"kind": null}]})).collect::<Vec<_>>()
            })).collect::<Vec<_>>() }
        })
    }

    fn metadata(edges: &[(&str, &str)]) -> Value {
        metadata_with(&["kernel", "audit", "store-postgres", "app", "api", "kms-http", "kms-vault", "telemetry"], edges)
    }

    fn domain(edges: &[(&str, &str)]) -> Vec<String> {
        domain_violations(&Workspace::new(&metadata(edges)).unwrap())
    }

    fn use_cases(edges: &[(&str, &str)]) -> Vec<String> {
        use_case_violations(&Workspace::new(&metadata(edges)).unwrap())
    }

    fn adapters(edges: &[(&str, &str)], allowed: &[(&str, &str, &str)]) -> Vec<String> {
        adapter_violations(&Workspace::new(&metadata(edges)).unwrap(), allowed)
    }

    fn all_layered_crates() -> Vec<&'static str> {
        LAYERS.iter().map(|(name, _)| *name).collect()
    }

    fn files(files: &[(&str, &str)]) -> Vec<(String, String)> {
        files.iter().map(|(name, text)| (name.to_string(), text.to_string())).collect()
    }

    fn real_metadata() -> &'static Value {
        static METADATA: OnceLock<Value> = OnceLock::new();
        METADATA.get_or_init(|| cargo_metadata(&crate::workspace_root()).unwrap())
    }

    // (a) Layers.

    #[test]
    fn store_postgres_statements_go_through_its_sql_module() {
        let files = vec![
            ("sql.rs".to_owned(), "sqlx::query(sql).persistent(false)".to_owned()),
            ("a.rs".to_owned(), "// sqlx::query( in a comment\nlet x = crate::sql::query(\"\");".to_owned()),
            ("b.rs".to_owned(), "let x = sqlx::query_scalar(\"SELECT 1\");".to_owned()),
            ("c.rs".to_owned(), "fn f() {}\n#[cfg(test)]\nmod tests {\n    sqlx::query(\"\");\n}".to_owned()),
        ];
        let found = named_statement_findings(&files);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("b.rs line 1"), "{found:?}");
    }

    #[test]
    fn flags_a_context_switch_outside_the_listed_files() {
        let files = files(&[
            ("crates/app/src/access_log.rs", "store_postgres::audit::record_unsealed(&db, events).await?;"),
            (
                "crates/app/src/patients.rs",
                "use store_postgres::audit::record_unsealed;\nrecord_unsealed(&db, e).await?;",
            ),
            ("crates/app/src/consents.rs", "// record_unsealed in a comment\nfn f() {}"),
            ("crates/app/src/audit.rs", "fn f() {}\n#[cfg(test)]\nmod tests {\n    record_unsealed(&db, e);\n}"),
            ("crates/store-postgres/src/audit.rs", "pub async fn record_unsealed() {}"),
        ]);
        let allowed = [("crates/app/src/access_log.rs", "reason")];
        let found = context_switch_violations(&files, &allowed);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("crates/app/src/patients.rs switches"), "{found:?}");
    }

    #[test]
    fn flags_a_listed_context_switcher_that_no_longer_switches() {
        let files = files(&[("crates/app/src/access_log.rs", "fn f() {}")]);
        let found = context_switch_violations(&files, &[("crates/app/src/access_log.rs", "r"), ("gone.rs", "r")]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|f| f.contains("no longer switches")), "{found:?}");
    }

    #[test]
    fn flags_a_workspace_crate_without_a_layer() {
        let mut members = all_layered_crates();
        members.push("newcomer");
        let found = layer_violations(&Workspace::new(&metadata_with(&members, &[])).unwrap());
        assert_eq!(found, vec!["workspace crate `newcomer` has no layer: add it to LAYERS"]);
    }

    #[test]
    fn flags_a_layer_entry_that_is_no_workspace_crate() {
        let members: Vec<&str> = all_layered_crates().into_iter().filter(|name| *name != "kms-http").collect();
        let found = layer_violations(&Workspace::new(&metadata_with(&members, &[])).unwrap());
        assert_eq!(found, vec!["LAYERS lists `kms-http`, which is not a workspace crate: remove it"]);
    }

    #[test]
    fn a_complete_layer_table_passes() {
        let found = layer_violations(&Workspace::new(&metadata_with(&all_layered_crates(), &[])).unwrap());
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn flags_a_domain_crate_reaching_sqlx_through_anything() {
        let found = domain(&[("audit", "kernel"), ("audit", "helper"), ("helper", "sqlx-core")]);
        assert_eq!(found, vec!["audit -> helper -> sqlx-core"]);
    }

    #[test]
    fn flags_a_domain_crate_using_an_adapter_crate() {
        assert_eq!(domain(&[("audit", "store-postgres")]), vec!["audit -> store-postgres"]);
    }

    #[test]
    fn flags_a_domain_crate_using_the_use_case_layer_or_an_unlayered_crate() {
        let found = domain(&[("kernel", "app")]);
        assert_eq!(found, vec!["kernel -> app"]);
        let found = domain_violations(
            &Workspace::new(&metadata_with(&["kernel", "newcomer"], &[("kernel", "newcomer")])).unwrap(),
        );
        assert_eq!(found, vec!["kernel -> newcomer"]);
    }

    #[test]
    fn domain_crates_may_use_each_other_and_adapters_anything() {
        let found = domain(&[("audit", "kernel"), ("store-postgres", "sqlx"), ("store-postgres", "kernel")]);
        assert!(found.is_empty(), "{found:?}");
    }

    // (b) The use-case layer.

    #[test]
    fn flags_the_use_case_layer_reaching_a_transport() {
        let found = use_cases(&[("app", "helper"), ("helper", "actix-web"), ("app", "clap"), ("app", "figment")]);
        assert_eq!(found, vec!["app -> clap", "app -> figment", "app -> helper -> actix-web"]);
    }

    #[test]
    fn flags_the_use_case_layer_using_the_api() {
        assert_eq!(use_cases(&[("app", "api")]), vec!["app -> api"]);
    }

    #[test]
    fn the_use_case_layer_may_use_adapters_and_tokio() {
        let found = use_cases(&[("app", "store-postgres"), ("store-postgres", "sqlx"), ("app", "tokio")]);
        assert!(found.is_empty(), "{found:?}");
    }

    // (c) Adapters.

    #[test]
    fn flags_an_adapter_edge_missing_from_the_allow_list() {
        let found = adapters(&[("kms-vault", "kms-http")], &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("kms-vault -> kms-http: "), "{found:?}");
    }

    #[test]
    fn an_allowed_adapter_edge_passes() {
        let found =
            adapters(&[("kms-vault", "kms-http"), ("kms-vault", "kernel")], &[("kms-vault", "kms-http", "why")]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn flags_an_allowed_adapter_edge_that_is_gone() {
        let found = adapters(&[], &[("kms-vault", "kms-http", "why")]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("ADAPTER_DEPENDENCIES lists kms-vault -> kms-http, "), "{found:?}");
    }

    #[test]
    fn flags_adapters_and_use_cases_depending_upwards() {
        let found =
            adapters(&[("telemetry", "helper"), ("helper", "app"), ("store-postgres", "api"), ("app", "api")], &[]);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("store-postgres -> api: "), "{found:?}");
        assert!(found[1].starts_with("telemetry -> helper -> app: "), "{found:?}");
        assert!(found[2].starts_with("app -> api: "), "{found:?}");
    }

    // (d) Thin routes.

    #[test]
    fn flags_database_audit_and_transaction_work_in_a_route() {
        let text = "use store_postgres::Pool;\n\
                    // sqlx in a comment is fine\n\
                    async fn h() {\n\
                    let mut tx = state.pool.begin().await?; // sqlx\n\
                    let event = AuditEvent::new(x);\n\
                    sqlx::query(\"\");\n\
                    }\n";
        assert_eq!(
            route_findings(text),
            vec![
                "line 1: `store_postgres`",
                "line 4: opens a transaction (`begin(`)",
                "line 5: `AuditEvent::new`",
                "line 6: `sqlx`",
            ]
        );
    }

    #[test]
    fn a_bare_begin_call_opens_a_transaction_but_a_longer_name_or_a_definition_does_not() {
        assert!(opens_transaction("let tx = begin(&pool).await?;"));
        assert!(opens_transaction("store_postgres::begin(&pool)"));
        assert!(!opens_transaction("let x = tx_begin(1);"));
        assert!(!opens_transaction("fn begin(&self) {}"));
    }

    #[test]
    fn a_thin_route_passes() {
        let found = route_violations(&files(&[("ok.rs", "async fn h() { app::consents::grant(&s).await }\n")]), &[]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn flags_a_fat_route_that_is_not_exempt() {
        let found = route_violations(&files(&[("fat.rs", "use sqlx::Row;\n")]), &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("apps/api/src/routes/fat.rs line 1: `sqlx`"), "{found:?}");
    }

    #[test]
    fn an_exempt_fat_route_passes() {
        let found = route_violations(&files(&[("fat.rs", "use sqlx::Row;\n")]), &[("fat.rs", "later")]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn flags_an_exemption_that_is_thin_now_or_gone() {
        let found =
            route_violations(&files(&[("thin.rs", "fn h() {}\n")]), &[("thin.rs", "later"), ("gone.rs", "later")]);
        assert_eq!(
            found,
            vec![
                "apps/api/src/routes/thin.rs is thin now: remove it from ROUTES_NOT_YET_THIN",
                "ROUTES_NOT_YET_THIN lists gone.rs, which is not in apps/api/src/routes: remove it",
            ]
        );
    }

    // (e) Module cycles.

    #[test]
    fn finds_a_two_file_cycle() {
        let graph = module_graph(&files(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            ("a.rs", "use crate::b::thing;\n"),
            ("b/mod.rs", "pub mod inner;\n"),
            ("b/inner.rs", "fn f() { crate::a::g() }\n"),
        ]));
        let found = cycles("demo", &graph);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].members, vec!["a", "b"]);
        assert_eq!(found[0].example, vec!["a", "b", "a"]);
        let violations = cycle_violations(&found, &[]);
        assert_eq!(
            violations,
            vec!["demo: module import cycle {a, b} (e.g. a -> b -> a) is not in KNOWN_CYCLES: break it"]
        );
        assert!(cycle_violations(&found, &[("demo", &["a", "b"], "known")]).is_empty());
    }

    #[test]
    fn acyclic_modules_pass() {
        let graph = module_graph(&files(&[
            ("main.rs", "mod a;\nmod b;\nmod c;\nuse crate::a::x;\n"),
            ("a.rs", "use crate::{b::x, c};\n"),
            ("b.rs", "use super::c::y;\n// use crate::a; (a comment)\n"),
            ("c.rs", "fn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::a;\n}\n"),
        ]));
        assert_eq!(graph["a"], BTreeSet::from(["b".to_owned(), "c".to_owned()]));
        assert_eq!(graph["b"], BTreeSet::from(["c".to_owned()]));
        assert!(graph["c"].is_empty());
        assert!(cycles("demo", &graph).is_empty());
    }

    #[test]
    fn finds_a_three_module_cycle_and_ignores_modules_outside_it() {
        let graph = module_graph(&files(&[
            ("a.rs", "use crate::b;\n"),
            ("b.rs", "use crate::c;\n"),
            ("c.rs", "use crate::a;\nuse crate::d;\n"),
            ("d.rs", "\n"),
        ]));
        let found = cycles("demo", &graph);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].members, vec!["a", "b", "c"]);
        assert_eq!(found[0].example, vec!["a", "b", "c", "a"]);
    }

    #[test]
    fn parses_use_groups_and_prefixes() {
        assert_eq!(path_heads("use crate::{a::x, b};", "crate::"), vec!["a", "b"]);
        assert_eq!(
            path_heads("use crate::{\n    a::{x, y},\n    self,\n    Bee,\n};", "crate::"),
            vec!["a", "self", "Bee"]
        );
        assert_eq!(path_heads("other_crate::a; $crate::b::c; crate :: d", "crate::"), vec!["b"]);
        assert_eq!(path_heads("x(crate::a::f(), crate::b)", "crate::"), vec!["a", "b"]);
    }

    #[test]
    fn super_counts_from_top_level_files_only() {
        let graph = module_graph(&files(&[
            ("a/mod.rs", "use super::b;\n"),
            ("a/deep.rs", "use super::c;\n"),
            ("b.rs", "\n"),
            ("c.rs", "\n"),
        ]));
        assert_eq!(graph["a"], BTreeSet::from(["b".to_owned()]));
    }

    #[test]
    fn flags_a_known_cycle_that_is_gone() {
        let violations = cycle_violations(&[], &[("demo", &["a", "b"], "known")]);
        assert_eq!(
            violations,
            vec!["demo: KNOWN_CYCLES lists {a, b}, which is no longer a cycle as is: remove or update the entry"]
        );
    }

    #[test]
    fn a_test_module_stops_the_scan_but_a_test_module_declaration_does_not() {
        let lines = code_lines("a\n#[cfg(test)]\nmod tests;\nb // c\n#[cfg(test)]\n\nmod tests {\nd\n}\n");
        assert_eq!(lines, vec![(1, "a"), (2, "#[cfg(test)]"), (3, "mod tests;"), (4, "b ")]);
    }

    // The real workspace passes every check: `cargo test` fails when one of them breaks.

    #[test]
    fn workspace_layers_match_the_members() {
        let found = layer_violations(&Workspace::new(real_metadata()).unwrap());
        assert!(found.is_empty(), "layer table out of date:\n{}", found.join("\n"));
    }

    #[test]
    fn workspace_domain_crates_are_pure() {
        let found = domain_violations(&Workspace::new(real_metadata()).unwrap());
        assert!(found.is_empty(), "domain crates depend on I/O or adapters:\n{}", found.join("\n"));
    }

    #[test]
    fn workspace_use_case_layer_reaches_no_transport() {
        let found = use_case_violations(&Workspace::new(real_metadata()).unwrap());
        assert!(found.is_empty(), "the use-case layer reaches a transport:\n{}", found.join("\n"));
    }

    #[test]
    fn workspace_adapters_follow_the_allow_list() {
        let found = adapter_violations(&Workspace::new(real_metadata()).unwrap(), ADAPTER_DEPENDENCIES);
        assert!(found.is_empty(), "adapter dependencies:\n{}", found.join("\n"));
    }

    #[test]
    fn workspace_routes_stay_thin() {
        let found = route_check(&crate::workspace_root()).unwrap();
        assert!(found.is_empty(), "routes:\n{}", found.join("\n"));
    }

    #[test]
    fn workspace_store_postgres_statements_go_through_sql() {
        let found = unnamed_statement_check(&crate::workspace_root()).unwrap();
        assert!(found.is_empty(), "store-postgres statements:\n{}", found.join("\n"));
    }

    #[test]
    fn workspace_switches_the_rls_context_only_where_listed() {
        let found = context_switch_check(&crate::workspace_root()).unwrap();
        assert!(found.is_empty(), "context switches:\n{}", found.join("\n"));
    }

    #[test]
    fn workspace_has_no_new_module_cycles() {
        let found = cycle_check(&Workspace::new(real_metadata()).unwrap()).unwrap();
        assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
    }
}
