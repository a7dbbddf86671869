//! The `AuditLog` port and its query types.

use crate::action::{Action, Outcome};
use crate::error::AuditError;
use crate::event::AuditEvent;
use crate::trail::RecordedEntry;
use crate::verify::VerificationReport;
use async_trait::async_trait;
use kernel::{Actor, TenantId};
use time::OffsetDateTime;

/// Port: reading the tenant-scoped, append-only audit log.
///
/// Recording is deliberately not part of it: an entry is written in the transaction of the change
/// it records, so it can only be recorded through that transaction (the Postgres adapter's
/// `store_postgres::audit::append(conn, event)`), never by a port method that would open a
/// transaction of its own. Reads cover sealed and not-yet-sealed entries alike and say which is
/// which ([`RecordedEntry::link`]). An adapter verifies by streaming the chain through a
/// [`crate::ChainVerifier`]; it never changes an entry's content.
#[async_trait]
pub trait AuditLog: Send + Sync + std::fmt::Debug {
    /// Entries of `tenant` matching `filter`, sealed or not, newest first (descending
    /// [`RecordedEntry::id`], the order they were recorded), one page at a time.
    async fn query(&self, tenant: TenantId, filter: &AuditFilter, page: Page) -> Result<AuditPage, AuditError>;

    /// Verifies `tenant`'s whole chain against its stored checkpoints.
    async fn verify(&self, tenant: TenantId) -> Result<VerificationReport, AuditError>;
}

/// Which entries a query wants. Every field that is `Some` must match (AND).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// Exact actor.
    pub actor: Option<Actor>,
    pub action: Option<Action>,
    pub outcome: Option<Outcome>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// Inclusive lower bound of `occurred_at`.
    pub from: Option<OffsetDateTime>,
    /// Exclusive upper bound of `occurred_at`.
    pub to: Option<OffsetDateTime>,
}

impl AuditFilter {
    /// Rejects an empty time range (`from >= to`).
    pub fn validate(&self) -> Result<(), AuditError> {
        match (self.from, self.to) {
            (Some(from), Some(to)) if from >= to => Err(AuditError::InvalidTimeRange),
            _ => Ok(()),
        }
    }

    /// Whether `event` matches: the reference semantics adapters translate into SQL.
    pub fn matches(&self, event: &AuditEvent) -> bool {
        self.actor.as_ref().is_none_or(|actor| *actor == event.actor)
            && self.action.is_none_or(|action| action == event.action)
            && self.outcome.is_none_or(|outcome| outcome == event.outcome)
            && self.resource_type.as_ref().is_none_or(|t| *t == event.resource_type)
            && self.resource_id.as_ref().is_none_or(|id| Some(id) == event.resource_id.as_ref())
            && self.from.is_none_or(|from| event.occurred_at >= from)
            && self.to.is_none_or(|to| event.occurred_at < to)
    }
}

/// A page request: at most `limit` entries with `id < cursor` (all when no cursor), newest
/// first. The limit is bounded so one request cannot pull a whole chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    cursor: Option<u64>,
    limit: u32,
}

impl Page {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 200;

    /// A page of `limit` (1..=200) entries before `cursor`.
    pub fn new(cursor: Option<u64>, limit: u32) -> Result<Self, AuditError> {
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(AuditError::InvalidPageLimit { limit, max: Self::MAX_LIMIT });
        }
        Ok(Self { cursor, limit })
    }

    /// Exclusive upper bound on [`RecordedEntry::id`]; `None` for the newest entries.
    pub fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }
}

impl Default for Page {
    fn default() -> Self {
        Self { cursor: None, limit: Self::DEFAULT_LIMIT }
    }
}

/// One page of entries, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    pub entries: Vec<RecordedEntry>,
    /// The cursor for the next (older) page: the id of the last entry here, when the page is
    /// full; `None` when there is nothing older.
    pub next_cursor: Option<u64>,
}

impl AuditPage {
    /// Builds a page from up to `page.limit() + 1` entries, newest first: adapters fetch one
    /// more row than asked to learn whether an older page exists.
    pub fn from_overfetch(mut entries: Vec<RecordedEntry>, page: Page) -> Self {
        let limit = page.limit() as usize;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_cursor = if more { entries.last().map(|entry| entry.id) } else { None };
        Self { entries, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn page_limit_is_bounded() {
        assert_eq!(Page::default().limit(), 50);
        assert!(Page::new(None, 1).is_ok());
        assert!(Page::new(Some(10), 200).is_ok());
        assert!(matches!(Page::new(None, 0), Err(AuditError::InvalidPageLimit { limit: 0, max: 200 })));
        assert!(matches!(Page::new(None, 201), Err(AuditError::InvalidPageLimit { limit: 201, .. })));
    }

    #[test]
    fn empty_time_ranges_are_rejected() {
        let t = datetime!(2026-01-01 00:00 UTC);
        let filter = AuditFilter { from: Some(t), to: Some(t), ..AuditFilter::default() };
        assert!(matches!(filter.validate(), Err(AuditError::InvalidTimeRange)));
        let filter = AuditFilter { from: Some(t), to: None, ..AuditFilter::default() };
        assert!(filter.validate().is_ok());
    }
}
