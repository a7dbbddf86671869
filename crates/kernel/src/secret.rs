//! Wrappers that keep secrets and personal data out of logs and error messages.
//!
//! `Debug` and `Display` print a mask; serializing a `Secret` prints the mask too (so printing a
//! config can never leak one). Reading the value takes an explicit, greppable call.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use zeroize::Zeroize;

/// The text every masked value prints as.
pub const MASK: &str = "********";

/// A credential or key: masked when printed or serialized, zeroized when dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The only way to read the value. Keep the borrow short; never log it.
    pub fn expose_secret(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T: Zeroize> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T: Zeroize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

impl<'de, T: Zeroize + Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret)
    }
}

/// Personal data (a phone number, an email, a name): masked when printed. Unlike `Secret`, it
/// serializes to its real value, because API responses and exports must carry it; logs must not.
#[derive(Clone, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Pii<T>(T);

impl<T> Pii<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Pii<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[PII]")
    }
}

impl<T> fmt::Display for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[PII]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_or_serializes_its_value() {
        let secret = Secret::new(String::from("hunter2-correct-horse"));
        assert_eq!(format!("{secret}"), MASK);
        assert_eq!(format!("{secret:?}"), MASK);
        assert_eq!(serde_json::to_string(&secret).unwrap(), format!("\"{MASK}\""));
        assert_eq!(secret.expose_secret(), "hunter2-correct-horse");
    }

    #[test]
    fn secret_deserializes_from_plain_value() {
        let secret: Secret<String> = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(secret.expose_secret(), "abc");
    }

    #[test]
    fn pii_masks_debug_but_serializes_for_api_responses() {
        let phone = Pii::new(String::from("+4915112345678"));
        assert_eq!(format!("{phone:?} {phone}"), "[PII] [PII]");
        assert_eq!(serde_json::to_string(&phone).unwrap(), "\"+4915112345678\"");
    }
}
