//! Streaming verification of a stored chain: checkpoints first, then the entries in seq order,
//! in batches, through the pure verifier.

use super::AuditStoreError;
use super::retention::{PURGED_BEFORE_SEQ_KEY, load_checkpoints};
use super::row::EntryRow;
use crate::{DbContext, begin};
use ::audit::{
    Action, Break, BreakKind, ChainHead, ChainVerifier, ChainedEntry, Checkpoint, CheckpointSigner, Digest,
    VerificationReport,
};
use kernel::TenantId;
use sqlx::PgPool;

/// Rows fetched per round trip while verifying: large enough that the round trips do not
/// dominate, small enough to keep memory flat for chains of millions of entries.
pub const VERIFY_BATCH: u32 = 1000;

const SELECT_BATCH: &str =
    concat!("SELECT ", entry_columns!(), " FROM audit_entries WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3");

/// Verifies `tenant`'s chain. With a `signer`, only checkpoints it accepts are trusted.
///
/// Runs in one read-committed transaction. That is consistent enough: entries are only ever
/// added at the tail (which a keyset page past the last seen seq simply reads or misses) or
/// purged at the head, behind the head lock, before the first entry this reads.
pub(crate) async fn verify_tenant(
    pool: &PgPool,
    tenant: TenantId,
    signer: Option<&dyn CheckpointSigner>,
    batch: u32,
) -> Result<VerificationReport, AuditStoreError> {
    let mut tx = begin(pool, &DbContext::tenant(tenant)).await?;
    let stored = load_checkpoints(&mut tx, tenant).await?;
    let checkpoints = trusted(stored, signer).await?;

    let first_seq: Option<i64> = sqlx::query_scalar("SELECT min(seq) FROM audit_entries WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .map_err(AuditStoreError::db)?;
    let first_seq = first_seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(1);
    // A purged chain starts after a (trusted) checkpoint of the last purged entry.
    let anchor = (first_seq > 1)
        .then(|| checkpoints.iter().find(|c| c.seq == first_seq - 1))
        .flatten()
        .map(|c| ChainHead { seq: c.seq, hash: c.head_hash });
    let mut verifier = match anchor {
        None => Stream::Full(ChainVerifier::new(tenant, &checkpoints)?),
        Some(anchor) => Stream::Resumed(Resumed::new(tenant, anchor, &checkpoints)),
    };

    let mut corroborated = false;
    let mut after: i64 = 0;
    'pages: loop {
        let rows: Vec<EntryRow> = sqlx::query_as(SELECT_BATCH)
            .bind(tenant.as_uuid())
            .bind(after)
            .bind(i64::from(batch))
            .fetch_all(&mut *tx)
            .await
            .map_err(AuditStoreError::db)?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        let full_page = rows.len() == batch as usize;
        for row in rows {
            let entry = row.into_entry_for_verification();
            if !verifier.push(&entry) {
                break 'pages;
            }
            if let Some(anchor) = anchor {
                corroborated |= records_purge_before(&entry, anchor.seq + 1);
            }
        }
        if !full_page {
            break;
        }
    }
    tx.commit().await.map_err(AuditStoreError::db)?;

    let mut report = verifier.finish();
    // A checkpoint at the seq before the oldest entry proves nothing on its own: a periodic
    // checkpoint would make a deleted prefix look purged. The purge also appends an entry saying
    // where it cut, inside the verified chain; without it the missing prefix is a gap at seq 1.
    if let Some(anchor) = anchor
        && report.is_intact()
        && !corroborated
    {
        let found = anchor.seq + 1;
        report.head = None;
        report.first_break = Some(Break { seq: 1, kind: BreakKind::SequenceGap { expected: 1, found } });
    }
    Ok(report)
}

fn records_purge_before(entry: &ChainedEntry, first_kept: u64) -> bool {
    entry.event.action == Action::AuditRetentionPurge
        && entry.event.detail.get(PURGED_BEFORE_SEQ_KEY).and_then(serde_json::Value::as_u64) == Some(first_kept)
}

/// The checkpoints verification may rely on: all of them without a signer; with one, those whose
/// signature it accepts. A rejected one is dropped rather than failing verification: it may be a
/// forgery (then ignoring it is right) or a damaged genuine one (then a pin is lost, and logged).
async fn trusted(
    checkpoints: Vec<Checkpoint>,
    signer: Option<&dyn CheckpointSigner>,
) -> Result<Vec<Checkpoint>, AuditStoreError> {
    let Some(signer) = signer else { return Ok(checkpoints) };
    let mut kept = Vec::with_capacity(checkpoints.len());
    for checkpoint in checkpoints {
        if checkpoint.has_valid_signature(signer).await? {
            kept.push(checkpoint);
        } else {
            tracing::warn!(
                tenant = %checkpoint.tenant,
                seq = checkpoint.seq,
                signed = checkpoint.signature.is_some(),
                "audit checkpoint ignored: its signature does not verify"
            );
        }
    }
    Ok(kept)
}

/// The pure verifier for a whole chain, or the resumed one for a purged chain.
#[derive(Debug)]
enum Stream {
    Full(ChainVerifier),
    Resumed(Resumed),
}

impl Stream {
    fn push(&mut self, entry: &ChainedEntry) -> bool {
        match self {
            Stream::Full(verifier) => verifier.push(entry),
            Stream::Resumed(verifier) => verifier.push(entry),
        }
    }

    fn finish(self) -> VerificationReport {
        match self {
            Stream::Full(verifier) => verifier.finish(),
            Stream::Resumed(verifier) => verifier.finish(),
        }
    }
}

/// [`ChainVerifier`] started from a trusted anchor instead of the genesis: the same checks in
/// the same order (position, tenant, link, content, pins) and the same report.
///
/// Stopgap: the pure crate has no way to start its verifier mid-chain. Once it gains one
/// (`ChainVerifier::resume(tenant, anchor, checkpoints)`), this type should go; the tests in
/// this module pin its behaviour to the pure verifier's so the two cannot drift silently.
#[derive(Debug)]
struct Resumed {
    tenant: TenantId,
    /// Pins past the anchor, sorted by seq; `next` indexes the first not yet reached.
    pins: Vec<(u64, Digest)>,
    next: usize,
    expected_seq: u64,
    prev_hash: Digest,
    head: Option<ChainHead>,
    entries_checked: u64,
    first_break: Option<Break>,
}

impl Resumed {
    fn new(tenant: TenantId, anchor: ChainHead, checkpoints: &[Checkpoint]) -> Self {
        let mut pins: Vec<(u64, Digest)> = checkpoints
            .iter()
            .filter(|c| c.tenant == tenant && c.seq > anchor.seq)
            .map(|c| (c.seq, c.head_hash))
            .collect();
        pins.sort_unstable();
        Self {
            tenant,
            pins,
            next: 0,
            expected_seq: anchor.seq.saturating_add(1),
            prev_hash: anchor.hash,
            head: None,
            entries_checked: 0,
            first_break: None,
        }
    }

    fn push(&mut self, entry: &ChainedEntry) -> bool {
        if self.first_break.is_some() {
            return false;
        }
        self.entries_checked += 1;
        match self.check(entry) {
            Ok(()) => {
                self.expected_seq = entry.seq.saturating_add(1);
                self.prev_hash = entry.hash;
                self.head = Some(entry.head());
                true
            }
            Err(kind) => {
                let seq = match kind {
                    BreakKind::SequenceGap { expected, .. } | BreakKind::OutOfOrder { expected, .. } => expected,
                    _ => entry.seq,
                };
                self.first_break = Some(Break { seq, kind });
                false
            }
        }
    }

    fn check(&mut self, entry: &ChainedEntry) -> Result<(), BreakKind> {
        let expected = self.expected_seq;
        if entry.seq > expected {
            return Err(BreakKind::SequenceGap { expected, found: entry.seq });
        }
        if entry.seq < expected {
            return Err(BreakKind::OutOfOrder { expected, found: entry.seq });
        }
        if entry.event.tenant != self.tenant {
            return Err(BreakKind::ForeignTenant);
        }
        if entry.prev_hash != self.prev_hash {
            return Err(BreakKind::PrevHashMismatch);
        }
        if entry.compute_hash() != entry.hash {
            return Err(BreakKind::HashMismatch);
        }
        while let Some(&(checkpoint_seq, pinned)) = self.pins.get(self.next)
            && checkpoint_seq == entry.seq
        {
            if pinned != entry.hash {
                return Err(BreakKind::CheckpointMismatch { checkpoint_seq });
            }
            self.next += 1;
        }
        Ok(())
    }

    fn finish(self) -> VerificationReport {
        let mut first_break = self.first_break;
        if first_break.is_none()
            && let Some(&(checkpoint_seq, _)) = self.pins.get(self.next)
        {
            let last_seq = self.head.map_or(self.expected_seq.saturating_sub(1), |head| head.seq);
            first_break = Some(Break {
                seq: last_seq.saturating_add(1),
                kind: BreakKind::TruncatedTail { checkpoint_seq, last_seq },
            });
        }
        VerificationReport { tenant: self.tenant, entries_checked: self.entries_checked, head: self.head, first_break }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::audit::{AuditEvent, GENESIS_HASH, next_entry};
    use kernel::{Actor, FixedClock};
    use time::macros::datetime;

    fn chain(tenant: TenantId, n: u64) -> Vec<ChainedEntry> {
        let clock = FixedClock::at(datetime!(2026-03-01 12:00 UTC));
        let mut head = ChainHead::GENESIS;
        (0..n)
            .map(|_| {
                clock.advance(time::Duration::seconds(1));
                let actor = Actor::System { component: "test".into() };
                let entry =
                    next_entry(&head, AuditEvent::new(tenant, actor, Action::AuthLogin, "session", &clock)).unwrap();
                head = entry.head();
                entry
            })
            .collect()
    }

    fn pin(tenant: TenantId, entry: &ChainedEntry) -> Checkpoint {
        Checkpoint {
            tenant,
            seq: entry.seq,
            head_hash: entry.hash,
            created_at: datetime!(2026-03-02 00:00 UTC),
            signature: None,
        }
    }

    fn run_full(tenant: TenantId, entries: &[ChainedEntry], checkpoints: &[Checkpoint]) -> VerificationReport {
        let mut v = ChainVerifier::new(tenant, checkpoints).unwrap();
        for e in entries {
            if !v.push(e) {
                break;
            }
        }
        v.finish()
    }

    fn run_resumed(
        tenant: TenantId,
        anchor: ChainHead,
        entries: &[ChainedEntry],
        cps: &[Checkpoint],
    ) -> VerificationReport {
        let mut v = Resumed::new(tenant, anchor, cps);
        for e in entries {
            if !v.push(e) {
                break;
            }
        }
        v.finish()
    }

    /// Resuming from the genesis head must behave exactly like the pure verifier.
    #[test]
    fn resumed_from_genesis_matches_the_pure_verifier() {
        let tenant = TenantId::new();
        let intact = chain(tenant, 6);
        let genesis = ChainHead { seq: 0, hash: GENESIS_HASH };
        let cps = [pin(tenant, &intact[2]), pin(tenant, &intact[5])];
        let mut edited = intact.clone();
        edited[3].event.resource_type = "tampered".into();
        let mut deleted = intact.clone();
        deleted.remove(2);
        let mut swapped = intact.clone();
        let (a, b) = (swapped[1].clone(), swapped[2].clone());
        swapped[1] = ChainedEntry { seq: a.seq, ..b };
        swapped[2] = ChainedEntry { seq: b.seq, ..a };
        let truncated = intact[..4].to_vec();
        let mut foreign = intact.clone();
        foreign[4].event.tenant = TenantId::new();
        for case in [intact, edited, deleted, swapped, truncated, foreign] {
            assert_eq!(run_resumed(tenant, genesis, &case, &cps), run_full(tenant, &case, &cps));
        }
    }

    #[test]
    fn resumed_checks_the_link_to_the_anchor_and_later_pins() {
        let tenant = TenantId::new();
        let entries = chain(tenant, 8);
        let anchor = entries[2].head();
        let kept = &entries[3..];
        let cps = [pin(tenant, &entries[0]), pin(tenant, &entries[2]), pin(tenant, &entries[7])];
        let report = run_resumed(tenant, anchor, kept, &cps);
        assert!(report.is_intact(), "{report:?}");
        assert_eq!((report.entries_checked, report.head), (5, Some(entries[7].head())));

        let wrong_anchor = ChainHead { seq: 3, hash: [9; 32] };
        let report = run_resumed(tenant, wrong_anchor, kept, &cps);
        assert_eq!(report.first_break, Some(Break { seq: 4, kind: BreakKind::PrevHashMismatch }));

        let report = run_resumed(tenant, anchor, &kept[..3], &cps);
        assert_eq!(
            report.first_break,
            Some(Break { seq: 7, kind: BreakKind::TruncatedTail { checkpoint_seq: 8, last_seq: 6 } })
        );
        let report = run_resumed(tenant, anchor, &[], &cps);
        assert_eq!(
            report.first_break,
            Some(Break { seq: 4, kind: BreakKind::TruncatedTail { checkpoint_seq: 8, last_seq: 3 } })
        );
    }
}
