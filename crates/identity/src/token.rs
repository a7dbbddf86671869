//! Opaque bearer tokens: session tokens (in the session cookie) and API keys.
//!
//! Format: `prx_s_` (session) or `prx_k_` (API key), then base64url without padding of 48 bytes:
//! the practice's tenant id (16 bytes, the UUID's bytes) followed by 32 bytes from the system
//! CSPRNG. 6 + 64 = 70 ASCII characters.
//!
//! Why this shape:
//! - The prefix makes a leaked token recognisable to secret scanners (GitHub push protection,
//!   gitleaks) and to humans, and a session token can never be confused with an API key.
//! - The tenant is readable without a database: every query runs under Postgres RLS for one
//!   tenant, so the server must know the tenant *before* it looks the token up. It sets the RLS
//!   context from the token, then looks up the hash under that context. Editing the tenant part
//!   changes the token's hash, so the lookup finds nothing; a token can't be moved to another
//!   practice.
//! - 256 random bits: guessing is hopeless, so the server stores only `SHA-256(token)`. A fast
//!   hash is enough here (unlike passwords, there is no small space to brute-force), and the
//!   lookup must be fast on every request. A database leak yields hashes, not usable tokens.
//!
//! Parsing is strict: exact prefix, exact length, canonical base64url, non-nil tenant. It never
//! panics on any input (property-tested).

use crate::error::IdentityError;
pub use crate::error::TokenError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kernel::TenantId;
use ring::rand::SecureRandom;
use std::fmt;
use std::marker::PhantomData;
use uuid::Uuid;
use zeroize::Zeroizing;

const TENANT_LEN: usize = 16;
/// Random bytes per token: 256 bits.
pub const SECRET_LEN: usize = 32;
const PAYLOAD_LEN: usize = TENANT_LEN + SECRET_LEN;
/// base64url characters for the 48-byte payload (48 * 8 / 6; no padding, no spare bits).
const ENCODED_LEN: usize = PAYLOAD_LEN * 4 / 3;

mod sealed {
    pub trait Sealed {}
}

/// The kind of an opaque token: its prefix. Sealed: only the kinds below exist.
pub trait TokenKind: sealed::Sealed {
    const PREFIX: &'static str;
    /// Type name for `Debug`.
    const NAME: &'static str;
}

/// Marker for session tokens.
#[derive(Debug, Clone, Copy)]
pub enum Session {}
/// Marker for API keys.
#[derive(Debug, Clone, Copy)]
pub enum ApiKey {}

impl sealed::Sealed for Session {}
impl sealed::Sealed for ApiKey {}

impl TokenKind for Session {
    const PREFIX: &'static str = "prx_s_";
    const NAME: &'static str = "SessionToken";
}

impl TokenKind for ApiKey {
    const PREFIX: &'static str = "prx_k_";
    const NAME: &'static str = "ApiKeyToken";
}

/// The session token stored in the `__Host-` session cookie.
pub type SessionToken = OpaqueToken<Session>;
/// An API key, sent as `Authorization: Bearer prx_k_...`.
pub type ApiKeyToken = OpaqueToken<ApiKey>;

/// A token with its secret. The full string lives in a `Zeroizing` buffer (wiped on drop) and
/// `Debug` masks it; reading it takes an explicit [`OpaqueToken::expose`].
pub struct OpaqueToken<K: TokenKind> {
    tenant: TenantId,
    value: Zeroizing<String>,
    kind: PhantomData<K>,
}

impl<K: TokenKind> OpaqueToken<K> {
    /// Total length of a token string.
    pub const LEN: usize = K::PREFIX.len() + ENCODED_LEN;

    /// A fresh token for `tenant` (pass `&ring::rand::SystemRandom::new()`).
    pub fn generate(tenant: TenantId, rng: &dyn SecureRandom) -> Result<Self, IdentityError> {
        let mut payload = Zeroizing::new([0u8; PAYLOAD_LEN]);
        payload[..TENANT_LEN].copy_from_slice(tenant.as_uuid().as_bytes());
        rng.fill(&mut payload[TENANT_LEN..]).map_err(|_| IdentityError::Random)?;
        let mut value = Zeroizing::new(String::with_capacity(Self::LEN));
        value.push_str(K::PREFIX);
        URL_SAFE_NO_PAD.encode_string(payload.as_ref(), &mut value);
        Ok(Self { tenant, value, kind: PhantomData })
    }

    /// Parses a token as presented by a client. Strict and total: any input gives `Ok` or `Err`.
    pub fn parse(presented: &str) -> Result<Self, TokenError> {
        let encoded = presented.strip_prefix(K::PREFIX).ok_or(TokenError::WrongPrefix)?;
        if encoded.len() != ENCODED_LEN {
            return Err(TokenError::WrongLength);
        }
        let mut payload = Zeroizing::new([0u8; PAYLOAD_LEN]);
        match URL_SAFE_NO_PAD.decode_slice(encoded, payload.as_mut()) {
            Ok(PAYLOAD_LEN) => {}
            _ => return Err(TokenError::NotBase64Url),
        }
        let mut tenant_bytes = [0u8; TENANT_LEN];
        tenant_bytes.copy_from_slice(&payload[..TENANT_LEN]);
        let tenant = Uuid::from_bytes(tenant_bytes);
        if tenant.is_nil() {
            return Err(TokenError::NilTenant);
        }
        Ok(Self { tenant: TenantId::from_uuid(tenant), value: Zeroizing::new(presented.to_owned()), kind: PhantomData })
    }

    /// The practice this token belongs to: set the RLS tenant context to this, then look up
    /// [`Self::hash`].
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The stored form: `SHA-256` of the full token string.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.value.as_str())
    }

    /// The token string, to put in a `Set-Cookie` header or an API response. Keep the borrow
    /// short; never log it.
    pub fn expose(&self) -> &str {
        self.value.as_str()
    }
}

impl OpaqueToken<ApiKey> {
    /// The key's public id, for audit entries and the key list in the UI.
    pub fn key_id(&self) -> ApiKeyId {
        self.hash().key_id()
    }

    /// Consumes the key and hands out its string, for the one response that shows a new key to
    /// its creator. Store [`Self::hash`] and [`Self::key_id`] first; the server never sees the
    /// key again.
    pub fn display_once(self) -> Zeroizing<String> {
        self.value
    }
}

impl<K: TokenKind> fmt::Debug for OpaqueToken<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(K::NAME).field("tenant", &self.tenant).field("secret", &kernel::secret::MASK).finish()
    }
}

/// `SHA-256(token)`: what the database stores and indexes instead of the token.
///
/// Equality is constant-time. The lookup itself is an index match on the hash, which is fine:
/// timing can at most reveal something about a hash, and hashes of 256-bit random tokens cannot
/// be steered by an attacker toward a stored one. The constant-time comparison covers the code
/// paths that compare in memory (a cached session, a re-check after the lookup).
#[derive(Clone, Copy, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Hashes a full token string.
    pub fn of(token: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }

    /// Rebuilds a hash read from the database.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public id of the API key with this hash: the first 6 bytes, in hex (12 characters).
    /// Derived from the hash, not the secret, so it reveals nothing usable; 48 bits keep ids
    /// distinct among any practice's keys.
    pub fn key_id(&self) -> ApiKeyId {
        ApiKeyId(hex(&self.0[..6]))
    }
}

impl PartialEq for TokenHash {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

/// Hashes the bytes, consistent with the byte equality `PartialEq` computes (in constant time).
impl std::hash::Hash for TokenHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for TokenHash {
    /// Only the key-id prefix: enough to correlate, not enough to look anything up by.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", hex(&self.0[..6]))
    }
}

/// The public identifier of an API key (12 lowercase hex characters). Safe to log and to record
/// in `kernel::Actor::ApiKey { key_id }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiKeyId(String);

impl ApiKeyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ApiKeyId> for String {
    fn from(id: ApiKeyId) -> Self {
        id.0
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Compares two byte strings in time that depends only on their lengths, not on where they
/// differ, so a timing attacker cannot find a secret byte by byte.
///
/// Lengths are not secret (every token of a kind has the same length), so unequal lengths return
/// early. The loop ORs together the XOR of every byte pair without branching; `black_box` keeps
/// the optimiser from turning it back into an early-exit comparison. (`ring::constant_time` is
/// deprecated, and the `subtle` crate would be one more dependency for these few lines.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ring::rand::SystemRandom;

    fn tenant() -> TenantId {
        TenantId::new()
    }

    #[test]
    fn generated_tokens_have_the_documented_shape() {
        let rng = SystemRandom::new();
        let t = tenant();
        let session = SessionToken::generate(t, &rng).unwrap();
        assert!(session.expose().starts_with("prx_s_"));
        assert_eq!(session.expose().len(), 70);
        assert_eq!(SessionToken::LEN, 70);
        assert!(session.expose()[6..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let key = ApiKeyToken::generate(t, &rng).unwrap();
        assert!(key.expose().starts_with("prx_k_"));
        assert_eq!(key.expose().len(), ApiKeyToken::LEN);
    }

    #[test]
    fn round_trip_keeps_tenant_and_hash() {
        let rng = SystemRandom::new();
        let t = tenant();
        let token = SessionToken::generate(t, &rng).unwrap();
        let parsed = SessionToken::parse(token.expose()).unwrap();
        assert_eq!(parsed.tenant(), t);
        assert_eq!(parsed.hash(), token.hash());
        assert_eq!(parsed.expose(), token.expose());
    }

    #[test]
    fn kinds_do_not_mix() {
        let rng = SystemRandom::new();
        let key = ApiKeyToken::generate(tenant(), &rng).unwrap();
        assert_eq!(SessionToken::parse(key.expose()).unwrap_err(), TokenError::WrongPrefix);
        let session = SessionToken::generate(tenant(), &rng).unwrap();
        assert_eq!(ApiKeyToken::parse(session.expose()).unwrap_err(), TokenError::WrongPrefix);
    }

    #[test]
    fn strict_parsing() {
        let rng = SystemRandom::new();
        let good = SessionToken::generate(tenant(), &rng).unwrap().expose().to_owned();
        assert_eq!(SessionToken::parse("").unwrap_err(), TokenError::WrongPrefix);
        assert_eq!(SessionToken::parse(&good[..69]).unwrap_err(), TokenError::WrongLength);
        assert_eq!(SessionToken::parse(&format!("{good}A")).unwrap_err(), TokenError::WrongLength);
        assert_eq!(SessionToken::parse(&format!(" {good}")).unwrap_err(), TokenError::WrongPrefix);
        assert_eq!(SessionToken::parse(&good.to_uppercase()).unwrap_err(), TokenError::WrongPrefix);
        let standard_alphabet = format!("{}+{}", &good[..10], &good[11..]);
        assert_eq!(SessionToken::parse(&standard_alphabet).unwrap_err(), TokenError::NotBase64Url);
        let padded = format!("{}={}", &good[..10], &good[11..]);
        assert_eq!(SessionToken::parse(&padded).unwrap_err(), TokenError::NotBase64Url);
        let multibyte = format!("{}é{}", &good[..10], &good[12..]);
        assert!(SessionToken::parse(&multibyte).is_err());
        let nil = format!("prx_s_{}", URL_SAFE_NO_PAD.encode([0u8; 48]));
        assert_eq!(SessionToken::parse(&nil).unwrap_err(), TokenError::NilTenant);
    }

    #[test]
    fn editing_the_tenant_changes_the_hash() {
        let rng = SystemRandom::new();
        let token = SessionToken::generate(tenant(), &rng).unwrap();
        let mut forged = token.expose().to_owned();
        // The 7th character encodes tenant bits; swap it for another valid one.
        let replacement = if forged.as_bytes()[6] == b'A' { "B" } else { "A" };
        forged.replace_range(6..7, replacement);
        let parsed = SessionToken::parse(&forged).unwrap();
        assert_ne!(parsed.tenant(), token.tenant());
        assert_ne!(parsed.hash(), token.hash());
    }

    #[test]
    fn debug_masks_the_secret() {
        let rng = SystemRandom::new();
        let key = ApiKeyToken::generate(tenant(), &rng).unwrap();
        let debug = format!("{key:?}");
        assert!(debug.starts_with("ApiKeyToken {"), "{debug}");
        assert!(!debug.contains(&key.expose()[6..20]), "{debug}");
        let hash_debug = format!("{:?}", key.hash());
        assert!(!hash_debug.contains(&hex(key.hash().as_bytes())), "{hash_debug}");
    }

    #[test]
    fn api_key_id_is_public_and_stable() {
        let rng = SystemRandom::new();
        let key = ApiKeyToken::generate(tenant(), &rng).unwrap();
        let id = key.key_id();
        assert_eq!(id.as_str().len(), 12);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(TokenHash::from_bytes(*key.hash().as_bytes()).key_id(), id);
        assert!(!key.expose().contains(id.as_str()));
        let shown = key.display_once();
        assert!(shown.starts_with("prx_k_"));
        assert_eq!(ApiKeyToken::parse(&shown).unwrap().key_id(), id);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"\x00", b"\x80"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(input in ".*") {
            let _ = SessionToken::parse(&input);
            let _ = ApiKeyToken::parse(&input);
        }

        #[test]
        fn parse_never_panics_on_near_misses(body in "[A-Za-z0-9_=+/é-]{60,68}") {
            let _ = SessionToken::parse(&format!("prx_s_{body}"));
            let _ = ApiKeyToken::parse(&format!("prx_k_{body}"));
        }

        #[test]
        fn any_payload_round_trips(payload in proptest::array::uniform32(any::<u8>()), tenant in any::<u128>()) {
            prop_assume!(tenant != 0);
            let mut bytes = Vec::with_capacity(48);
            bytes.extend_from_slice(&tenant.to_be_bytes());
            bytes.extend_from_slice(&payload);
            let text = format!("prx_k_{}", URL_SAFE_NO_PAD.encode(&bytes));
            let parsed = ApiKeyToken::parse(&text).unwrap();
            prop_assert_eq!(parsed.tenant(), TenantId::from_uuid(Uuid::from_u128(tenant)));
            prop_assert_eq!(parsed.expose(), text.as_str());
            prop_assert_eq!(parsed.hash(), TokenHash::of(&text));
        }

        #[test]
        fn constant_time_eq_agrees_with_eq(a in proptest::collection::vec(any::<u8>(), 0..40), b in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(constant_time_eq(&a, &b), a == b);
        }
    }
}
