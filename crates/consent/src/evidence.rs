//! The evidence every change carries: which consent text (version and SHA-256), over which
//! channel, recorded by whom, and optionally a reference to the message or document that proves it.
//!
//! GDPR Art. 7(1): the controller must be able to *demonstrate* consent. The text's digest pins
//! exactly what the patient was shown, so a later edit of the text under the same version label is
//! detectable; the reference points at the proof without copying it (an inbound "STOP" message
//! stays in the messaging store, the consent history holds its id).

use crate::error::ConsentError;
use crate::purpose::Channel;
use kernel::Actor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Longest text version label, in bytes.
pub const MAX_TEXT_VERSION_BYTES: usize = 64;
/// Longest note reference, in bytes.
pub const MAX_NOTE_REF_BYTES: usize = 256;

/// The label of a version of a consent text, e.g. `2026-03`, `marketing-wa.v2`.
///
/// 1..=64 characters of `[A-Za-z0-9._:-]`: a label, not prose, so it sorts, compares and indexes
/// predictably and cannot carry personal data or markup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TextVersion(String);

impl TextVersion {
    pub fn parse(raw: &str) -> Result<Self, ConsentError> {
        let well_formed = !raw.is_empty()
            && raw.len() <= MAX_TEXT_VERSION_BYTES
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if well_formed {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ConsentError::InvalidField {
                field: "text_version",
                reason: "must be 1..=64 characters of [A-Za-z0-9._:-]",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TextVersion {
    type Error = ConsentError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<TextVersion> for String {
    fn from(version: TextVersion) -> Self {
        version.0
    }
}

impl fmt::Display for TextVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The SHA-256 of a consent text's exact UTF-8 bytes. Serialised as 64 lower-case hex digits.
///
/// No normalisation (Unicode, line endings, whitespace) is applied before hashing: the digest
/// vouches for the bytes the patient was shown, and any normalisation would make two different
/// texts share a digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TextDigest([u8; 32]);

impl TextDigest {
    /// The digest of `text`. Refuses an empty text: nobody consents to nothing.
    pub fn of_text(text: &str) -> Result<Self, ConsentError> {
        if text.is_empty() {
            return Err(ConsentError::InvalidField { field: "text", reason: "the consent text must not be empty" });
        }
        Ok(Self(Sha256::digest(text.as_bytes()).into()))
    }

    /// A digest given as 64 hex digits (either case; stored lower-case).
    pub fn from_hex(raw: &str) -> Result<Self, ConsentError> {
        let invalid =
            || ConsentError::InvalidField { field: "text_sha256", reason: "must be 64 hexadecimal digits (SHA-256)" };
        if raw.len() != 64 {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(raw, &mut bytes).map_err(|_| invalid())?;
        Ok(Self(bytes))
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl TryFrom<String> for TextDigest {
    type Error = ConsentError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::from_hex(&raw)
    }
}

impl From<TextDigest> for String {
    fn from(digest: TextDigest) -> Self {
        digest.to_hex()
    }
}

impl fmt::Debug for TextDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TextDigest({})", self.to_hex())
    }
}

impl fmt::Display for TextDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Which consent text a change refers to: its version label and the digest of its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConsentText {
    pub version: TextVersion,
    pub sha256: TextDigest,
}

impl ConsentText {
    pub fn new(version: TextVersion, sha256: TextDigest) -> Self {
        Self { version, sha256 }
    }

    /// The version label and the digest computed from the text itself.
    pub fn from_text(version: &str, text: &str) -> Result<Self, ConsentError> {
        Ok(Self { version: TextVersion::parse(version)?, sha256: TextDigest::of_text(text)? })
    }

    /// What an API request submits: the version, and the text, its digest, or both.
    ///
    /// With the text, the digest is computed from it; with only a digest, the digest is validated
    /// and kept; with both, they must agree ([`ConsentError::DigestMismatch`]), because a caller
    /// that sends one text and the hash of another has lost track of what the patient saw. With
    /// neither there is no evidence of the text, which is refused.
    pub fn from_submission(version: &str, text: Option<&str>, sha256_hex: Option<&str>) -> Result<Self, ConsentError> {
        let version = TextVersion::parse(version)?;
        let sha256 = match (text, sha256_hex) {
            (Some(text), None) => TextDigest::of_text(text)?,
            (None, Some(hex)) => TextDigest::from_hex(hex)?,
            (Some(text), Some(hex)) => {
                let computed = TextDigest::of_text(text)?;
                if computed != TextDigest::from_hex(hex)? {
                    return Err(ConsentError::DigestMismatch);
                }
                computed
            }
            (None, None) => {
                return Err(ConsentError::InvalidField {
                    field: "text_sha256",
                    reason: "either the consent text or its SHA-256 is required",
                });
            }
        };
        Ok(Self { version, sha256 })
    }
}

/// A reference to the item that evidences a change: the id of an inbound message (the WhatsApp
/// "STOP"), of a scanned paper form, of an email.
///
/// 1..=256 visible ASCII characters (`!`..=`~`, no spaces): an identifier, never a free-text note,
/// because history rows are kept for years and must not become a place where personal data is
/// typed in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NoteRef(String);

impl NoteRef {
    pub fn parse(raw: &str) -> Result<Self, ConsentError> {
        let well_formed =
            !raw.is_empty() && raw.len() <= MAX_NOTE_REF_BYTES && raw.bytes().all(|b| b.is_ascii_graphic());
        if well_formed {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ConsentError::InvalidField {
                field: "note_ref",
                reason: "must be 1..=256 visible ASCII characters without spaces (an id, not a note)",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NoteRef {
    type Error = ConsentError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<NoteRef> for String {
    fn from(note: NoteRef) -> Self {
        note.0
    }
}

impl fmt::Display for NoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The evidence of one change, as submitted. The time is not here: it is the `now` the change is
/// applied at, so a caller cannot backdate a consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The consent text the change refers to. For a withdrawal, the text being withdrawn
    /// ([`crate::ConsentRecord::text`] is the current one).
    pub text: ConsentText,
    pub channel: Channel,
    /// Who recorded the change: the patient through the portal, a receptionist entering a paper
    /// form, the webhook that received a "STOP".
    pub recorded_by: Actor,
    pub note_ref: Option<NoteRef>,
}

impl Evidence {
    pub fn new(text: ConsentText, channel: Channel, recorded_by: Actor) -> Self {
        Self { text, channel, recorded_by, note_ref: None }
    }

    pub fn with_note_ref(mut self, note_ref: NoteRef) -> Self {
        self.note_ref = Some(note_ref);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_text_is_sha256_of_its_bytes() {
        // FIPS 180-2 test vector for "abc".
        let digest = TextDigest::of_text("abc").unwrap();
        assert_eq!(digest.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        // No normalisation: a trailing newline is another text.
        assert_ne!(TextDigest::of_text("abc\n").unwrap(), digest);
        assert!(matches!(TextDigest::of_text(""), Err(ConsentError::InvalidField { field: "text", .. })));
    }

    #[test]
    fn hex_digests_are_validated_and_normalised_to_lower_case() {
        let digest = TextDigest::of_text("consent text").unwrap();
        let upper = digest.to_hex().to_uppercase();
        assert_eq!(TextDigest::from_hex(&upper).unwrap(), digest);
        assert_eq!(String::from(TextDigest::from_hex(&upper).unwrap()), digest.to_hex());
        for bad in ["", "abc", &digest.to_hex()[..63], &format!("{}0", digest.to_hex()), &"g".repeat(64)] {
            let error = TextDigest::from_hex(bad).unwrap_err();
            assert_eq!(error.field(), Some("text_sha256"), "{bad:?}");
        }
        // Multi-byte characters whose byte length is 64 must not slip through or panic.
        assert!(TextDigest::from_hex(&"é".repeat(32)).is_err());
    }

    #[test]
    fn submissions_need_the_text_or_its_digest_and_both_must_agree() {
        let text = "I agree to receive appointment reminders by SMS.";
        let from_text = ConsentText::from_submission("v1", Some(text), None).unwrap();
        assert_eq!(from_text.sha256, TextDigest::of_text(text).unwrap());
        let hex = from_text.sha256.to_hex();
        assert_eq!(ConsentText::from_submission("v1", None, Some(&hex)).unwrap(), from_text);
        assert_eq!(ConsentText::from_submission("v1", Some(text), Some(&hex)).unwrap(), from_text);
        assert_eq!(
            ConsentText::from_submission("v1", Some("another text"), Some(&hex)),
            Err(ConsentError::DigestMismatch)
        );
        assert!(matches!(
            ConsentText::from_submission("v1", None, None),
            Err(ConsentError::InvalidField { field: "text_sha256", .. })
        ));
        assert!(matches!(
            ConsentText::from_submission("v 1", Some(text), None),
            Err(ConsentError::InvalidField { field: "text_version", .. })
        ));
    }

    #[test]
    fn text_versions_are_bounded_labels() {
        for good in ["v1", "2026-03", "marketing-wa.v2", "a:b_c", &"x".repeat(64)] {
            assert_eq!(TextVersion::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "v 1", "v1\n", "<b>", "versión", &"x".repeat(65)] {
            assert!(TextVersion::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<TextVersion>("\"has space\"").is_err());
    }

    #[test]
    fn note_refs_are_ids_not_notes() {
        for good in ["wamid.HBgLMzQ2NzA1NTY3OBUCABIYFDNB", "SM0123abcd", "<a1b2@mail.example>", &"x".repeat(256)] {
            assert_eq!(NoteRef::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "called Mrs Smith", "tab\there", "ü", &"x".repeat(257)] {
            let error = NoteRef::parse(bad).unwrap_err();
            assert_eq!(error.field(), Some("note_ref"), "{bad:?}");
        }
    }

    #[test]
    fn evidence_round_trips_through_json() {
        let evidence = Evidence::new(
            ConsentText::from_text("v3", "text").unwrap(),
            Channel::Whatsapp,
            Actor::Webhook { provider: "whatsapp".into() },
        )
        .with_note_ref(NoteRef::parse("wamid.1").unwrap());
        let json = serde_json::to_value(&evidence).unwrap();
        assert_eq!(json["text"]["sha256"], evidence.text.sha256.to_hex());
        assert_eq!(json["channel"], "whatsapp");
        assert_eq!(serde_json::from_value::<Evidence>(json).unwrap(), evidence);
    }
}
