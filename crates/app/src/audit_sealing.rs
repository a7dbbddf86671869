//! Sealing the audit trail: linking the entries requests recorded into each practice's hash
//! chain (`store_postgres::audit::seal_pending`). The sealer worker of `praxis serve`
//! (`apps/api/src/audit_sealer.rs`) runs [`Services::seal_audit_trails`] continuously, every
//! instance at once if need be: a practice another instance is sealing is skipped, not waited
//! for. Verification and checkpoints seal the practice first ([`Services::seal_practice`]), so
//! they cover everything recorded before they started.
//!
//! Sealing writes no audit entry of its own: it changes no record, and an entry about sealing
//! would itself need sealing.

use crate::{Result, Services};
use kernel::TenantId;
use store_postgres::audit::SealReport;

/// What one round over the practices with unsealed entries did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SealRound {
    /// Practices that had unsealed entries.
    pub practices: u64,
    /// Entries linked into their chains.
    pub sealed: u64,
    /// Entries left unsealed because their content no longer matches the digest recorded with
    /// them (logged at ERROR by the store; verification reports them).
    pub refused: u64,
    /// Practices skipped because another sealer held them.
    pub busy: u64,
    /// For each sealed entry, how long after it happened it was sealed: an upper bound of the
    /// time from its commit to its sealing (its time is taken before its transaction commits).
    pub lags: Vec<time::Duration>,
}

impl Services {
    /// One round: every practice with unsealed entries (at most `max_practices`, the
    /// longest-waiting first), each sealed completely unless another sealer is at it.
    pub async fn seal_audit_trails(&self, max_practices: u32) -> Result<SealRound> {
        let practices = store_postgres::audit::practices_to_seal(self.audit_log.pool(), max_practices).await?;
        let mut round = SealRound::default();
        for tenant in practices {
            let report = self.seal_practice(tenant).await?;
            round.practices += 1;
            round.sealed += report.sealed;
            round.refused += report.refused.len() as u64;
            round.busy += u64::from(report.busy);
            let now = self.clock().now();
            for occurred_at in &report.sealed_occurred_at {
                let lag = now - *occurred_at;
                telemetry::metrics::record_audit_seal_lag(lag.unsigned_abs());
                round.lags.push(lag);
            }
        }
        Ok(round)
    }

    /// Seals every committed, unsealed entry of `tenant` now.
    pub async fn seal_practice(&self, tenant: TenantId) -> Result<SealReport> {
        Ok(store_postgres::audit::seal_pending(self.audit_log.pool(), tenant).await?)
    }
}
