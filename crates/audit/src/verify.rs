//! Chain verification: pure, streaming, and precise about *where* and *how* a chain broke.
//!
//! | Tampering                                          | Reported as                                   |
//! |----------------------------------------------------|-----------------------------------------------|
//! | a field of entry k edited                          | `HashMismatch` at k                           |
//! | entry k's stored hash edited                       | `HashMismatch` at k                           |
//! | entry k edited and its own hash recomputed         | `PrevHashMismatch` at k + 1                   |
//! | entry k's `seq` edited                             | `SequenceGap` / `OutOfOrder` at k             |
//! | entry k deleted                                    | `SequenceGap { expected: k, found: k + 1 }`   |
//! | entry k deleted, later ones renumbered             | `HashMismatch` at k                           |
//! | entries k, k+1 swapped (rows keep their seq)       | `SequenceGap { expected: k, found: k + 1 }`   |
//! | contents of k, k+1 swapped (seq column kept)       | `PrevHashMismatch` at k                       |
//! | an entry of another tenant slipped in              | `ForeignTenant` at its position               |
//! | newest entries deleted                             | `TruncatedTail` (needs a checkpoint past them)|
//! | suffix from k rewritten with recomputed hashes     | `CheckpointMismatch` at the first checkpoint ≥ k |
//! | a checkpoint at k forged without the signing key   | `CheckpointSignatureInvalid` / `CheckpointUnsigned` at k (with a signer) |
//!
//! The last three are invisible to the chain alone (see [`crate::checkpoint`]). Rejected
//! checkpoints are found before the entries are read ([`crate::vet_checkpoints`]) and reported
//! in seq order with the entries' own breaks
//! ([`ChainVerifier::with_rejected_checkpoints`]).
//!
//! A chain whose oldest entries were removed by a retention purge is verified from the trusted
//! checkpoint of the last removed entry with [`ChainVerifier::resume`]: the same checks, in the
//! same order, starting mid-chain.

pub use crate::breaks::{Break, BreakKind};
use crate::chain::{ChainHead, ChainedEntry, Digest, GENESIS_HASH};
use crate::checkpoint::Checkpoint;
use crate::error::AuditError;
use kernel::TenantId;
use serde::{Deserialize, Serialize};

/// The outcome of verifying one tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationReport {
    pub tenant: TenantId,
    /// Entries examined, including the broken one.
    pub entries_checked: u64,
    /// The last entry that verified (the end of the trustworthy prefix); `None` if none did.
    pub head: Option<ChainHead>,
    pub first_break: Option<Break>,
    /// Entries recorded but not sealed into the chain yet (the chain above does not cover them;
    /// their digests were checked instead).
    #[serde(default)]
    pub unsealed: u64,
    /// Ids of unsealed entries whose content no longer matches the digest written when they
    /// were recorded: edited after the fact (the sealer refuses to seal them).
    #[serde(default)]
    pub altered_unsealed: Vec<u64>,
}

impl VerificationReport {
    /// No break in the chain and no altered unsealed entry.
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none() && self.altered_unsealed.is_empty()
    }
}

/// Streaming verifier for one tenant's chain: feed entries in stored seq order with
/// [`ChainVerifier::push`], then call [`ChainVerifier::finish`]. Memory is constant in the length
/// of the chain (plus the checkpoints), so an adapter can page through millions of rows.
///
/// Checkpoints are given up front rather than to `finish`: a checkpoint in the middle of the
/// chain is compared when its entry streams past, without keeping every hash. Verify checkpoint
/// signatures ([`Checkpoint::has_valid_signature`]) before handing them in; the verifier trusts
/// them.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    tenant: TenantId,
    /// (seq, hash) sorted by seq; `next_checkpoint` indexes the first not yet reached.
    checkpoints: Vec<(u64, Digest)>,
    next_checkpoint: usize,
    expected_seq: u64,
    prev_hash: Digest,
    head: Option<ChainHead>,
    entries_checked: u64,
    first_break: Option<Break>,
    /// The lowest-seq break found outside the entries (a rejected checkpoint), reported when the
    /// stream reaches its seq. Only the first break is ever reported, so one is enough.
    rejected: Option<Break>,
}

impl ChainVerifier {
    /// A verifier for `tenant`'s whole chain, from seq 1, checking it against `checkpoints`
    /// (any order).
    pub fn new(tenant: TenantId, checkpoints: &[Checkpoint]) -> Result<Self, AuditError> {
        Ok(Self {
            tenant,
            checkpoints: pins(tenant, checkpoints)?,
            next_checkpoint: 0,
            expected_seq: 1,
            prev_hash: GENESIS_HASH,
            head: None,
            entries_checked: 0,
            first_break: None,
            rejected: None,
        })
    }

    /// A verifier for a chain whose entries up to and including `anchor.seq` were removed (a
    /// retention purge): the first entry fed must be `anchor.seq + 1` and link to
    /// `anchor.head_hash`, and every later entry is checked exactly as [`ChainVerifier::new`]
    /// checks it. `checkpoints` pinning purged entries are skipped (there is nothing left to
    /// compare them with); one pinning the anchor's own seq must agree with it, or the report
    /// is a [`BreakKind::CheckpointMismatch`] there.
    ///
    /// The anchor is taken on trust, like every checkpoint handed to a verifier: pass one whose
    /// signature was verified. Whether a missing prefix really was a purge (and not a deletion
    /// that merely happens to end at a checkpoint) is for the caller to corroborate, e.g. by the
    /// chain's own record of the purge.
    ///
    /// A report of a resumed chain counts only the entries fed; an empty suffix ends at the
    /// anchor (a [`BreakKind::TruncatedTail`] then reports `last_seq = anchor.seq`).
    pub fn resume(tenant: TenantId, anchor: &Checkpoint, checkpoints: &[Checkpoint]) -> Result<Self, AuditError> {
        if anchor.tenant != tenant {
            return Err(AuditError::CheckpointTenantMismatch);
        }
        if anchor.seq == 0 {
            return Err(AuditError::InvalidCheckpoint);
        }
        let all = pins(tenant, checkpoints)?;
        let conflicting = all.iter().any(|&(seq, hash)| seq == anchor.seq && hash != anchor.head_hash);
        let first_break = conflicting
            .then_some(Break { seq: anchor.seq, kind: BreakKind::CheckpointMismatch { checkpoint_seq: anchor.seq } });
        Ok(Self {
            tenant,
            checkpoints: all.into_iter().filter(|&(seq, _)| seq > anchor.seq).collect(),
            next_checkpoint: 0,
            expected_seq: anchor.seq.saturating_add(1),
            prev_hash: anchor.head_hash,
            head: None,
            entries_checked: 0,
            first_break,
            rejected: None,
        })
    }

    /// Also reports `rejected` checkpoints ([`crate::VettedCheckpoints::rejected`]) as breaks, in
    /// seq order with the chain's own: the report's `first_break` is whichever comes first (a
    /// rejected checkpoint first when both are at the same seq), and `head` is the last entry
    /// before it. So a forged checkpoint at seq 40 of an otherwise intact chain of 100 entries
    /// reports a break at 40 with head 39: nothing from the forgery on is vouched for.
    pub fn with_rejected_checkpoints(mut self, rejected: impl IntoIterator<Item = Break>) -> Self {
        self.rejected = self.rejected.into_iter().chain(rejected).min_by_key(|rejected| rejected.seq);
        self
    }

    /// The rejected checkpoint to report once the stream has reached `seq`, if any.
    fn rejected_up_to(&self, seq: u64) -> Option<Break> {
        self.rejected.filter(|rejected| rejected.seq <= seq)
    }

    /// Checks the next entry. Returns `true` while the chain is intact; after the first break it
    /// returns `false` and ignores further entries, so a pager can stop reading.
    pub fn push(&mut self, entry: &ChainedEntry) -> bool {
        if self.first_break.is_some() {
            return false;
        }
        self.entries_checked += 1;
        let own_break = self.check(entry).err().map(|kind| {
            let seq = match kind {
                BreakKind::SequenceGap { expected, .. } | BreakKind::OutOfOrder { expected, .. } => expected,
                _ => entry.seq,
            };
            Break { seq, kind }
        });
        // The stream has now reached this entry's seq (or the seq its break names, which may be
        // earlier): a rejected checkpoint up to there comes first.
        let reached = own_break.map_or(entry.seq, |own| own.seq);
        if let Some(rejected) = self.rejected_up_to(reached) {
            self.first_break = Some(rejected);
            return false;
        }
        match own_break {
            None => {
                self.expected_seq = entry.seq.saturating_add(1);
                self.prev_hash = entry.hash;
                self.head = Some(entry.head());
                true
            }
            Some(own) => {
                self.first_break = Some(own);
                false
            }
        }
    }

    /// The checks, cheapest and most specific first: position, tenant, link, content, pins.
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
        // Link before content: for swapped contents both fail, and "does not link" is the more
        // telling diagnosis; an edited field still links and fails only the content check.
        if entry.prev_hash != self.prev_hash {
            return Err(BreakKind::PrevHashMismatch);
        }
        if entry.compute_hash() != entry.hash {
            return Err(BreakKind::HashMismatch);
        }
        while let Some(&(checkpoint_seq, pinned)) = self.checkpoints.get(self.next_checkpoint)
            && checkpoint_seq == entry.seq
        {
            if pinned != entry.hash {
                return Err(BreakKind::CheckpointMismatch { checkpoint_seq });
            }
            self.next_checkpoint += 1;
        }
        Ok(())
    }

    /// Whether no break has been found so far.
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }

    /// The report. Also catches a truncated tail (a checkpoint beyond the last entry) and
    /// rejected checkpoints beyond the last entry.
    pub fn finish(self) -> VerificationReport {
        let mut first_break = self.first_break;
        if first_break.is_none()
            && let Some(&(checkpoint_seq, _)) = self.checkpoints.get(self.next_checkpoint)
        {
            // Only a verified entry moves `expected_seq`: one past the end of what verified, which
            // is the anchor of a resumed chain that got no entries (0 for a whole empty chain).
            let last_seq = self.expected_seq.saturating_sub(1);
            first_break = Some(Break {
                seq: last_seq.saturating_add(1),
                kind: BreakKind::TruncatedTail { checkpoint_seq, last_seq },
            });
        }
        if self.first_break.is_none()
            && let Some(rejected) = self.rejected_up_to(u64::MAX)
            && first_break.is_none_or(|truncated| rejected.seq <= truncated.seq)
        {
            first_break = Some(rejected);
        }
        VerificationReport {
            tenant: self.tenant,
            entries_checked: self.entries_checked,
            head: self.head,
            first_break,
            unsealed: 0,
            altered_unsealed: Vec::new(),
        }
    }
}

/// The checkpoints' (seq, hash) pins, sorted by seq; refuses another tenant's and seq 0.
fn pins(tenant: TenantId, checkpoints: &[Checkpoint]) -> Result<Vec<(u64, Digest)>, AuditError> {
    let mut pins = Vec::with_capacity(checkpoints.len());
    for checkpoint in checkpoints {
        if checkpoint.tenant != tenant {
            return Err(AuditError::CheckpointTenantMismatch);
        }
        if checkpoint.seq == 0 {
            return Err(AuditError::InvalidCheckpoint);
        }
        pins.push((checkpoint.seq, checkpoint.head_hash));
    }
    pins.sort_unstable();
    Ok(pins)
}

/// Verifies a whole chain held in memory (a convenience over [`ChainVerifier`]).
pub fn verify_chain<'a>(
    tenant: TenantId,
    entries: impl IntoIterator<Item = &'a ChainedEntry>,
    checkpoints: &[Checkpoint],
) -> Result<VerificationReport, AuditError> {
    let mut verifier = ChainVerifier::new(tenant, checkpoints)?;
    for entry in entries {
        if !verifier.push(entry) {
            break;
        }
    }
    Ok(verifier.finish())
}
