//! How a chain is found broken: the findings both chain verification (`verify`) and checkpoint
//! vetting (`checkpoint`) report. Their own module so those two depend on it, not on each other.

use serde::{Deserialize, Serialize};

/// How a chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BreakKind {
    /// The entry's content does not hash to its stored hash: a field (or the hash) was edited.
    HashMismatch,
    /// The entry does not link to the previous entry's hash: entries were reordered or replaced,
    /// or the previous entry was edited and re-hashed.
    PrevHashMismatch,
    /// The next entry has a higher seq than expected: entries were deleted (or rows reordered).
    SequenceGap { expected: u64, found: u64 },
    /// The next entry has a lower seq than expected: duplicated or reordered rows.
    OutOfOrder { expected: u64, found: u64 },
    /// The entry belongs to another tenant: a row was moved between chains (or the adapter's
    /// tenant filter is broken).
    ForeignTenant,
    /// A checkpoint pins a different hash at this seq: the chain was rewritten from here or
    /// earlier and re-hashed.
    CheckpointMismatch { checkpoint_seq: u64 },
    /// The chain ends (at `last_seq`, 0 when empty) before a checkpoint's seq: the newest entries
    /// were deleted.
    TruncatedTail { checkpoint_seq: u64, last_seq: u64 },
    /// A stored checkpoint of this seq carries a signature the signer rejects: forged by someone
    /// who could write the checkpoint table but not use the practice's signing key (or damaged).
    CheckpointSignatureInvalid { checkpoint_seq: u64 },
    /// A stored checkpoint of this seq carries no signature although it was taken after the
    /// practice's checkpoints began to be signed: written by someone without the signing key.
    CheckpointUnsigned { checkpoint_seq: u64 },
}

/// The first place a chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Break {
    /// The first affected sequence number. For a gap, the first missing one; for a truncated
    /// tail, the first one after the end of the chain; for a rejected checkpoint, the seq it
    /// pins.
    pub seq: u64,
    pub kind: BreakKind,
}
