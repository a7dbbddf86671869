//! Password hashing with Argon2id (RFC 9106), stored as PHC strings
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), so each hash carries its own parameters and
//! old hashes keep verifying after the parameters are raised ([`PasswordHasher::needs_rehash`]
//! tells the login handler to re-hash on the next successful login).
//!
//! Argon2 is deliberately slow and memory-hard: with the OWASP minimum (19 MiB, 2 passes) one
//! hash takes tens of milliseconds of one core. It is pure computation, so it lives in this pure
//! crate; the app runs it on a blocking thread (`spawn_blocking`), never on the async executor.

use crate::error::IdentityError;
use crate::password::PasswordPolicy;
use argon2::{Algorithm, Argon2, PasswordHash, PasswordVerifier, Version};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use zeroize::Zeroizing;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory per hash, in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes. Kept at 1: the app parallelises across requests, not within one hash.
    pub parallelism: u32,
}

impl Argon2Params {
    /// OWASP Password Storage Cheat Sheet minimum for Argon2id: m=19 MiB, t=2, p=1.
    pub const OWASP_MINIMUM: Self = Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 };

    /// Upper bounds for verifying a stored hash. A hash row is trusted data, but a corrupted or
    /// tampered row with m=4 GiB must not take the server down: verification refuses beyond this.
    pub const MAX_VERIFY: Self = Self { memory_kib: 1024 * 1024, iterations: 16, parallelism: 16 };

    /// Whether these parameters are at least as strong as the OWASP minimum, in each dimension.
    /// The app's config validation refuses weaker parameters in production.
    pub fn meets_owasp_minimum(&self) -> bool {
        self.memory_kib >= Self::OWASP_MINIMUM.memory_kib
            && self.iterations >= Self::OWASP_MINIMUM.iterations
            && self.parallelism >= Self::OWASP_MINIMUM.parallelism
    }

    fn to_argon2(self) -> Result<argon2::Params, IdentityError> {
        argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| IdentityError::InvalidArgon2Params(e.to_string()))
    }
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self::OWASP_MINIMUM
    }
}

/// Hashes and verifies passwords. Build one at start-up and share it (`Arc`); it is `Send + Sync`.
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    params: Argon2Params,
    rng: SystemRandom,
    max_password_bytes: usize,
    /// A hash of a random password nobody knows, made with the configured parameters.
    dummy_phc: String,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher").field("params", &self.params).finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Salt length in bytes (the RFC 9106 recommendation).
    pub const SALT_LEN: usize = 16;

    /// Builds a hasher. Computes the dummy hash used by [`Self::dummy_verify`] now, so the first
    /// login for an unknown email is not faster than later ones (one hash of start-up time).
    pub fn new(params: Argon2Params) -> Result<Self, IdentityError> {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.to_argon2()?);
        let rng = SystemRandom::new();
        let mut hasher = Self {
            argon2,
            params,
            rng,
            max_password_bytes: PasswordPolicy::DEFAULT_MAX_BYTES,
            dummy_phc: String::new(),
        };
        let mut unknowable = Zeroizing::new([0u8; 32]);
        hasher.rng.fill(unknowable.as_mut()).map_err(|_| IdentityError::Random)?;
        hasher.dummy_phc = hasher.hash_bytes(unknowable.as_ref())?;
        Ok(hasher)
    }

    pub fn params(&self) -> Argon2Params {
        self.params
    }

    /// Hashes a password with a fresh random salt; returns the PHC string to store.
    ///
    /// Refuses passwords beyond the policy's byte bound, as a second line behind the policy
    /// check, so hashing cost stays bounded whatever path calls this.
    pub fn hash(&self, password: &str) -> Result<String, IdentityError> {
        if password.len() > self.max_password_bytes {
            return Err(IdentityError::PasswordRejected(crate::PasswordProblem::TooLong {
                max: self.max_password_bytes,
            }));
        }
        self.hash_bytes(password.as_bytes())
    }

    fn hash_bytes(&self, password: &[u8]) -> Result<String, IdentityError> {
        use argon2::PasswordHasher as _;
        let mut salt = [0u8; Self::SALT_LEN];
        self.rng.fill(&mut salt).map_err(|_| IdentityError::Random)?;
        let hash =
            self.argon2.hash_password_with_salt(password, &salt).map_err(|e| IdentityError::Hashing(e.to_string()))?;
        Ok(hash.to_string())
    }

    /// Verifies a password against a stored PHC string.
    ///
    /// `Ok(false)` for a wrong password (and, without hashing, for one beyond the byte bound: the
    /// caller knows the length of what they sent, so answering fast leaks nothing about the
    /// account). `Err(InvalidPasswordHash)` when the stored string is not an Argon2id PHC string
    /// within [`Argon2Params::MAX_VERIFY`]. The final comparison is constant-time (inside argon2's
    /// `Output` equality).
    pub fn verify(&self, password: &str, phc: &str) -> Result<bool, IdentityError> {
        if password.len() > self.max_password_bytes {
            return Ok(false);
        }
        let hash = parse_bounded(phc)?;
        match self.argon2.verify_password(password.as_bytes(), &hash) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
            Err(e) => Err(IdentityError::Hashing(e.to_string())),
        }
    }

    /// Does the work of a verification against a hash nobody can match, and discards the result.
    ///
    /// Call it when the email is unknown (or the account has no password), so "no such user"
    /// costs the same Argon2 time as "wrong password" and response timing does not reveal which
    /// emails have accounts. The response itself must also be the same for both.
    pub fn dummy_verify(&self, password: &str) {
        // Same path as a real verification, including the fast refusal of over-long passwords
        // (which a real account gets too). black_box: the result is unused; keep the work.
        std::hint::black_box(self.verify(std::hint::black_box(password), &self.dummy_phc).is_ok());
    }

    /// Whether a stored hash was made with other parameters (or another algorithm/version) than
    /// the configured ones, so the login handler should store a fresh hash of the password it
    /// just verified. A malformed hash also needs one.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(hash) = PasswordHash::new(phc) else {
            return true;
        };
        let Ok(stored) = argon2::Params::try_from(&hash) else {
            return true;
        };
        hash.algorithm != argon2::ARGON2ID_IDENT
            || hash.version != Some(Version::V0x13.into())
            || stored.m_cost() != self.params.memory_kib
            || stored.t_cost() != self.params.iterations
            || stored.p_cost() != self.params.parallelism
    }
}

/// Parses a PHC string and refuses anything but Argon2id within the verification cost bound.
fn parse_bounded(phc: &str) -> Result<PasswordHash, IdentityError> {
    let hash = PasswordHash::new(phc).map_err(|_| IdentityError::InvalidPasswordHash)?;
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return Err(IdentityError::InvalidPasswordHash);
    }
    let params = argon2::Params::try_from(&hash).map_err(|_| IdentityError::InvalidPasswordHash)?;
    let max = Argon2Params::MAX_VERIFY;
    if params.m_cost() > max.memory_kib || params.t_cost() > max.iterations || params.p_cost() > max.parallelism {
        return Err(IdentityError::InvalidPasswordHash);
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small parameters keep the tests fast; the algorithm is the same.
    const FAST: Argon2Params = Argon2Params { memory_kib: 64, iterations: 1, parallelism: 1 };

    #[test]
    fn hash_then_verify() {
        let hasher = PasswordHasher::new(FAST).unwrap();
        let phc = hasher.hash("violet tram elbow quiz").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(hasher.verify("violet tram elbow quiz", &phc).unwrap());
        assert!(!hasher.verify("violet tram elbow quiz ", &phc).unwrap());
        assert!(!hasher.verify("", &phc).unwrap());
    }

    #[test]
    fn salts_differ() {
        let hasher = PasswordHasher::new(FAST).unwrap();
        assert_ne!(hasher.hash("same password here").unwrap(), hasher.hash("same password here").unwrap());
    }

    #[test]
    fn default_params_are_owasp_minimum_and_work() {
        let params = Argon2Params::default();
        assert_eq!(params, Argon2Params { memory_kib: 19456, iterations: 2, parallelism: 1 });
        assert!(params.meets_owasp_minimum());
        assert!(!FAST.meets_owasp_minimum());
        let hasher = PasswordHasher::new(params).unwrap();
        let phc = hasher.hash("correct horse, wrong stable").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(hasher.verify("correct horse, wrong stable", &phc).unwrap());
        assert!(!hasher.needs_rehash(&phc));
    }

    #[test]
    fn old_parameters_verify_but_need_rehash() {
        let old = PasswordHasher::new(FAST).unwrap();
        let phc = old.hash("a passphrase from 2025").unwrap();
        let new = PasswordHasher::new(Argon2Params { memory_kib: 128, ..FAST }).unwrap();
        assert!(new.verify("a passphrase from 2025", &phc).unwrap());
        assert!(new.needs_rehash(&phc));
        assert!(!old.needs_rehash(&phc));
        assert!(new.needs_rehash("not a hash"));
    }

    #[test]
    fn malformed_or_foreign_hashes_are_errors_not_false() {
        let hasher = PasswordHasher::new(FAST).unwrap();
        assert_eq!(hasher.verify("x", "not a hash"), Err(IdentityError::InvalidPasswordHash));
        assert_eq!(hasher.verify("x", ""), Err(IdentityError::InvalidPasswordHash));
        let phc = hasher.hash("x").unwrap();
        let argon2i = phc.replacen("argon2id", "argon2i", 1);
        assert_eq!(hasher.verify("x", &argon2i), Err(IdentityError::InvalidPasswordHash));
        // A stored hash demanding 4 GiB is refused before any memory is allocated.
        let huge = phc.replacen("m=64", "m=4194304", 1);
        assert_eq!(hasher.verify("x", &huge), Err(IdentityError::InvalidPasswordHash));
    }

    #[test]
    fn over_long_passwords_are_bounded() {
        let hasher = PasswordHasher::new(FAST).unwrap();
        let long = "a".repeat(PasswordPolicy::DEFAULT_MAX_BYTES + 1);
        assert!(matches!(hasher.hash(&long), Err(IdentityError::PasswordRejected(_))));
        let phc = hasher.hash("short but fine").unwrap();
        assert!(!hasher.verify(&long, &phc).unwrap());
        hasher.dummy_verify(&long);
    }

    #[test]
    fn dummy_verify_runs_and_matches_nothing() {
        let hasher = PasswordHasher::new(FAST).unwrap();
        hasher.dummy_verify("anything");
        assert!(!hasher.verify("", &hasher.dummy_phc).unwrap());
        assert!(!hasher.needs_rehash(&hasher.dummy_phc), "dummy uses the configured cost");
    }

    #[test]
    fn invalid_params_are_refused() {
        let bad = Argon2Params { memory_kib: 1, iterations: 0, parallelism: 0 };
        assert!(matches!(PasswordHasher::new(bad), Err(IdentityError::InvalidArgon2Params(_))));
    }

    #[test]
    fn debug_shows_no_hash() {
        let hasher = PasswordHasher::new(FAST).unwrap();
        let debug = format!("{hasher:?}");
        assert!(!debug.contains("argon2id$"), "{debug}");
    }
}
