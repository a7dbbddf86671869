//! Cross-site request forgery defence for cookie-authenticated requests.
//!
//! Design: double-submit token plus origin verification (OWASP CSRF Prevention Cheat Sheet).
//! - At sign-in the server sets a random [`CsrfToken`] in a second cookie, [`CSRF_COOKIE_NAME`],
//!   which JavaScript may read (not `HttpOnly`) but which has the `__Host-` prefix (`Secure`,
//!   `Path=/`, no `Domain`), so a sibling subdomain cannot plant its own value ("cookie tossing").
//! - The front end copies it into the [`CSRF_HEADER_NAME`] header of every state-changing
//!   request. A cross-site attacker's page can make the browser *send* the cookies but cannot
//!   *read* them, so it cannot produce the matching header.
//! - In addition the request must come from one of our origins: the browser-set `Origin` header
//!   is in the allow-list, or `Sec-Fetch-Site: same-origin`. Neither can be forged by a page.
//!   This second, independent check also covers a token leaked by some other bug.
//!
//! Why Bearer tokens and API keys are exempt: CSRF works because browsers attach cookies to
//! cross-site requests by themselves. An `Authorization` header is never attached automatically;
//! a page that can set it already holds the credential, and forgery is moot. The caller passes
//! `cookie_authenticated = false` only when the credential came from `Authorization` and *no*
//! session cookie was used.
//!
//! Safe methods (GET, HEAD, OPTIONS) pass: they must not change state (a rule the handlers keep),
//! and CORS preflights are OPTIONS requests without credentials.

pub use crate::error::CsrfProblem;
use crate::error::IdentityError;
use crate::token::constant_time_eq;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;
use std::fmt;
use zeroize::Zeroizing;

/// Name of the cookie that carries the CSRF token.
pub const CSRF_COOKIE_NAME: &str = "__Host-praxis_csrf";
/// Name of the request header that must repeat it.
pub const CSRF_HEADER_NAME: &str = "x-csrf-token";

/// Random bytes per CSRF token (256 bits).
const CSRF_BYTES: usize = 32;
/// base64url characters for 32 bytes, no padding.
const CSRF_TOKEN_LEN: usize = 43;

/// A fresh CSRF token for the cookie.
pub struct CsrfToken(Zeroizing<String>);

impl CsrfToken {
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, IdentityError> {
        let mut bytes = Zeroizing::new([0u8; CSRF_BYTES]);
        rng.fill(bytes.as_mut()).map_err(|_| IdentityError::Random)?;
        let mut value = Zeroizing::new(String::with_capacity(CSRF_TOKEN_LEN));
        URL_SAFE_NO_PAD.encode_string(bytes.as_ref(), &mut value);
        Ok(Self(value))
    }

    /// The value for the `Set-Cookie` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfToken(********)")
    }
}

/// Exactly 43 base64url characters: the shape [`CsrfToken::generate`] makes.
fn well_formed(token: &str) -> bool {
    token.len() == CSRF_TOKEN_LEN && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Safe methods per RFC 9110 §9.2.1 that we serve. Matched exactly: methods are case-sensitive,
/// and anything unknown is treated as unsafe.
fn is_safe_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// Decides whether a request passes the CSRF defence. See the module documentation for the
/// design. `allowed_origins` are serialized origins (`https://app.example.org`, no path, no
/// trailing slash); `Origin: null` never matches.
pub fn check_csrf(
    method: &str,
    cookie_authenticated: bool,
    cookie_token: Option<&str>,
    header_token: Option<&str>,
    origin: Option<&str>,
    sec_fetch_site: Option<&str>,
    allowed_origins: &[String],
) -> Result<(), CsrfProblem> {
    if is_safe_method(method) || !cookie_authenticated {
        return Ok(());
    }
    let cookie = cookie_token.filter(|t| !t.is_empty()).ok_or(CsrfProblem::MissingCookieToken)?;
    let header = header_token.filter(|t| !t.is_empty()).ok_or(CsrfProblem::MissingHeaderToken)?;
    if !well_formed(cookie) || !well_formed(header) {
        return Err(CsrfProblem::MalformedToken);
    }
    if !constant_time_eq(cookie.as_bytes(), header.as_bytes()) {
        return Err(CsrfProblem::TokenMismatch);
    }
    let origin_allowed = origin.is_some_and(|origin| {
        origin != "null" && allowed_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin))
    });
    let same_origin_fetch = sec_fetch_site.is_some_and(|site| site.eq_ignore_ascii_case("same-origin"));
    if origin_allowed || same_origin_fetch { Ok(()) } else { Err(CsrfProblem::OriginNotAllowed) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ring::rand::SystemRandom;

    const ORIGIN: &str = "https://app.praxis.example";

    fn allowed() -> Vec<String> {
        vec![ORIGIN.to_owned()]
    }

    fn token() -> String {
        CsrfToken::generate(&SystemRandom::new()).unwrap().expose().to_owned()
    }

    #[test]
    fn tokens_are_43_base64url_chars_and_distinct() {
        let a = token();
        assert!(well_formed(&a), "{a}");
        assert_ne!(a, token());
        let debug = format!("{:?}", CsrfToken::generate(&SystemRandom::new()).unwrap());
        assert_eq!(debug, "CsrfToken(********)");
    }

    #[test]
    fn safe_methods_and_bearer_requests_pass() {
        let none: &[String] = &[];
        for method in ["GET", "HEAD", "OPTIONS"] {
            assert_eq!(check_csrf(method, true, None, None, None, None, none), Ok(()));
        }
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            assert_eq!(check_csrf(method, false, None, None, Some("https://evil.example"), None, none), Ok(()));
        }
    }

    #[test]
    fn unknown_or_lowercase_methods_are_unsafe() {
        for method in ["get", "TRACE", "PROPFIND", ""] {
            assert_eq!(
                check_csrf(method, true, None, None, None, None, &allowed()),
                Err(CsrfProblem::MissingCookieToken),
                "{method}"
            );
        }
    }

    /// cookie token, header token, Origin, Sec-Fetch-Site, expected outcome
    type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<&'a str>, Result<(), CsrfProblem>);

    #[test]
    fn matrix_for_cookie_authenticated_writes() {
        let t = token();
        let other = token();
        let t = t.as_str();
        let cases: Vec<Case<'_>> = vec![
            // cookie, header, origin, sec-fetch-site, expected
            (Some(t), Some(t), Some(ORIGIN), None, Ok(())),
            (Some(t), Some(t), None, Some("same-origin"), Ok(())),
            (Some(t), Some(t), Some("HTTPS://APP.PRAXIS.EXAMPLE"), None, Ok(())),
            (Some(t), Some(t), Some("https://evil.example"), Some("same-origin"), Ok(())),
            (None, Some(t), Some(ORIGIN), None, Err(CsrfProblem::MissingCookieToken)),
            (Some(""), Some(t), Some(ORIGIN), None, Err(CsrfProblem::MissingCookieToken)),
            (Some(t), None, Some(ORIGIN), None, Err(CsrfProblem::MissingHeaderToken)),
            (Some(t), Some(""), Some(ORIGIN), None, Err(CsrfProblem::MissingHeaderToken)),
            (Some(t), Some(&other), Some(ORIGIN), None, Err(CsrfProblem::TokenMismatch)),
            (Some("abc"), Some("abc"), Some(ORIGIN), None, Err(CsrfProblem::MalformedToken)),
            (Some(t), Some(t), Some("https://evil.example"), None, Err(CsrfProblem::OriginNotAllowed)),
            (Some(t), Some(t), Some("https://evil.example"), Some("cross-site"), Err(CsrfProblem::OriginNotAllowed)),
            (Some(t), Some(t), Some("null"), None, Err(CsrfProblem::OriginNotAllowed)),
            (Some(t), Some(t), None, None, Err(CsrfProblem::OriginNotAllowed)),
            (Some(t), Some(t), None, Some("same-site"), Err(CsrfProblem::OriginNotAllowed)),
            (Some(t), Some(t), None, Some("none"), Err(CsrfProblem::OriginNotAllowed)),
            (
                Some(t),
                Some(t),
                Some("https://app.praxis.example.evil.example"),
                None,
                Err(CsrfProblem::OriginNotAllowed),
            ),
        ];
        for (i, (cookie, header, origin, site, expected)) in cases.into_iter().enumerate() {
            assert_eq!(check_csrf("POST", true, cookie, header, origin, site, &allowed()), expected, "case {i}");
        }
    }

    #[test]
    fn null_is_never_an_allowed_origin() {
        let t = token();
        let allow_null = vec!["null".to_owned()];
        assert_eq!(
            check_csrf("POST", true, Some(&t), Some(&t), Some("null"), None, &allow_null),
            Err(CsrfProblem::OriginNotAllowed)
        );
    }

    proptest! {
        #[test]
        fn never_panics(method in ".{0,8}", cookie in proptest::option::of(".{0,50}"), header in proptest::option::of(".{0,50}"),
                        origin in proptest::option::of(".{0,40}"), site in proptest::option::of(".{0,12}"), auth in any::<bool>()) {
            let _ = check_csrf(&method, auth, cookie.as_deref(), header.as_deref(), origin.as_deref(), site.as_deref(), &allowed());
        }

        #[test]
        fn a_different_header_never_passes(cookie in "[A-Za-z0-9_-]{43}", header in "[A-Za-z0-9_-]{43}") {
            prop_assume!(cookie != header);
            prop_assert_eq!(
                check_csrf("POST", true, Some(&cookie), Some(&header), Some(ORIGIN), Some("same-origin"), &allowed()),
                Err(CsrfProblem::TokenMismatch)
            );
        }
    }
}
