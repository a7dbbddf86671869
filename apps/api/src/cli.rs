//! The `praxis` command line: `serve`, `migrate`, `config check`, `tenants create`, operator
//! commands (`users`, `sessions`, `ip`, `audit`) and `keys rotate|migrate|reencrypt` (their
//! doors: `keys.rs`, `reencrypt.rs`).
//!
//! Output on stdout/stderr is this module's user interface, hence the print allowances.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use crate::config::{Config, LogFormat};
use crate::operator::{operator_error, services_on};
use crate::state::AppState;
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use kernel::{SystemClock, TenantId};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "praxis",
    version,
    about = "Praxis: patient data, consent and audit for therapy and medical practices"
)]
pub struct Cli {
    /// TOML configuration file; `PRAXIS__SECTION__KEY` environment variables override it.
    #[arg(long, global = true, env = "PRAXIS_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API.
    Serve,
    /// Apply database migrations (connects with `database.owner_url`).
    Migrate,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage practices (tenants).
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Accounts of a practice.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Sessions of a practice's users.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// The IP block list (answered with 403 before anything else runs).
    Ip {
        #[command(subcommand)]
        command: IpCommand,
    },
    /// The tamper-evident audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Data keys: KEK rotation and migration between KMS backends (resumable, in batches).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// Options shared by the key operations.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// One practice (runtime role, `database.url`); default: every practice (owner role,
    /// `database.owner_url`, which alone may list practices).
    #[arg(long)]
    pub tenant: Option<TenantId>,
    /// Data keys per batch: per transaction, per progress line and per audit entry.
    #[arg(long, default_value_t = app::keys::DEFAULT_BATCH_SIZE)]
    pub batch_size: u32,
    /// Stop after this many rewraps (run again to continue).
    #[arg(long)]
    pub limit: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Rewrap every data key (patient and practice keys) that is not under the primary KEK's
    /// current version, in resumable batches.
    ///
    /// Where the new key material comes from depends on `kms.backend`:
    /// local: this command adds a version to the key file first (restart servers sharing the
    /// file, then run `--resume` once more).
    /// aws: AWS rotates the key material inside the same KMS key (automatic yearly or
    /// `aws kms rotate-key-on-demand`) and decrypts old ciphertexts by itself, so nothing needs
    /// rewrapping.
    /// vault: rotate first (`vault write -f transit/keys/<key>/rotate` or `auto_rotate_period`);
    /// this command then rewraps inside Vault (`transit/rewrap`: plaintext keys never leave it).
    /// azure: rotate first (`az keyvault key rotate` or a rotation policy); this command then
    /// unwraps and wraps each key under the current version (keep old versions enabled until it
    /// reports 0 failed).
    /// See docs/kms.md, "Rotating the KEK".
    Rotate {
        /// Do not create a new version: only finish an interrupted rotation.
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        args: KeysArgs,
    },
    /// New data keys and re-encrypted fields for every patient whose data key was created before
    /// `--before` (default: now), destroying the old keys: for a suspected data-key compromise.
    Reencrypt {
        /// RFC 3339 cutoff; pass the one a previous run printed to resume it.
        #[arg(long, value_parser = parse_rfc3339)]
        before: Option<time::OffsetDateTime>,
        #[command(flatten)]
        args: KeysArgs,
    },
    /// Rewrap every data key from the backends in `kms.previous` to the primary `kms.backend`.
    Migrate {
        /// The new backend; must be the configured primary (`kms.backend`).
        #[arg(long, value_parser = parse_backend)]
        to: crate::config::KmsBackend,
        #[command(flatten)]
        args: KeysArgs,
    },
}

fn parse_rfc3339(text: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| "expected an RFC 3339 time such as 2026-11-22T10:00:00Z".to_owned())
}

fn parse_backend(name: &str) -> Result<crate::config::KmsBackend, String> {
    use crate::config::KmsBackend;
    KmsBackend::ALL.into_iter().find(|b| b.as_str() == name).ok_or_else(|| {
        let names: Vec<&str> = KmsBackend::ALL.iter().map(|b| b.as_str()).collect();
        format!("{name:?} is not a KMS backend ({})", names.join(", "))
    })
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Disable an account and end all of its sessions at once.
    Disable {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// End every session of one user (e.g. a lost device or a suspected takeover).
    Revoke {
        #[arg(long)]
        tenant: TenantId,
        /// The user's email.
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum IpCommand {
    /// Block an address for a while.
    Block {
        ip: std::net::IpAddr,
        /// How long, in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        #[arg(long)]
        reason: String,
    },
    /// Lift a block.
    Unblock { ip: std::net::IpAddr },
    /// List blocked addresses with the time left.
    List,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain and report the first broken entry. With `--tenant`, one practice as
    /// the runtime role (`database.url`); without, every practice as the owner role
    /// (`database.owner_url`), which alone may list practices. Exit status 1 when any is broken.
    Verify {
        #[arg(long)]
        tenant: Option<TenantId>,
    },
    /// Record each practice's current head hash in the checkpoint table, signed with the
    /// practice's KMS-wrapped checkpoint key (run it periodically, e.g. from a cron job):
    /// deleting the newest entries is then detected as a truncated tail.
    Checkpoint {
        #[arg(long)]
        tenant: Option<TenantId>,
    },
    /// Retention: delete one practice's entries before `--before-seq`, as the owner role
    /// (`database.owner_url`). Checkpoints of the cut and of the head are written first and the
    /// purge is itself recorded in the chain, so `audit verify` still proves the rest.
    Purge {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        before_seq: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (secrets masked) and every problem found.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a practice and its first admin account; prints the admin's one-time password.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        admin_email: String,
    },
}

/// Exit codes: 0 success, 1 refused or failed, 2 the configuration cannot be read.
pub fn run(cli: Cli) -> ExitCode {
    install_tls_provider();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("praxis: {error}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Config { command: ConfigCommand::Check } => config_check(&config),
        Command::Serve => with_runtime(serve(config)),
        Command::Migrate => with_runtime(migrate(config)),
        Command::Tenants { command: TenantsCommand::Create { name, admin_email } } => {
            with_runtime(create_tenant(config, name, admin_email))
        }
        Command::Users { command: UsersCommand::Disable { tenant, email } } => {
            with_runtime(end_user_access(config, tenant, email, Ending::Disable))
        }
        Command::Sessions { command: SessionsCommand::Revoke { tenant, user } } => {
            with_runtime(end_user_access(config, tenant, user, Ending::RevokeSessions))
        }
        Command::Ip { command } => with_runtime(ip_command(config, command)),
        Command::Audit { command: AuditCommand::Verify { tenant } } => with_runtime(audit_verify(config, tenant)),
        Command::Audit { command: AuditCommand::Purge { tenant, before_seq } } => {
            with_runtime(audit_purge(config, tenant, before_seq))
        }
        Command::Audit { command: AuditCommand::Checkpoint { tenant } } => {
            with_runtime(audit_checkpoint(config, tenant))
        }
        Command::Keys { command } => with_runtime(keys_command(config, command)),
    }
}

/// One TLS crypto provider for the whole process: rustls on ring, the library the workspace's
/// own crypto already uses. HTTP clients built without an explicit TLS configuration (the OTLP
/// exporter, the KMS SDKs) then never fall back to, or panic for lack of, another provider.
pub fn install_tls_provider() {
    // Err only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn with_runtime(future: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let outcome = actix_web::rt::System::new().block_on(future);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("praxis: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_check(config: &Config) -> ExitCode {
    match toml::to_string_pretty(config) {
        Ok(text) => println!("# effective configuration (secrets masked)\n{text}"),
        Err(error) => eprintln!("praxis: cannot print the configuration: {error}"),
    }
    for status in config.secret_statuses() {
        println!("# secret {}: {}", status.field, if status.configured { "configured" } else { "missing" });
    }
    let problems = config.validate();
    if problems.is_empty() {
        println!("# no problems found");
        return ExitCode::SUCCESS;
    }
    eprintln!("{} problem(s) found:", problems.len());
    for problem in &problems {
        eprintln!("  - {problem}");
    }
    ExitCode::FAILURE
}

fn refuse_if_invalid(config: &Config) -> anyhow::Result<()> {
    let problems = config.validate();
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    bail!("refusing to start, {} problem(s) in the configuration:\n{}", problems.len(), list.join("\n"))
}

fn init_telemetry(config: &Config) -> anyhow::Result<telemetry::TelemetryGuard> {
    let telemetry_config = telemetry::TelemetryConfig {
        format: match config.telemetry.log_format {
            LogFormat::Json => telemetry::LogFormat::Json,
            LogFormat::Pretty => telemetry::LogFormat::Pretty,
        },
        filter: config.telemetry.log_level.clone(),
        otlp_endpoint: config.telemetry.otlp_endpoint.clone(),
        service_name: "praxis".into(),
    };
    Ok(telemetry::init(&telemetry_config)?)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    refuse_if_invalid(&config)?;
    let _telemetry = init_telemetry(&config)?;
    let metrics = crate::metrics::install(&config, true)?;
    for status in config.secret_statuses() {
        tracing::info!(
            setting = status.field,
            configured = status.configured,
            "secret configured or missing (never its value)"
        );
    }
    let config = Arc::new(config);
    let kms = crate::kms::build(&config.kms).await?;
    let state = AppState::with_keyring(config.clone(), Arc::new(SystemClock), kms.keyring.clone())?;
    crate::metrics::observe(&state);

    // Fail secure: never accept traffic with a KMS that cannot wrap and unwrap, or that does not
    // open the keys the database holds.
    let kek = crate::kms::start_up_check(&kms, &state.app).await.context("refusing to start")?;
    tracing::info!(backend = kek.backend, kek_id = %kek.key_id, kek_version = %kek.version, "KMS self-test passed");

    // Fail secure: never serve through a role that row-level security does not bind.
    let problems =
        store_postgres::verify_runtime_role(&state.db).await.context("database.url: cannot check the runtime role")?;
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("  - database.url: {p}")).collect();
        bail!("refusing to start, the database role is unsafe:\n{}", list.join("\n"));
    }

    if config.reminders.enabled {
        let worker = crate::reminders::ReminderWorker::new(
            state.app.clone(),
            crate::reminders::notifier_from_config(&config.reminders)
                .map_err(|e| anyhow::anyhow!("refusing to start: {e}"))?,
            crate::reminders::WorkerSettings::from_config(&config.reminders),
        );
        actix_web::rt::spawn(worker.run());
    } else {
        tracing::info!("reminder worker disabled (reminders.enabled = false)");
    }

    if config.audit.sealer_enabled {
        actix_web::rt::spawn(crate::audit_sealer::AuditSealer::new(state.app.clone(), &config.audit).run());
    } else {
        tracing::warn!("audit sealer disabled (audit.sealer_enabled = false): another instance must seal");
    }

    let listener = TcpListener::bind(&config.server.bind)
        .with_context(|| format!("server.bind: cannot listen on {}", config.server.bind))?;
    tracing::info!(listen = %listener.local_addr()?, environment = ?config.environment, "praxis listening");
    let api = crate::server::start(state, listener, crate::server::no_extra_routes)?;
    // `metrics` lives until serving ends: dropping it would stop the OTLP export.
    match (metrics.clone(), config.telemetry.metrics_bind()) {
        (Some(exporter), Some(bind)) => {
            let metrics_listener =
                TcpListener::bind(bind).with_context(|| format!("telemetry.metrics_bind: cannot listen on {bind}"))?;
            tracing::info!(listen = %metrics_listener.local_addr()?, "metrics page listening (GET /metrics)");
            let page = crate::metrics::start_server(exporter, metrics_listener)?;
            let page_handle = page.handle();
            actix_web::rt::spawn(page);
            api.await?;
            page_handle.stop(true).await;
        }
        _ => api.await?,
    }
    tracing::info!("praxis stopped");
    Ok(())
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let owner_url = config.database.owner_url.as_ref().context(
        "database.owner_url: required for migrations (the owner role's URL; the server's runtime role cannot migrate)",
    )?;
    let pool = store_postgres::connect(owner_url.expose_secret(), &config.database.pool_options())
        .await
        .context("database.owner_url: cannot connect")?;
    store_postgres::migrate(&pool).await?;
    println!("migrations applied");
    Ok(())
}

/// The use cases for an operator command, on the runtime role's pool (`database.url`), with the
/// configured password hashing cost and keyring: the same code and settings the API runs. (The
/// keyring is only set up here; no KMS is called unless the command touches patient data. Redis
/// is not used: no operator command signs anyone in.)
async fn operator_services(config: &Config) -> anyhow::Result<app::Services> {
    let url = config.database.url.as_ref().context("database.url: required secret is missing")?;
    let pool = store_postgres::connect(url.expose_secret(), &config.database.pool_options()).await?;
    let keyring = crate::kms::build(&config.kms).await?.keyring;
    services_on(config, pool, keyring, None)
}

/// The use cases of the audit commands on `pool`, with each practice's checkpoint key wrapped by
/// the configured KMS.
async fn audit_services(config: &Config, pool: sqlx::PgPool) -> anyhow::Result<app::Services> {
    let keyring = crate::kms::build(&config.kms).await?.keyring;
    let signer = app::checkpoint_signer::KmsCheckpointSigner::new(pool.clone(), keyring.clone(), Arc::new(SystemClock));
    services_on(config, pool, keyring, Some(Arc::new(signer)))
}

async fn create_tenant(config: Config, name: String, admin_email: String) -> anyhow::Result<()> {
    let services = operator_services(&config).await?;
    let actor = kernel::Actor::System { component: "cli".into() };
    let created = services
        .create_practice(actor, &name, &admin_email)
        .await
        .map_err(|e| operator_error(e, &[("name", "--name"), ("admin_email", "--admin-email")]))?;
    println!(
        "practice created\n  tenant id:      {}\n  admin email:    {}\n  admin password: {}\n(the password is shown once; store it in a password manager)",
        created.tenant,
        created.admin_email,
        created.admin_password.expose_secret()
    );
    Ok(())
}

async fn keys_command(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    use crate::keys::{Operation, Options};
    let (operation, args) = match command {
        KeysCommand::Reencrypt { before, args } => {
            let options = crate::reencrypt::Options {
                tenant: args.tenant,
                batch_size: args.batch_size,
                before,
                limit: args.limit,
            };
            return crate::reencrypt::run(&config, options).await.map(|_| ());
        }
        KeysCommand::Rotate { resume, args } => (Operation::Rotate { resume }, args),
        KeysCommand::Migrate { to, args } => (Operation::Migrate { to }, args),
    };
    let options = Options { tenant: args.tenant, batch_size: args.batch_size, limit: args.limit };
    crate::keys::run(&config, operation, options).await.map(|_| ())
}

async fn audit_verify(config: Config, tenant: Option<TenantId>) -> anyhow::Result<()> {
    // A command that exits at once cannot be scraped: its result gauge is pushed over OTLP (when
    // configured) as the exporter is dropped at the end of this function.
    let _metrics = crate::metrics::install(&config, false)?;
    let (pool, tenants) = crate::operator::operator_scope(&config, tenant).await?;
    let services = audit_services(&config, pool).await?;
    let mut broken = 0usize;
    for tenant in &tenants {
        let report = services.verify_audit_chain(&app::Caller::operator(*tenant)).await?;
        match report.first_break {
            None => println!(
                "practice {tenant}: chain intact ({} sealed entries, head seq {}; {} not sealed yet)",
                report.entries_checked,
                report.head.map(|h| h.seq).unwrap_or(0),
                report.unsealed
            ),
            Some(first_break) => {
                println!("practice {tenant}: BROKEN at seq {}: {:?}", first_break.seq, first_break.kind);
            }
        }
        if !report.altered_unsealed.is_empty() {
            println!(
                "practice {tenant}: ALTERED unsealed entries (content no longer matches its recorded digest): ids {:?}",
                report.altered_unsealed
            );
        }
        if !report.is_intact() {
            broken += 1;
        }
    }
    telemetry::metrics::record_audit_verification(broken == 0);
    if broken > 0 {
        bail!("{broken} of {} audit chain(s) are broken", tenants.len());
    }
    Ok(())
}

async fn audit_checkpoint(config: Config, tenant: Option<TenantId>) -> anyhow::Result<()> {
    let (pool, tenants) = crate::operator::operator_scope(&config, tenant).await?;
    let services = audit_services(&config, pool).await?;
    for tenant in tenants {
        match services.checkpoint_audit_chain(&app::Caller::operator(tenant)).await? {
            Some(checkpoint) => println!("practice {tenant}: signed checkpoint at seq {}", checkpoint.seq),
            None => println!("practice {tenant}: empty chain, nothing to pin"),
        }
    }
    Ok(())
}

/// `users disable` and `sessions revoke`: the same use cases as `POST /api/v1/users/{id}/disable`,
/// run as the operator inside one practice and audited the same way (actor: the `cli` system
/// component).
async fn end_user_access(config: Config, tenant: TenantId, email: String, ending: Ending) -> anyhow::Result<()> {
    let mut services = operator_services(&config).await?;
    // The serving instances learn of the revocation through Redis at once; without a configured
    // Redis they still refuse the sessions once their cached entries expire.
    if config.redis.url.is_some() {
        let store = config.redis.store(std::time::Duration::from_millis(config.redis.timeout_ms.max(2_000)))?;
        services = services.with_revocation_markers(cache_redis::RevocationMarkers::new(store));
    }
    let caller = app::Caller::operator(tenant);
    let account = app::accounts::AccountRef::Email(email.clone());
    let outcome = match ending {
        Ending::Disable => services.disable_user(&caller, account).await,
        Ending::RevokeSessions => services.revoke_user_sessions(&caller, account).await,
    };
    let ended = match outcome {
        Ok(ended) => ended,
        Err(app::Error::NotFound) => bail!("--user/--email: no account {:?} in practice {tenant}", email.trim()),
        Err(other) => return Err(operator_error(other, &[])),
    };
    match ending {
        Ending::Disable => println!("account {} disabled; {} session(s) ended", ended.user, ended.sessions_ended),
        Ending::RevokeSessions => println!("{} session(s) of {} ended", ended.sessions_ended, ended.user),
    }
    if !ended.announced {
        eprintln!(
            "praxis: warning: the revocation markers could not be written to Redis; running instances \
             refuse the sessions once their cached entries expire (auth.principal_cache_ttl_ms)"
        );
    }
    Ok(())
}

/// How `end_user_access` ends an account's access.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Disable,
    RevokeSessions,
}

async fn ip_command(config: Config, command: IpCommand) -> anyhow::Result<()> {
    let store = config.redis.store(std::time::Duration::from_millis(config.redis.timeout_ms.max(2_000)))?;
    let blocklist = cache_redis::IpBlockList::new(store);
    match command {
        IpCommand::Block { ip, ttl_secs, reason } => {
            if ttl_secs == 0 {
                bail!("--ttl-secs: must be greater than 0");
            }
            blocklist.block(ip, std::time::Duration::from_secs(ttl_secs), &reason).await?;
            println!("{ip} blocked for {ttl_secs} s");
        }
        IpCommand::Unblock { ip } => {
            let removed = blocklist.unblock(ip).await?;
            println!("{ip} {}", if removed { "unblocked" } else { "was not blocked" });
        }
        IpCommand::List => {
            for entry in blocklist.list().await? {
                println!("{}\t{} s left\t{}", entry.ip, entry.ttl_remaining.as_secs(), entry.reason);
            }
        }
    }
    Ok(())
}

async fn audit_purge(config: Config, tenant: TenantId, before_seq: u64) -> anyhow::Result<()> {
    let url = config
        .database
        .owner_url
        .as_ref()
        .context("database.owner_url: required (only the owner role may purge audit entries)")?;
    let pool = store_postgres::connect(url.expose_secret(), &config.database.pool_options()).await?;
    let services = audit_services(&config, pool).await?;
    let report = services
        .purge_audit_before(&app::Caller::operator(tenant), before_seq)
        .await
        .map_err(|e| operator_error(e, &[("before_seq", "--before-seq")]))?;
    println!(
        "practice {tenant}: {} entries before seq {before_seq} purged; checkpoints at seq {} and {}; recorded as seq {}",
        report.purged, report.anchor.seq, report.head.seq, report.entry.seq
    );
    Ok(())
}
