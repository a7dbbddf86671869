//! Password policy, after NIST SP 800-63B §5.1.1.2: a minimum length, a generous maximum, no
//! composition rules ("one digit, one symbol" makes `Password1!`), no forced rotation, and a check
//! against passwords attackers try first. Length beats complexity; the deny-list catches the
//! passwords that are long enough but guessed in the first thousand attempts.

use std::collections::HashSet;
use std::sync::OnceLock;
use thiserror::Error;

/// The shipped deny-list (see its header for provenance). Embedded at compile time: the policy
/// does no I/O and cannot fail at run time for want of a file.
const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");

/// Why a new password was refused. The texts are safe to show to the user; none repeats the
/// password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PasswordProblem {
    #[error("the password must be at least {min} characters long")]
    TooShort { min: usize },
    #[error("the password must be at most {max} bytes long")]
    TooLong { max: usize },
    #[error("the password is on a list of commonly used passwords")]
    Common,
    #[error("the password is too predictable (repeated or sequential characters)")]
    Predictable,
    #[error("the password must not contain your email address, name or the practice's name")]
    ContainsContext,
}

/// Length bounds for new passwords.
///
/// `max_bytes` exists because every login hashes what the client sent: without a bound, a
/// megabyte "password" costs the server a megabyte of BLAKE2b per attempt. 1024 bytes fits any
/// passphrase or password-manager output. Counted in bytes (what hashing costs), while the
/// minimum counts characters (what the user typed), so an "ä" is one character toward the 12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub min_chars: usize,
    pub max_bytes: usize,
}

impl PasswordPolicy {
    /// NIST 800-63B asks for at least 8; we take 12, as OWASP's ASVS level 2 does.
    pub const DEFAULT_MIN_CHARS: usize = 12;
    pub const DEFAULT_MAX_BYTES: usize = 1024;

    /// Checks a new password (on sign-up, reset or change; never on login, where the stored hash
    /// decides). `context` holds words the user's password must not contain: their email address,
    /// their name, the practice's name. Only the first problem found is reported.
    pub fn check(&self, password: &str, context: &[&str]) -> Result<(), PasswordProblem> {
        if password.len() > self.max_bytes {
            return Err(PasswordProblem::TooLong { max: self.max_bytes });
        }
        if password.chars().count() < self.min_chars {
            return Err(PasswordProblem::TooShort { min: self.min_chars });
        }
        if is_common(password) {
            return Err(PasswordProblem::Common);
        }
        if is_predictable(password) {
            return Err(PasswordProblem::Predictable);
        }
        if contains_context(password, context) {
            return Err(PasswordProblem::ContainsContext);
        }
        Ok(())
    }
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { min_chars: Self::DEFAULT_MIN_CHARS, max_bytes: Self::DEFAULT_MAX_BYTES }
    }
}

fn common_set() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON_PASSWORDS.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).collect()
    })
}

/// Number of entries in the shipped deny-list.
pub fn common_password_count() -> usize {
    common_set().len()
}

/// Whether a password is on the deny-list, the way attackers' rule sets mutate list entries:
/// any letter case, digits or punctuation glued on either end ("Password123!", "!!monkey2024"),
/// and the usual letter substitutions ("P@ssw0rd").
pub fn is_common(password: &str) -> bool {
    let set = common_set();
    let lower = password.to_lowercase();
    if set.contains(lower.as_str()) {
        return true;
    }
    let core = lower.trim_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation() || c.is_whitespace());
    if core.is_empty() {
        return false;
    }
    if set.contains(core) {
        return true;
    }
    let unleeted = unleet(core);
    set.contains(unleeted.as_str())
}

/// Undo the common "leet" substitutions. Applied to the core only, after the digit suffix is
/// gone, so "p4ssw0rd" becomes "password" while "monkey2024" was already cut to "monkey".
fn unleet(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '@' | '4' => 'a',
            '0' => 'o',
            '1' | '!' => 'i',
            '3' => 'e',
            '$' | '5' => 's',
            '7' => 't',
            other => other,
        })
        .collect()
}

/// Very few distinct characters ("aaaaaaaaaaaa", "abababababab") or one constant step all the
/// way ("abcdefghijkl", "123456789012", "987654321098"). Both are tried early by crackers and
/// are named as weak in NIST 800-63B.
fn is_predictable(password: &str) -> bool {
    let chars: Vec<char> = password.chars().collect();
    let distinct: HashSet<char> = chars.iter().copied().collect();
    if distinct.len() < 4 {
        return true;
    }
    let steps: Vec<i64> = chars.windows(2).map(|pair| step(pair[0], pair[1])).collect();
    steps.first().is_some_and(|first| first.abs() == 1 && steps.iter().all(|step| step == first))
}

/// The code-point distance between neighbours; between two digits it is taken around the
/// "keyboard circle" 1234567890, so "123456789012" is one run.
fn step(a: char, b: char) -> i64 {
    match (a.to_digit(10), b.to_digit(10)) {
        (Some(x), Some(y)) => match (i64::from(y) - i64::from(x)).rem_euclid(10) {
            1 => 1,
            9 => -1,
            other => other,
        },
        _ => i64::from(u32::from(b)) - i64::from(u32::from(a)),
    }
}

/// Whether the password contains a context word: the whole value (an email's local part for an
/// address) or any of its parts of 4+ characters ("anna.schmidt@example.org" gives
/// "anna.schmidt", "anna", "schmidt"). Shorter parts are ignored: "Dr" or "Li" would reject
/// half of all passwords without making any weaker one stronger.
fn contains_context(password: &str, context: &[&str]) -> bool {
    const MIN_PART_CHARS: usize = 4;
    let lower = password.to_lowercase();
    context.iter().any(|item| {
        let item = item.trim().to_lowercase();
        let item = match item.split_once('@') {
            Some((local, _domain)) => local.to_owned(),
            None => item,
        };
        let whole = std::iter::once(item.as_str());
        let parts = item.split(|c: char| !c.is_alphanumeric());
        whole.chain(parts).any(|part| part.chars().count() >= MIN_PART_CHARS && lower.contains(part))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy::default()
    }

    #[test]
    fn list_is_embedded_and_large_enough() {
        assert!(common_password_count() >= 1000, "{}", common_password_count());
        for line in COMMON_PASSWORDS.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(line, line.to_lowercase(), "entries are lowercase");
            assert_eq!(line, line.trim());
        }
        assert!(COMMON_PASSWORDS.starts_with('#'), "the file starts with its provenance header");
    }

    #[test]
    fn common_passwords_are_rejected_in_their_usual_disguises() {
        for password in [
            "Password123!",
            "password1234",
            "PASSWORD2024!!",
            "P@ssw0rd12345",
            "iloveyou2024!",
            "!!Monkey123456",
            "qwertyuiop123",
            "Sommer2024!!!",
            "Correcthorsebatterystaple",
        ] {
            assert_eq!(policy().check(password, &[]), Err(PasswordProblem::Common), "{password}");
        }
    }

    #[test]
    fn a_random_passphrase_is_accepted() {
        assert_eq!(policy().check("violet tram elbow quiz", &["anna.schmidt@example.org", "Praxis Sonnenweg"]), Ok(()));
        assert_eq!(policy().check("kX9#vT2m!Lq7pR", &[]), Ok(()));
        assert_eq!(policy().check("Grüne Wälder über Ölberg", &[]), Ok(()));
    }

    #[test]
    fn length_bounds() {
        assert_eq!(policy().check("short1!", &[]), Err(PasswordProblem::TooShort { min: 12 }));
        assert_eq!(policy().check("", &[]), Err(PasswordProblem::TooShort { min: 12 }));
        // 12 characters, 24 bytes: characters count toward the minimum.
        assert_eq!(policy().check("äöüßäöüßxkcd", &[]), Ok(()));
        let long = "x7Q!".repeat(257);
        assert_eq!(policy().check(&long, &[]), Err(PasswordProblem::TooLong { max: 1024 }));
        let max = "x7Q!".repeat(256);
        assert_eq!(policy().check(&max, &[]), Ok(()));
    }

    #[test]
    fn predictable_patterns_are_rejected() {
        assert_eq!(policy().check("aaaaaaaaaaaaaaa", &[]), Err(PasswordProblem::Predictable));
        assert_eq!(policy().check("abababababab", &[]), Err(PasswordProblem::Predictable));
        assert_eq!(policy().check("bcdefghijklm", &[]), Err(PasswordProblem::Predictable));
        assert_eq!(policy().check("mlkjihgfedcb", &[]), Err(PasswordProblem::Predictable));
        assert_eq!(policy().check("123456789012345", &[]), Err(PasswordProblem::Predictable));
        assert_eq!(policy().check("098765432109", &[]), Err(PasswordProblem::Predictable));
    }

    #[test]
    fn context_words_are_rejected() {
        let context = ["anna.schmidt@example.org", "Praxis am Sonnenweg"];
        assert_eq!(policy().check("Schmidt-violet-tram", &context), Err(PasswordProblem::ContainsContext));
        assert_eq!(policy().check("xx-anna.schmidt-xx", &context), Err(PasswordProblem::ContainsContext));
        assert_eq!(policy().check("sonnenweg violet tram", &context), Err(PasswordProblem::ContainsContext));
        // Short parts ("am") do not count.
        assert_eq!(policy().check("amber tram violet", &context), Ok(()));
    }
}
