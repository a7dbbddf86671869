//! The audit trail as its readers and operators use it: querying entries, verifying the chain,
//! pinning the head in a signed checkpoint, and the retention purge. The HTTP API
//! (`GET /api/v1/audit`, `/audit/verify`) and `praxis audit verify|checkpoint|purge` call these.

use crate::{Access, Caller, Error, Result, Services};
use audit::{Action, AuditFilter, AuditPage, Checkpoint, Outcome, Page, VerificationReport};
use identity::Permission;
use kernel::{Actor, Role, UserId};
use store_postgres::audit::PurgeReport;
use time::OffsetDateTime;

/// Which entries a reader asks for, as plain values (names as `crates/audit` spells them).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// Entries whose actor is this account, in whatever role it acted.
    pub actor_user: Option<UserId>,
    /// Inclusive lower bound of the entry's time.
    pub from: Option<OffsetDateTime>,
    /// Exclusive upper bound.
    pub to: Option<OffsetDateTime>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<u64>,
    /// 1 to 200; default 50.
    pub limit: Option<u32>,
}

impl Services {
    /// Entries of the caller's practice matching `query`, newest first (`audit.read`).
    pub async fn audit_entries(&self, caller: &Caller, query: AuditQuery) -> Result<AuditPage> {
        self.authorize(caller, Permission::AuditRead, "audit").await?;
        let filter = AuditFilter {
            actor: None,
            action: query
                .action
                .as_deref()
                .map(str::parse::<Action>)
                .transpose()
                .map_err(|_| Error::invalid("action", "unknown action"))?,
            outcome: query
                .outcome
                .as_deref()
                .map(str::parse::<Outcome>)
                .transpose()
                .map_err(|_| Error::invalid("outcome", "expected success, failure or denied"))?,
            resource_type: query.resource_type,
            resource_id: query.resource_id,
            from: query.from,
            to: query.to,
        };
        if filter.validate().is_err() {
            return Err(Error::invalid("from", "must be before `to`"));
        }
        let page = Page::new(query.cursor, query.limit.unwrap_or(Page::DEFAULT_LIMIT))
            .map_err(|_| Error::invalid("limit", "must be between 1 and 200"))?;
        let Some(user) = query.actor_user else {
            return Ok(self.audit_log.query_entries(caller.tenant, &filter, page).await?);
        };
        // An actor is stored with the role it acted in, and an account's role can change over
        // time: ask for each role and merge the newest-first pages.
        let limit = page.limit() as usize;
        let mut entries = Vec::new();
        for role in Role::ALL {
            let actor = Actor::User { tenant: caller.tenant, user, role };
            let by_role = AuditFilter { actor: Some(actor), ..filter.clone() };
            entries.extend(self.audit_log.query_entries(caller.tenant, &by_role, page).await?.entries);
        }
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.id));
        entries.truncate(limit);
        let next_cursor = if entries.len() == limit { entries.last().map(|e| e.id) } else { None };
        Ok(AuditPage { entries, next_cursor })
    }

    /// Walks the caller's practice's chain against its signed checkpoints (`audit.verify`).
    ///
    /// Seals what is pending first (what the sealer would do within a moment), so the chain
    /// covers every entry recorded before the call; entries recorded meanwhile, or refused by
    /// the sealer as altered, are checked against their digests and counted as unsealed.
    pub async fn verify_audit_chain(&self, caller: &Caller) -> Result<VerificationReport> {
        self.authorize(caller, Permission::AuditVerify, "audit").await?;
        self.seal_practice(caller.tenant).await?;
        Ok(self.audit_log.verify_chain(caller.tenant).await?)
    }

    /// Records the practice's current head in a checkpoint signed with the practice's
    /// KMS-wrapped key, so deleting the newest entries shows as a truncated tail. Operators only
    /// (`praxis audit checkpoint`, e.g. from a cron job). `None` for an empty chain.
    pub async fn checkpoint_audit_chain(&self, caller: &Caller) -> Result<Option<Checkpoint>> {
        require_operator(caller)?;
        // The checkpoint pins the chain with every entry recorded so far.
        self.seal_practice(caller.tenant).await?;
        Ok(store_postgres::audit::write_checkpoint(
            self.audit_log.pool(),
            caller.tenant,
            self.audit_log.signer(),
            self.clock(),
        )
        .await?)
    }

    /// Retention: deletes the practice's entries before `before_seq`, behind checkpoints of the
    /// cut and of the head, and records the purge in the chain. Operators only, and only through
    /// the owner role's pool (the runtime role may not delete audit entries).
    pub async fn purge_audit_before(&self, caller: &Caller, before_seq: u64) -> Result<PurgeReport> {
        require_operator(caller)?;
        Ok(store_postgres::audit::purge_before(
            self.audit_log.pool(),
            caller.tenant,
            before_seq,
            self.audit_log.signer(),
            self.clock(),
        )
        .await?)
    }
}

/// Refuses every caller but an operator at the command line.
fn require_operator(caller: &Caller) -> Result<()> {
    match caller.access {
        Access::Operator => Ok(()),
        _ => Err(Error::Forbidden),
    }
}
