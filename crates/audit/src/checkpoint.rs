//! Checkpoints: a tenant's chain head, recorded (and ideally signed and exported) from time to
//! time.
//!
//! Why: SHA-256 needs no key. Someone with write access to the database (a stolen superuser
//! credential, a malicious operator, a restored-and-edited backup) can rewrite an entry and
//! recompute every hash after it, or simply delete the newest entries; the chain alone then still
//! verifies. A checkpoint pins "at seq N the head hash was H" somewhere that attacker cannot
//! reach: signed with a key held in the KMS (so it cannot be forged) and/or copied out of the
//! database (object storage with retention lock, the practice's own records). Verification against
//! checkpoints turns those two silent attacks into [`crate::BreakKind::CheckpointMismatch`] and
//! [`crate::BreakKind::TruncatedTail`].

use crate::chain::{ChainHead, Digest, Encoder, canonical_timestamp};
use crate::error::AuditError;
use crate::event::truncate_to_micros;
use async_trait::async_trait;
use kernel::{Clock, TenantId};
use time::OffsetDateTime;

/// First field of the bytes a checkpoint signature covers.
pub const CHECKPOINT_ENCODING_TAG: &str = "praxis.audit.checkpoint.v1";

/// "At `seq`, tenant `tenant`'s chain head hash was `head_hash`."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub tenant: TenantId,
    /// Sequence number of the entry the checkpoint pins; at least 1.
    pub seq: u64,
    /// That entry's hash.
    pub head_hash: Digest,
    /// When the checkpoint was taken (UTC, microseconds).
    pub created_at: OffsetDateTime,
    /// Signature over [`Checkpoint::signing_bytes`] by a [`CheckpointSigner`], if signed.
    pub signature: Option<Vec<u8>>,
}

impl Checkpoint {
    /// An unsigned checkpoint of `head`. Fails for the empty chain's head (nothing to pin).
    pub fn new(tenant: TenantId, head: ChainHead, clock: &dyn Clock) -> Result<Self, AuditError> {
        if head.seq == 0 {
            return Err(AuditError::InvalidCheckpoint);
        }
        Ok(Self {
            tenant,
            seq: head.seq,
            head_hash: head.hash,
            created_at: truncate_to_micros(clock.now())?,
            signature: None,
        })
    }

    /// The bytes a signature covers: length-prefixed fields (8-byte big-endian length, then the
    /// bytes) in this order: the tag `praxis.audit.checkpoint.v1`, the tenant UUID (16 bytes),
    /// `seq` (8 bytes big-endian), `head_hash` (32 bytes), `created_at` as the canonical
    /// timestamp (`YYYY-MM-DDTHH:MM:SS.ffffffZ`). The tenant is included so a checkpoint of one
    /// practice cannot be replayed as another's.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut enc = Encoder(Vec::with_capacity(128));
        enc.field(CHECKPOINT_ENCODING_TAG.as_bytes());
        enc.field(self.tenant.as_uuid().as_bytes());
        enc.field(&self.seq.to_be_bytes());
        enc.field(&self.head_hash);
        enc.field(canonical_timestamp(self.created_at).as_bytes());
        enc.0
    }

    /// This checkpoint with a signature from `signer`.
    pub async fn sign(mut self, signer: &dyn CheckpointSigner) -> Result<Self, AuditError> {
        self.signature = Some(signer.sign(&self.signing_bytes()).await?);
        Ok(self)
    }

    /// Whether the checkpoint carries a signature that `signer` accepts. An unsigned checkpoint
    /// is `false`: callers that require signatures must not trust it.
    pub async fn has_valid_signature(&self, signer: &dyn CheckpointSigner) -> Result<bool, AuditError> {
        match &self.signature {
            None => Ok(false),
            Some(signature) => signer.verify(&self.signing_bytes(), signature).await,
        }
    }
}

/// Port: signs and verifies checkpoint bytes with a key the database cannot reach (KMS
/// asymmetric key or HMAC key). Adapters live outside this crate.
#[async_trait]
pub trait CheckpointSigner: Send + Sync + std::fmt::Debug {
    /// A signature over `message`.
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuditError>;

    /// Whether `signature` is a valid signature over `message`. A wrong signature is `Ok(false)`;
    /// `Err` is kept for the signer being unavailable. Implementations compare in constant time.
    async fn verify(&self, message: &[u8], signature: &[u8]) -> Result<bool, AuditError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::block_on;
    use kernel::FixedClock;
    use sha2::{Digest as _, Sha256};
    use time::macros::datetime;

    /// Not a MAC (no key): enough to test the plumbing of the port.
    #[derive(Debug)]
    struct FakeSigner;

    #[async_trait]
    impl CheckpointSigner for FakeSigner {
        async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuditError> {
            Ok(Sha256::digest(message).to_vec())
        }
        async fn verify(&self, message: &[u8], signature: &[u8]) -> Result<bool, AuditError> {
            Ok(Sha256::digest(message)[..] == *signature)
        }
    }

    fn checkpoint() -> Checkpoint {
        let clock = FixedClock::at(datetime!(2026-03-01 12:00:00.1234567 UTC));
        Checkpoint::new(TenantId::new(), ChainHead { seq: 42, hash: [7; 32] }, &clock).unwrap()
    }

    #[test]
    fn empty_chain_has_no_checkpoint() {
        let clock = FixedClock::at(datetime!(2026-03-01 12:00 UTC));
        assert!(matches!(
            Checkpoint::new(TenantId::new(), ChainHead::GENESIS, &clock),
            Err(AuditError::InvalidCheckpoint)
        ));
    }

    #[test]
    fn signing_bytes_cover_every_field() {
        let base = checkpoint();
        assert_eq!(base.created_at, datetime!(2026-03-01 12:00:00.123456 UTC));
        let reference = base.signing_bytes();
        let mut other = base.clone();
        other.tenant = TenantId::new();
        assert_ne!(other.signing_bytes(), reference);
        let mut other = base.clone();
        other.seq += 1;
        assert_ne!(other.signing_bytes(), reference);
        let mut other = base.clone();
        other.head_hash[31] ^= 1;
        assert_ne!(other.signing_bytes(), reference);
        let mut other = base.clone();
        other.created_at += time::Duration::microseconds(1);
        assert_ne!(other.signing_bytes(), reference);
        // The signature itself is not part of what it signs.
        let mut other = base;
        other.signature = Some(vec![1]);
        assert_eq!(other.signing_bytes(), reference);
    }

    #[test]
    fn signatures_round_trip_through_the_port() {
        let signed = block_on(checkpoint().sign(&FakeSigner)).unwrap();
        assert!(block_on(signed.has_valid_signature(&FakeSigner)).unwrap());
        let mut forged = signed.clone();
        forged.seq -= 1;
        assert!(!block_on(forged.has_valid_signature(&FakeSigner)).unwrap());
        assert!(!block_on(checkpoint().has_valid_signature(&FakeSigner)).unwrap());
    }
}
