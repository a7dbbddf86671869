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

use crate::breaks::{Break, BreakKind};
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

    /// This checkpoint with a signature from `signer` (with the key of the checkpoint's tenant).
    pub async fn sign(mut self, signer: &dyn CheckpointSigner) -> Result<Self, AuditError> {
        self.signature = Some(signer.sign(self.tenant, &self.signing_bytes()).await?);
        Ok(self)
    }

    /// Whether the checkpoint carries a signature that `signer` accepts. An unsigned checkpoint
    /// is `false`: callers that require signatures must not trust it.
    pub async fn has_valid_signature(&self, signer: &dyn CheckpointSigner) -> Result<bool, AuditError> {
        match &self.signature {
            None => Ok(false),
            Some(signature) => signer.verify(self.tenant, &self.signing_bytes(), signature).await,
        }
    }
}

/// Port: signs and verifies checkpoint bytes with a key the database cannot reach (a KMS-held
/// asymmetric key, or an HMAC key kept wrapped by the KMS). Adapters live outside this crate.
///
/// Every call names the practice, so an adapter can keep one key per practice: then a
/// practice's checkpoints cannot be signed with another's key even by a bug, and a key can be
/// shredded with its practice. (The signed bytes name the tenant too, see
/// [`Checkpoint::signing_bytes`].)
#[async_trait]
pub trait CheckpointSigner: Send + Sync + std::fmt::Debug {
    /// Makes sure `tenant`'s checkpoints can be signed without further set-up, e.g. by creating
    /// and storing the practice's signing key now. Setting up may itself write (a key row, an
    /// audit entry), so a caller that signs while it holds the practice's chain lock (the
    /// retention purge) calls this first, outside the lock. Default: nothing to set up.
    async fn prepare(&self, tenant: TenantId) -> Result<(), AuditError> {
        let _ = tenant;
        Ok(())
    }

    /// When `tenant`'s checkpoints began to be signed (e.g. when its signing key was created),
    /// if they have: every checkpoint taken after it must carry a valid signature. `None` when
    /// the practice has no signing key yet, or when the adapter cannot tell (the default), in
    /// which case [`vet_checkpoints`] goes by the oldest validly signed checkpoint alone.
    async fn signing_since(&self, tenant: TenantId) -> Result<Option<OffsetDateTime>, AuditError> {
        let _ = tenant;
        Ok(None)
    }

    /// A signature over `message` with `tenant`'s key.
    async fn sign(&self, tenant: TenantId, message: &[u8]) -> Result<Vec<u8>, AuditError>;

    /// Whether `signature` is a valid signature of `tenant`'s over `message`. A wrong signature,
    /// or one for which the practice has no key, is `Ok(false)`; `Err` is kept for the signer
    /// being unavailable. Implementations compare in constant time.
    async fn verify(&self, tenant: TenantId, message: &[u8], signature: &[u8]) -> Result<bool, AuditError>;
}

/// What [`vet_checkpoints`] made of a practice's stored checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VettedCheckpoints {
    /// The checkpoints verification may rely on: every one without a signer; with a signer,
    /// those whose signature it accepts.
    pub trusted: Vec<Checkpoint>,
    /// Checkpoints that betray tampering, each as the break to report at the seq it pins
    /// (sorted by seq): a signature the signer rejects
    /// ([`BreakKind::CheckpointSignatureInvalid`]), or no signature on a checkpoint taken after
    /// the practice's checkpoints began to be signed ([`BreakKind::CheckpointUnsigned`]). Hand
    /// them to [`crate::ChainVerifier::with_rejected_checkpoints`].
    pub rejected: Vec<Break>,
    /// Unsigned checkpoints from before signing began (an older release wrote them): neither
    /// relied on, since anyone who can write the table could have written them, nor reported.
    pub ignored: Vec<Checkpoint>,
}

/// Sorts a practice's stored checkpoints into trusted, rejected and ignored (see
/// [`VettedCheckpoints`]).
///
/// Without a signer every checkpoint is trusted: the deployment has no key to check with.
///
/// With one, signing began at the earlier of [`CheckpointSigner::signing_since`] and the
/// `created_at` of the oldest checkpoint whose signature verifies; an unsigned checkpoint created
/// after that is rejected, an older one ignored. An attacker who writes an unsigned checkpoint
/// and back-dates it only gets it ignored, which is harmless: it is never relied on. A signed
/// checkpoint the practice has no key for (the key row deleted, or a signature made up) is
/// rejected too.
///
/// `Err` only when the signer itself fails (the KMS is unreachable): verification must then
/// fail rather than report a chain as intact or broken on a guess.
pub async fn vet_checkpoints(
    tenant: TenantId,
    checkpoints: Vec<Checkpoint>,
    signer: Option<&dyn CheckpointSigner>,
) -> Result<VettedCheckpoints, AuditError> {
    let Some(signer) = signer else {
        return Ok(VettedCheckpoints { trusted: checkpoints, ..VettedCheckpoints::default() });
    };
    let mut vetted = VettedCheckpoints::default();
    let mut unsigned = Vec::new();
    for checkpoint in checkpoints {
        if checkpoint.signature.is_none() {
            unsigned.push(checkpoint);
        } else if checkpoint.has_valid_signature(signer).await? {
            vetted.trusted.push(checkpoint);
        } else {
            let checkpoint_seq = checkpoint.seq;
            vetted
                .rejected
                .push(Break { seq: checkpoint_seq, kind: BreakKind::CheckpointSignatureInvalid { checkpoint_seq } });
        }
    }
    let first_signed = vetted.trusted.iter().map(|c| c.created_at).min();
    let signing_began = match (signer.signing_since(tenant).await?, first_signed) {
        (Some(since), Some(first)) => Some(since.min(first)),
        (since, first) => since.or(first),
    };
    for checkpoint in unsigned {
        if signing_began.is_some_and(|began| checkpoint.created_at > began) {
            let checkpoint_seq = checkpoint.seq;
            vetted.rejected.push(Break { seq: checkpoint_seq, kind: BreakKind::CheckpointUnsigned { checkpoint_seq } });
        } else {
            vetted.ignored.push(checkpoint);
        }
    }
    vetted.rejected.sort_by_key(|rejected| rejected.seq);
    Ok(vetted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::block_on;
    use kernel::FixedClock;
    use sha2::{Digest as _, Sha256};
    use time::macros::datetime;

    /// Not a MAC (a hash of the tenant and the message, no key): enough to test the plumbing of
    /// the port.
    #[derive(Debug)]
    struct FakeSigner;

    fn fake_signature(tenant: TenantId, message: &[u8]) -> Vec<u8> {
        Sha256::new().chain_update(tenant.as_uuid().as_bytes()).chain_update(message).finalize().to_vec()
    }

    #[async_trait]
    impl CheckpointSigner for FakeSigner {
        async fn sign(&self, tenant: TenantId, message: &[u8]) -> Result<Vec<u8>, AuditError> {
            Ok(fake_signature(tenant, message))
        }
        async fn verify(&self, tenant: TenantId, message: &[u8], signature: &[u8]) -> Result<bool, AuditError> {
            Ok(fake_signature(tenant, message) == signature)
        }
    }

    /// A signer whose KMS is down.
    #[derive(Debug)]
    struct Unavailable;

    #[async_trait]
    impl CheckpointSigner for Unavailable {
        async fn sign(&self, _: TenantId, _: &[u8]) -> Result<Vec<u8>, AuditError> {
            Err(AuditError::Signer("kms down".into()))
        }
        async fn verify(&self, _: TenantId, _: &[u8], _: &[u8]) -> Result<bool, AuditError> {
            Err(AuditError::Signer("kms down".into()))
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
        // The signer is asked with the checkpoint's own tenant.
        let mut moved = signed;
        moved.tenant = TenantId::new();
        assert!(!block_on(moved.has_valid_signature(&FakeSigner)).unwrap());
    }

    fn at(tenant: TenantId, seq: u64, minute: u8) -> Checkpoint {
        let clock = FixedClock::at(datetime!(2026-03-01 12:00 UTC) + time::Duration::minutes(minute.into()));
        Checkpoint::new(tenant, ChainHead { seq, hash: [seq as u8; 32] }, &clock).unwrap()
    }

    #[test]
    fn vetting_trusts_valid_signatures_and_rejects_forgeries() {
        let tenant = TenantId::new();
        let legacy = at(tenant, 3, 0);
        let genuine = block_on(at(tenant, 5, 10).sign(&FakeSigner)).unwrap();
        let mut forged = block_on(at(tenant, 9, 20).sign(&FakeSigner)).unwrap();
        forged.head_hash[0] ^= 1;
        let late_unsigned = at(tenant, 7, 30);
        let vetted = block_on(vet_checkpoints(
            tenant,
            vec![forged, late_unsigned, genuine.clone(), legacy.clone()],
            Some(&FakeSigner),
        ))
        .unwrap();
        assert_eq!(vetted.trusted, vec![genuine]);
        assert_eq!(vetted.ignored, vec![legacy]);
        // Sorted by seq, whatever order they were stored in.
        assert_eq!(
            vetted.rejected,
            vec![
                Break { seq: 7, kind: BreakKind::CheckpointUnsigned { checkpoint_seq: 7 } },
                Break { seq: 9, kind: BreakKind::CheckpointSignatureInvalid { checkpoint_seq: 9 } },
            ]
        );
    }

    #[test]
    fn before_any_valid_signature_unsigned_checkpoints_are_only_ignored() {
        let tenant = TenantId::new();
        let unsigned = vec![at(tenant, 2, 0), at(tenant, 4, 5)];
        let vetted = block_on(vet_checkpoints(tenant, unsigned.clone(), Some(&FakeSigner))).unwrap();
        assert_eq!((vetted.trusted.len(), vetted.rejected.len(), vetted.ignored.len()), (0, 0, 2));
        // Without a signer there is nothing to check with: everything is trusted.
        let vetted = block_on(vet_checkpoints(tenant, unsigned.clone(), None)).unwrap();
        assert_eq!(vetted.trusted, unsigned);
        // A signer that cannot answer fails the vetting instead of guessing.
        let signed = block_on(at(tenant, 6, 10).sign(&FakeSigner)).unwrap();
        assert!(matches!(
            block_on(vet_checkpoints(tenant, vec![signed], Some(&Unavailable))),
            Err(AuditError::Signer(_))
        ));
    }

    /// Signing began at minute 3 by the signer's own record (its key's creation), although no
    /// signed checkpoint is left: the genuine ones may have been deleted.
    #[derive(Debug)]
    struct KeyedSince;

    #[async_trait]
    impl CheckpointSigner for KeyedSince {
        async fn signing_since(&self, _: TenantId) -> Result<Option<OffsetDateTime>, AuditError> {
            Ok(Some(datetime!(2026-03-01 12:03 UTC)))
        }
        async fn sign(&self, tenant: TenantId, message: &[u8]) -> Result<Vec<u8>, AuditError> {
            FakeSigner.sign(tenant, message).await
        }
        async fn verify(&self, tenant: TenantId, message: &[u8], signature: &[u8]) -> Result<bool, AuditError> {
            FakeSigner.verify(tenant, message, signature).await
        }
    }

    #[test]
    fn the_signers_own_start_makes_later_unsigned_checkpoints_breaks() {
        let tenant = TenantId::new();
        let vetted =
            block_on(vet_checkpoints(tenant, vec![at(tenant, 2, 0), at(tenant, 4, 5)], Some(&KeyedSince))).unwrap();
        assert_eq!(vetted.ignored, vec![at(tenant, 2, 0)]);
        assert_eq!(vetted.rejected, vec![Break { seq: 4, kind: BreakKind::CheckpointUnsigned { checkpoint_seq: 4 } }]);
    }
}
