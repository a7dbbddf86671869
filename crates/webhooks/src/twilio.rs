//! Twilio: `X-Twilio-Signature` = base64 HMAC-SHA1, keyed with the account's auth token.
//!
//! - Form webhooks (`application/x-www-form-urlencoded`, the usual case): the signed string is
//!   the full URL Twilio called, followed by every POST parameter sorted by name (byte order,
//!   case-sensitive), each appended as name + value with no separators; a name given several
//!   times contributes each value, values sorted. Values are the decoded form values.
//! - JSON webhooks: the URL's query string carries `bodySHA256`; the signature covers the URL
//!   alone (no parameters appended) and the hex SHA-256 of the raw body must equal
//!   `bodySHA256`.
//!
//! Twilio's own libraries try the URL with and without the scheme's default port, because
//! Twilio's signing has not always been consistent about it; so does this module: the URL as
//! given, with `:443` / `:80` added when it has no port, and with the port removed when it has
//! one. The URL must be the configured public URL, never one built from the Host header.
//! Twilio sends no timestamp, so replays are caught by de-duplication on the SID only.
//!
//! Twilio's scheme signs decoded values joined without separators, so a few re-encodings of the
//! same request share its signature: `+` / `%20` / a space, `%2b` / `%2B`, and regroupings such
//! as `MessageSid=SM1` sent as `MessageSid&SM1`. Forging one needs a genuine signed request to
//! start from; the parser refuses the empty SIDs and statuses that regroupings produce, and the
//! SID de-duplication refuses the rest once the genuine request has been processed.

use crate::error::{Provider, RejectReason, WebhookError};
use crate::fields::{MAX_ADDRESS_LEN, MAX_ID_LEN, MAX_LABEL_LEN, MAX_TEXT_BYTES};
use crate::request::{Checks, InboundRequest, any_hmac_matches, tokens_match};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kernel::{Pii, Secret};
use ring::{digest, hmac};

const CHECKS: Checks = Checks::new(Provider::Twilio);

/// One tenant's Twilio account.
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// The primary auth token and, while one is being promoted, the secondary.
    pub auth_tokens: Vec<Secret<String>>,
}

/// What a verified Twilio webhook is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioResource {
    /// `MessageSid` (`SM…` / `MM…`).
    Message { sid: String },
    /// `CallSid` (`CA…`).
    Call { sid: String },
}

/// A verified Twilio webhook: an inbound message or call, or a status callback for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioEvent {
    pub resource: TwilioResource,
    pub account_sid: String,
    pub from: Option<Pii<String>>,
    pub to: Option<Pii<String>>,
    /// The message text. Personal data: store its SHA-256, never the text.
    pub body: Option<Pii<String>>,
    /// `MessageStatus` (or the older `SmsStatus`) for messages, `CallStatus` for calls.
    pub status: Option<String>,
}

impl TwilioEvent {
    /// The SID, with the status appended when there is one: a status callback arrives once per
    /// status (`queued`, `sent`, `delivered`; `ringing`, `in-progress`, `completed`) with the
    /// same SID, and each is a distinct event; a retry of one of them is not.
    pub fn dedupe_key(&self) -> String {
        let sid = match &self.resource {
            TwilioResource::Message { sid } | TwilioResource::Call { sid } => sid,
        };
        match &self.status {
            Some(status) => format!("{sid}:{status}"),
            None => sid.clone(),
        }
    }
}

/// Verifies the request against `request.public_url`, then parses it. The only way to a
/// [`TwilioEvent`].
pub fn receive(config: &TwilioConfig, request: &InboundRequest<'_>) -> Result<TwilioEvent, WebhookError> {
    let body = verify(config, request)?;
    parse(body)
}

/// The body, in the form the (signed) URL says it was signed in.
enum Body<'b> {
    /// Form parameters, sorted by name then value: the order they are signed in.
    Form(Vec<(String, String)>),
    Json {
        bytes: &'b [u8],
        expected_sha256: String,
    },
}

fn verify<'b>(config: &TwilioConfig, request: &InboundRequest<'b>) -> Result<Body<'b>, WebhookError> {
    CHECKS.body_size(request.body)?;
    let tokens = CHECKS.secrets(&config.auth_tokens)?;
    let url = EndpointUrl::parse(request.public_url)?;
    let header = CHECKS.header(request.headers, "x-twilio-signature")?;
    let signature =
        BASE64.decode(header).ok().filter(|tag| tag.len() == 20).ok_or_else(|| {
            CHECKS.reject(RejectReason::MalformedHeader, "X-Twilio-Signature is not base64 of 20 bytes")
        })?;

    let body = match url.query_value("bodySHA256") {
        Some(expected_sha256) => Body::Json { bytes: request.body, expected_sha256 },
        None => {
            let mut params: Vec<(String, String)> = form_urlencoded::parse(request.body).into_owned().collect();
            params.sort();
            Body::Form(params)
        }
    };
    let mut signed_params = String::new();
    if let Body::Form(params) = &body {
        for (name, value) in params {
            signed_params.push_str(name);
            signed_params.push_str(value);
        }
    }
    let signature = std::slice::from_ref(&signature);
    let matched = url.variants().iter().any(|variant| {
        let signed = format!("{variant}{signed_params}");
        any_hmac_matches(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &tokens, signed.as_bytes(), signature)
    });
    if !matched {
        return Err(CHECKS.reject(RejectReason::BadSignature, "X-Twilio-Signature does not match URL and parameters"));
    }

    if let Body::Json { bytes, expected_sha256 } = &body {
        let actual = hex::encode(digest::digest(&digest::SHA256, bytes));
        if !tokens_match(expected_sha256.to_ascii_lowercase().as_bytes(), actual.as_bytes()) {
            return Err(CHECKS.reject(RejectReason::BodyDigestMismatch, "body SHA-256 differs from bodySHA256"));
        }
    }
    Ok(body)
}

/// The configured endpoint URL, split just enough to add or remove the port.
struct EndpointUrl<'u> {
    url: &'u str,
    /// `scheme://[userinfo@]host`
    origin: &'u str,
    port: Option<&'u str>,
    /// Path, query and fragment, as given.
    rest: &'u str,
    default_port: u16,
}

impl<'u> EndpointUrl<'u> {
    fn parse(url: &'u str) -> Result<Self, WebhookError> {
        let invalid = || CHECKS.reject(RejectReason::InvalidConfiguration, "the endpoint URL is not an http(s) URL");
        let (scheme, after_scheme) = url.split_once("://").ok_or_else(invalid)?;
        let default_port = if scheme.eq_ignore_ascii_case("https") {
            443
        } else if scheme.eq_ignore_ascii_case("http") {
            80
        } else {
            return Err(invalid());
        };
        let authority_len = after_scheme.find(['/', '?', '#']).unwrap_or(after_scheme.len());
        let authority = &after_scheme[..authority_len];
        let host_start = authority.rfind('@').map_or(0, |at| at + 1);
        let host_and_port = &authority[host_start..];
        // An IPv6 literal is bracketed and has colons of its own; the port follows the bracket.
        let port_colon = match host_and_port.rfind(']') {
            Some(bracket) => host_and_port[bracket..].find(':').map(|c| bracket + c),
            None => host_and_port.rfind(':'),
        };
        let (host, port) = match port_colon {
            Some(colon) => (&host_and_port[..colon], Some(&host_and_port[colon + 1..])),
            None => (host_and_port, None),
        };
        if host.is_empty() || port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
            return Err(invalid());
        }
        let origin_len = scheme.len() + "://".len() + host_start + host.len();
        Ok(Self { url, origin: &url[..origin_len], port, rest: &after_scheme[authority_len..], default_port })
    }

    /// The URL as given, then with the default port added or the port removed.
    fn variants(&self) -> [String; 2] {
        let other = match self.port {
            Some(_) => format!("{}{}", self.origin, self.rest),
            None => format!("{}:{}{}", self.origin, self.default_port, self.rest),
        };
        [self.url.to_owned(), other]
    }

    /// The first value of a query parameter, decoded.
    fn query_value(&self, name: &str) -> Option<String> {
        let before_fragment = self.rest.split_once('#').map_or(self.rest, |(r, _)| r);
        let query = before_fragment.split_once('?')?.1;
        form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
    }
}

/// The one value of a parameter; a parameter Praxis reads that is given twice is refused rather
/// than guessed at.
fn field(params: &[(String, String)], name: &str) -> Result<Option<String>, WebhookError> {
    let mut values = params.iter().filter(|(key, _)| key == name).map(|(_, value)| value);
    let first = values.next().cloned();
    if values.next().is_some() {
        return Err(CHECKS.reject(RejectReason::PayloadInvalid, "a parameter Praxis reads is repeated"));
    }
    Ok(first)
}

fn parse(body: Body<'_>) -> Result<TwilioEvent, WebhookError> {
    // A JSON body is read as a flat object carrying the same parameter names as the form.
    let params = match body {
        Body::Form(params) => params,
        Body::Json { bytes, .. } => {
            let object: serde_json::Map<String, serde_json::Value> = CHECKS.json(bytes)?;
            object.into_iter().filter_map(|(key, value)| value.as_str().map(|v| (key, v.to_owned()))).collect()
        }
    };
    let message_sid = field(&params, "MessageSid")?;
    let (resource, status) = match message_sid {
        Some(sid) => {
            let status = match field(&params, "MessageStatus")? {
                Some(status) => Some(status),
                None => field(&params, "SmsStatus")?,
            };
            (TwilioResource::Message { sid: CHECKS.token(sid, MAX_ID_LEN, "MessageSid is not a SID")? }, status)
        }
        None => {
            let sid = field(&params, "CallSid")?
                .ok_or_else(|| CHECKS.reject(RejectReason::PayloadInvalid, "neither MessageSid nor CallSid"))?;
            (
                TwilioResource::Call { sid: CHECKS.token(sid, MAX_ID_LEN, "CallSid is not a SID")? },
                field(&params, "CallStatus")?,
            )
        }
    };
    let account_sid = field(&params, "AccountSid")?
        .ok_or_else(|| CHECKS.reject(RejectReason::PayloadInvalid, "AccountSid is missing"))?;
    Ok(TwilioEvent {
        resource,
        account_sid: CHECKS.token(account_sid, MAX_ID_LEN, "AccountSid is not a SID")?,
        from: CHECKS.optional_text(field(&params, "From")?, MAX_ADDRESS_LEN, "From is too long")?.map(Pii::new),
        to: CHECKS.optional_text(field(&params, "To")?, MAX_ADDRESS_LEN, "To is too long")?.map(Pii::new),
        body: CHECKS.optional_text(field(&params, "Body")?, MAX_TEXT_BYTES, "Body is too long")?.map(Pii::new),
        status: CHECKS.optional_token(status, MAX_LABEL_LEN, "status is not a short label")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variants(url: &str) -> [String; 2] {
        EndpointUrl::parse(url).unwrap().variants()
    }

    #[test]
    fn default_port_is_added_or_removed() {
        assert_eq!(
            variants("https://example.test/twilio?a=1"),
            ["https://example.test/twilio?a=1".to_owned(), "https://example.test:443/twilio?a=1".to_owned()]
        );
        assert_eq!(
            variants("https://example.test:443/twilio"),
            ["https://example.test:443/twilio".to_owned(), "https://example.test/twilio".to_owned()]
        );
        assert_eq!(variants("http://example.test")[1], "http://example.test:80");
        assert_eq!(variants("https://u:p@example.test/x")[1], "https://u:p@example.test:443/x");
        assert_eq!(variants("https://[2001:db8::1]:8443/x")[1], "https://[2001:db8::1]/x");
        assert_eq!(variants("https://[2001:db8::1]/x")[1], "https://[2001:db8::1]:443/x");
    }

    #[test]
    fn only_http_urls_with_a_host_are_endpoints() {
        for bad in
            ["", "example.test/x", "ftp://example.test/x", "https:///x", "https://example.test:/x", "https://h:8a/"]
        {
            let err = EndpointUrl::parse(bad).err().unwrap();
            assert_eq!(err.reason(), RejectReason::InvalidConfiguration, "{bad:?}");
        }
    }

    #[test]
    fn query_values_are_decoded_and_fragment_ignored() {
        let url = EndpointUrl::parse("https://example.test/x?bodySHA256=ab%63&z=1#bodySHA256=no").unwrap();
        assert_eq!(url.query_value("bodySHA256").as_deref(), Some("abc"));
        assert_eq!(url.query_value("missing"), None);
    }
}
