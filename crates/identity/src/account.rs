//! Rules for an account's identifiers, the same whichever door creates the account (the API,
//! `praxis tenants create`).

/// Longest accepted email address (RFC 5321's path limit).
pub const EMAIL_MAX_LEN: usize = 254;

/// An account's email as stored and looked up: trimmed and lower-cased, 3 to
/// [`EMAIL_MAX_LEN`] bytes, one `@` with text on both sides, no whitespace or control
/// characters. Deliberately not a full RFC 5322 parser: it must only reject what cannot be an
/// address and keep the stored form canonical, so one person cannot hold two accounts that
/// differ in case. The error says what is wrong without echoing the input.
pub fn account_email(raw: &str) -> Result<String, &'static str> {
    const PROBLEM: &str = "must be an email address of at most 254 characters";
    let email = raw.trim().to_lowercase();
    if email.len() < 3 || email.len() > EMAIL_MAX_LEN {
        return Err(PROBLEM);
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PROBLEM);
    }
    match email.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => Ok(email),
        _ => Err(PROBLEM),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_is_trimmed_and_lower_case() {
        assert_eq!(account_email("  Admin@Example.ORG ").unwrap(), "admin@example.org");
    }

    #[test]
    fn refuses_what_cannot_be_an_address() {
        for bad in ["", "a", "@x", "x@", "a@b@c", "a b@example.org", "a\u{7}@example.org", "noatsign"] {
            assert!(account_email(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert!(account_email(&long).is_err());
    }
}
