//! The tamper-evident audit trail of Praxis: who did what to which record, when, with what
//! outcome, in a per-practice hash chain that exposes edited, deleted, reordered and truncated
//! entries.
//!
//! Pure: no I/O, no clock reads (a [`kernel::Clock`] is passed in), no framework types. The
//! Postgres adapter implements [`AuditLog`] around the pure core:
//!
//! * [`to_record`] validates an [`AuditEvent`] and computes its [`content_digest`]: the adapter
//!   records it, unsealed, in the transaction of the change it records, without any lock;
//! * [`seal`] (built on [`next_entry`]) links recorded entries into the practice's chain after
//!   its [`ChainHead`], a batch at a time, behind a lock only sealers take (see [`trail`]);
//! * [`ChainVerifier`] checks a stored chain streamed in seq order, against [`Checkpoint`]s;
//! * [`FailedLoginPolicy`] decides when failed logins become one `security.suspicious_activity`
//!   entry.
//!
//! # Threat model, in one paragraph
//!
//! The app role may only INSERT and SELECT audit rows, and set an unsealed entry's seal once; a
//! trigger refuses every other UPDATE, and every DELETE but the retention purge's;
//! the chain is the second line, for whoever gets past that (a superuser, a restored backup, a
//! disk edit). Each entry hashes its predecessor's hash, so editing, deleting or reordering an
//! entry breaks verification at that entry. SHA-256 has no key, so someone who can write the
//! table can also rewrite a whole suffix with fresh hashes or drop the newest entries; only
//! [`Checkpoint`]s kept out of their reach (signed through [`CheckpointSigner`], exported)
//! detect that. See [`verify`] for the table of tampering vs. report.
//!
//! # Canonical entry encoding (`praxis.audit.entry.v1`)
//!
//! `hash = SHA-256(prev_hash || encoding)`, where `prev_hash` is the 32 raw bytes of the previous
//! entry's hash (32 zero bytes for seq 1) and `encoding` is the concatenation of the fields below,
//! **each written as an 8-byte big-endian unsigned length followed by that many bytes**:
//!
//! | # | field            | bytes                                                                      |
//! |---|------------------|----------------------------------------------------------------------------|
//! | 1 | tag              | ASCII `praxis.audit.entry.v1`                                              |
//! | 2 | seq              | 8 bytes, big-endian u64                                                    |
//! | 3 | tenant           | 16 bytes, the UUID's raw bytes                                             |
//! | 4 | actor kind       | ASCII `user`, `api_key`, `system` or `webhook`                             |
//! | 5…| actor fields     | `user`: tenant (16 B), user id (16 B), role (`admin`/`therapist`/`receptionist`/`patient`); `api_key`: tenant (16 B), key id (UTF-8); `system`: component (UTF-8); `webhook`: provider (UTF-8) |
//! | … | action           | ASCII dotted name, e.g. `patient.read`                                     |
//! | … | resource type    | ASCII, e.g. `patient`                                                      |
//! | … | resource id      | optional (below)                                                           |
//! | … | outcome          | ASCII `success`, `failure` or `denied`                                     |
//! | … | request id       | optional (below)                                                           |
//! | … | occurred at      | ASCII `YYYY-MM-DDTHH:MM:SS.ffffffZ`: RFC 3339, UTC, always exactly six fractional digits (microseconds, what Postgres `timestamptz` keeps; finer digits are truncated) |
//! | … | detail           | canonical JSON, UTF-8 (below)                                              |
//!
//! The actor kind fixes how many actor fields follow, so the layout is unambiguous.
//!
//! **Optional** fields: the length-prefixed content is the single byte `0x00` when absent, or
//! `0x01` followed by the UTF-8 value when present (so "absent" and "empty" differ).
//!
//! **Canonical JSON** of the detail: no insignificant whitespace; object members sorted by the
//! raw UTF-8 bytes of their keys (ascending); arrays in order; `null`, `true`, `false`;
//! integers in plain decimal (`-` for negatives, no `+`, no exponent, no leading zeros; floats
//! are refused at validation); strings in double quotes with `"` → `\"`, `\` → `\\`, U+0008 →
//! `\b`, U+000C → `\f`, U+000A → `\n`, U+000D → `\r`, U+0009 → `\t`, any other code point below
//! U+0020 → `\u00xx` (lower-case hex), and every other character (including `/`, U+007F and
//! non-ASCII) as its raw UTF-8 bytes. Close to RFC 8785 (JCS), but keys sort by UTF-8 bytes,
//! not UTF-16 code units. Hashing this form, not the stored text, means Postgres `jsonb`'s own
//! key order and spacing never matter.
//!
//! Changing anything above changes every hash: bump the tag instead, and keep verifying old
//! entries with the old rules. The golden test in `tests/it/golden.rs` pins the format.
//!
//! Checkpoint signatures cover [`Checkpoint::signing_bytes`] (same length-prefixing, tag
//! `praxis.audit.checkpoint.v1`).
//!
//! # What the adapter must keep exactly
//!
//! Every hashed field round-trips through storage bit for bit: store `seq` as `BIGINT`
//! (`seq <= MAX_SEQ`), hashes as `BYTEA`, `occurred_at` as `timestamptz` (the event is already
//! truncated to microseconds by [`next_entry`]), the detail as `jsonb` or text (either works:
//! the canonical form is recomputed), and the actor's kind and fields in their own columns.

pub mod action;
mod breaks;
pub mod chain;
pub mod checkpoint;
pub mod detail;
pub mod error;
pub mod event;
pub mod memory;
pub mod port;
pub mod security;
pub mod trail;
pub mod verify;

#[cfg(test)]
mod testutil;

pub use action::{Action, Outcome};
pub use chain::{
    CONTENT_ENCODING_TAG, ChainHead, ChainedEntry, Digest, ENTRY_ENCODING_TAG, GENESIS_HASH, MAX_SEQ,
    canonical_encoding, canonical_timestamp, content_digest, entry_hash, next_entry,
};
pub use checkpoint::{CHECKPOINT_ENCODING_TAG, Checkpoint, CheckpointSigner, VettedCheckpoints, vet_checkpoints};
pub use detail::{canonical_json, is_pii_key, validate_detail};
pub use error::{AuditError, BoxError};
pub use event::{AuditEvent, SignatureFailure};
pub use memory::MemoryAuditLog;
pub use port::{AuditFilter, AuditLog, AuditPage, Page};
pub use security::{FailedLoginPolicy, SuspicionSubject};
pub use trail::{ChainLink, EntryToRecord, PendingEntry, RecordedEntry, SealPlan, seal, to_record};
pub use verify::{Break, BreakKind, ChainVerifier, VerificationReport, verify_chain};
