//! An in-memory [`AuditLog`], for tests of other crates and as the reference for adapters.

use crate::chain::{ChainHead, ChainedEntry, next_entry};
use crate::error::AuditError;
use crate::event::AuditEvent;
use crate::port::{AuditFilter, AuditLog, AuditPage, Page};
use crate::trail::RecordedEntry;
use crate::verify::{VerificationReport, verify_chain};
use async_trait::async_trait;
use kernel::TenantId;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Chains kept in a map, one per tenant. Not durable; no checkpoints.
#[derive(Debug, Default)]
pub struct MemoryAuditLog {
    chains: Mutex<HashMap<TenantId, Vec<ChainedEntry>>>,
}

impl MemoryAuditLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of `tenant`'s chain, oldest first.
    pub fn entries(&self, tenant: TenantId) -> Vec<ChainedEntry> {
        self.lock().get(&tenant).cloned().unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TenantId, Vec<ChainedEntry>>> {
        // A panic elsewhere while holding the lock leaves whole entries only: keep going.
        self.chains.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryAuditLog {
    /// Validates, chains and stores `event` in its tenant's chain (in memory there is no
    /// transaction to share).
    pub fn append(&self, event: AuditEvent) -> Result<ChainedEntry, AuditError> {
        let mut chains = self.lock();
        let chain = chains.entry(event.tenant).or_default();
        let head = chain.last().map_or(ChainHead::GENESIS, ChainedEntry::head);
        let entry = next_entry(&head, event)?;
        chain.push(entry.clone());
        Ok(entry)
    }
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn query(&self, tenant: TenantId, filter: &AuditFilter, page: Page) -> Result<AuditPage, AuditError> {
        filter.validate()?;
        let chains = self.lock();
        let matching = chains
            .get(&tenant)
            .into_iter()
            .flatten()
            .rev()
            .filter(|entry| page.cursor().is_none_or(|cursor| entry.seq < cursor))
            .filter(|entry| filter.matches(&entry.event))
            .take(page.limit() as usize + 1)
            // In memory an entry is sealed as it is appended: its id is its seq.
            .map(|entry| RecordedEntry::sealed(entry.seq, entry.clone()))
            .collect();
        Ok(AuditPage::from_overfetch(matching, page))
    }

    async fn verify(&self, tenant: TenantId) -> Result<VerificationReport, AuditError> {
        let chains = self.lock();
        verify_chain(tenant, chains.get(&tenant).into_iter().flatten(), &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::block_on;
    use crate::{Action, Outcome};
    use kernel::{Actor, FixedClock};
    use time::macros::datetime;

    #[test]
    fn appends_chain_per_tenant_and_pages_newest_first() {
        let log = MemoryAuditLog::new();
        let clock = FixedClock::at(datetime!(2026-01-01 00:00 UTC));
        let (a, b) = (TenantId::new(), TenantId::new());
        let actor = Actor::System { component: "test".into() };
        for i in 0..5 {
            let outcome = if i % 2 == 0 { Outcome::Success } else { Outcome::Failure };
            let event = AuditEvent::new(a, actor.clone(), Action::AuthLogin, "session", &clock).with_outcome(outcome);
            assert_eq!(log.append(event).unwrap().seq, i + 1);
        }
        let other = log.append(AuditEvent::new(b, actor, Action::AuthLogin, "session", &clock)).unwrap();
        assert_eq!(other.seq, 1);

        let all = AuditFilter::default();
        let first = block_on(log.query(a, &all, Page::new(None, 2).unwrap())).unwrap();
        assert_eq!(first.entries.iter().map(|e| e.id).collect::<Vec<_>>(), vec![5, 4]);
        assert_eq!(first.next_cursor, Some(4));
        let second = block_on(log.query(a, &all, Page::new(first.next_cursor, 2).unwrap())).unwrap();
        assert_eq!(second.entries.iter().map(|e| e.id).collect::<Vec<_>>(), vec![3, 2]);
        let last = block_on(log.query(a, &all, Page::new(second.next_cursor, 2).unwrap())).unwrap();
        assert_eq!(last.entries.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(last.next_cursor, None);

        let failures = AuditFilter { outcome: Some(Outcome::Failure), ..AuditFilter::default() };
        let page = block_on(log.query(a, &failures, Page::default())).unwrap();
        assert_eq!(page.entries.iter().map(|e| e.id).collect::<Vec<_>>(), vec![4, 2]);
        assert_eq!(page.next_cursor, None);

        let report = block_on(log.verify(a)).unwrap();
        assert!(report.is_intact());
        assert_eq!(report.entries_checked, 5);
        assert_eq!(report.head.map(|h| h.seq), Some(5));
    }
}
