//! Inbound webhooks: verified on the raw bytes, then parsed into bounded, typed events.
//!
//! Pure: no I/O and no clock reads (`now` is handed in). The HTTP layer gives [`receive`] the
//! tenant's configuration for the provider, the headers, the body bytes exactly as received,
//! the endpoint's configured public URL and the time of receipt, and gets back either an event
//! with its de-duplication keys or a [`WebhookError`] whose [`RejectReason`] picks the status
//! and the audit entry's reason.
//!
//! Rules that hold for every provider:
//!
//! - The body is at most [`MAX_BODY_BYTES`], checked before any hashing.
//! - Verification runs on the raw bytes before anything is parsed; parsing is reachable only
//!   through a successful verification (each provider's `receive` is the only public path).
//! - Every tenant may configure several secrets per provider, so a secret can be rotated without
//!   dropping events signed with the old one: a request is accepted if any secret verifies it.
//!   Empty secrets do not count; with none, everything is refused. No flag skips verification.
//! - Signatures are compared in constant time (`ring::hmac::verify`); shared tokens too.
//! - Errors and `Debug` output never contain secrets, signatures, header values or body text.
//!   Secrets are [`kernel::Secret`] (zeroized on drop, masked when printed); phone numbers and
//!   message texts are [`kernel::Pii`].
//! - A signature header given twice is refused rather than guessed at. A timestamp verdict is
//!   only given once the signature has matched.
//!
//! Providers ([`Provider`]):
//!
//! - **Stripe** ([`stripe`]): `Stripe-Signature: t=…,v1=…[,v1=…]`; hex HMAC-SHA256 of
//!   `"{t}.{body}"` keyed with the whole `whsec_…` string; only `v1` counts; `t` within 300 s
//!   (configurable, or disabled as Stripe's SDKs allow) of `now`, past or future. Event `id` is
//!   the dedupe key; payment events carry `data.object.id` and `metadata.appointment_id`.
//! - **WhatsApp / Meta** ([`whatsapp`]): `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app
//!   secret, body)>`; [`whatsapp::verify_subscription`] answers the GET handshake. At most 10
//!   entries, 50 messages and 50 statuses per delivery. Dedupe keys: message ids, and
//!   `id:status` for status updates.
//! - **Twilio** ([`twilio`]): `X-Twilio-Signature` = base64 HMAC-SHA1(auth token) of the URL
//!   followed by the sorted form parameters (name + value each), or of the URL alone when its
//!   query has `bodySHA256`, which must then equal the body's hex SHA-256. The URL is tried as
//!   given, and with the default port added or removed. Dedupe key: the SID (`:status` added
//!   for status callbacks).
//! - **Vapi** ([`vapi`]): explicitly either the HMAC credential (`x-signature` = hex
//!   HMAC-SHA256 of `"{x-timestamp}.{body}"`, timestamp in seconds or milliseconds within the
//!   tolerance) or the legacy `x-vapi-secret` shared secret; never one as a fallback for the
//!   other. Dedupe key: call id and message type (and status).
//! - **Standard Webhooks** ([`standard`]): `webhook-id`, `webhook-timestamp`,
//!   `webhook-signature: v1,<base64> …`; HMAC-SHA256 keyed with the base64-decoded `whsec_`
//!   secret over `"{id}.{timestamp}.{body}"`; five minutes either way. Dedupe key: `webhook-id`.
//!
//! Replays inside a tolerance window, and replays of providers without a signed timestamp
//! (WhatsApp, Twilio, Vapi legacy), are stopped by the caller's idempotency store keyed on the
//! dedupe keys (namespace them by tenant and [`Provider::slug`]).
//!
//! Also here: [`is_stop_keyword`], the opt-out rule for inbound message texts.

mod error;
mod fields;
mod request;
pub mod standard;
mod stop;
pub mod stripe;
pub mod twilio;
pub mod vapi;
pub mod whatsapp;

pub use error::{Provider, RejectReason, WebhookError};
pub use request::{Headers, InboundRequest, MAX_BODY_BYTES};
pub use standard::{StandardConfig, StandardEvent, StandardSecret};
pub use stop::is_stop_keyword;
pub use stripe::{StripeConfig, StripeEvent, StripeEventKind, StripePayment, StripeTolerance};
pub use twilio::{TwilioConfig, TwilioEvent, TwilioResource};
pub use vapi::{VapiConfig, VapiEvent};
pub use whatsapp::{WhatsAppConfig, WhatsAppEvent, WhatsAppMessage, WhatsAppStatus};

/// One tenant's configuration for the provider an endpoint serves.
#[derive(Debug, Clone)]
pub enum ProviderConfig {
    Stripe(StripeConfig),
    WhatsApp(WhatsAppConfig),
    Twilio(TwilioConfig),
    Vapi(VapiConfig),
    Standard(StandardConfig),
}

impl ProviderConfig {
    pub fn provider(&self) -> Provider {
        match self {
            Self::Stripe(_) => Provider::Stripe,
            Self::WhatsApp(_) => Provider::WhatsApp,
            Self::Twilio(_) => Provider::Twilio,
            Self::Vapi(_) => Provider::Vapi,
            Self::Standard(_) => Provider::Standard,
        }
    }
}

/// A verified, parsed webhook.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEvent {
    Stripe(StripeEvent),
    WhatsApp(WhatsAppEvent),
    Twilio(TwilioEvent),
    Vapi(VapiEvent),
    Standard(StandardEvent),
}

impl WebhookEvent {
    pub fn provider(&self) -> Provider {
        match self {
            Self::Stripe(_) => Provider::Stripe,
            Self::WhatsApp(_) => Provider::WhatsApp,
            Self::Twilio(_) => Provider::Twilio,
            Self::Vapi(_) => Provider::Vapi,
            Self::Standard(_) => Provider::Standard,
        }
    }

    /// The keys under which the caller records this delivery as processed; unique within the
    /// provider. One key for most providers; a WhatsApp delivery has one per message and status
    /// (and none when it carries neither).
    pub fn dedupe_keys(&self) -> Vec<String> {
        match self {
            Self::Stripe(event) => vec![event.dedupe_key().to_owned()],
            Self::WhatsApp(event) => event.dedupe_keys(),
            Self::Twilio(event) => vec![event.dedupe_key()],
            Self::Vapi(event) => vec![event.dedupe_key()],
            Self::Standard(event) => vec![event.dedupe_key().to_owned()],
        }
    }
}

/// Verifies a webhook with the tenant's configuration for its provider, then parses it.
pub fn receive(config: &ProviderConfig, request: &InboundRequest<'_>) -> Result<WebhookEvent, WebhookError> {
    match config {
        ProviderConfig::Stripe(config) => stripe::receive(config, request).map(WebhookEvent::Stripe),
        ProviderConfig::WhatsApp(config) => whatsapp::receive(config, request).map(WebhookEvent::WhatsApp),
        ProviderConfig::Twilio(config) => twilio::receive(config, request).map(WebhookEvent::Twilio),
        ProviderConfig::Vapi(config) => vapi::receive(config, request).map(WebhookEvent::Vapi),
        ProviderConfig::Standard(config) => standard::receive(config, request).map(WebhookEvent::Standard),
    }
}
