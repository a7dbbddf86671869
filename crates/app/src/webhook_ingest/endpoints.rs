//! Which practice receives which provider's webhooks, with which secrets, and the budgets that
//! limit them: plain values, built by the wiring from its configuration (`[webhooks]` in
//! `apps/api`).

use cache_redis::Limit;
use kernel::{Secret, TenantId};
use std::collections::HashMap;
use webhooks::{Provider, ProviderConfig};

/// One practice's configured providers, ready for `webhooks::receive`.
#[derive(Debug, Clone, Default)]
pub struct PracticeEndpoints {
    configs: HashMap<Provider, ProviderConfig>,
    whatsapp_verify_tokens: Vec<Secret<String>>,
}

impl PracticeEndpoints {
    /// Configures the provider `config` is for (replacing an earlier configuration of it).
    pub fn with_provider(mut self, config: ProviderConfig) -> Self {
        let provider = match &config {
            ProviderConfig::Stripe(_) => Provider::Stripe,
            ProviderConfig::WhatsApp(_) => Provider::WhatsApp,
            ProviderConfig::Twilio(_) => Provider::Twilio,
            ProviderConfig::Vapi(_) => Provider::Vapi,
            ProviderConfig::Standard(_) => Provider::Standard,
        };
        self.configs.insert(provider, config);
        self
    }

    /// The tokens the WhatsApp subscription handshake accepts (`hub.verify_token`).
    pub fn with_whatsapp_verify_tokens(mut self, tokens: Vec<Secret<String>>) -> Self {
        self.whatsapp_verify_tokens = tokens;
        self
    }

    pub fn provider(&self, provider: Provider) -> Option<&ProviderConfig> {
        self.configs.get(&provider)
    }

    /// The handshake's tokens; `None` when WhatsApp is not configured.
    pub fn whatsapp_verify_tokens(&self) -> Option<&[Secret<String>]> {
        self.configs.contains_key(&Provider::WhatsApp).then_some(self.whatsapp_verify_tokens.as_slice())
    }
}

/// Every configured endpoint.
#[derive(Debug, Default)]
pub struct Endpoints {
    practices: HashMap<TenantId, PracticeEndpoints>,
    public_base_url: Option<String>,
}

impl Endpoints {
    /// `public_base_url`: the public origin providers call (Twilio signs the full URL it
    /// called, rebuilt from this, never from the request's Host header); a trailing `/` is
    /// dropped.
    pub fn new(public_base_url: Option<&str>) -> Self {
        Self {
            practices: HashMap::new(),
            public_base_url: public_base_url.map(|url| url.trim_end_matches('/').to_owned()),
        }
    }

    /// Adds (or replaces) one practice's endpoints.
    pub fn with_practice(mut self, tenant: TenantId, endpoints: PracticeEndpoints) -> Self {
        self.practices.insert(tenant, endpoints);
        self
    }

    pub fn practice(&self, tenant: TenantId) -> Option<&PracticeEndpoints> {
        self.practices.get(&tenant)
    }

    /// The practice of `/webhooks/{provider}` without a practice id: the one practice that
    /// configures the provider, for single-practice deployments. `None` when none or several do
    /// (then only the path with the practice id reaches an endpoint).
    pub fn sole_practice(&self, provider: Provider) -> Option<TenantId> {
        let mut configured = self.practices.iter().filter(|(_, p)| p.provider(provider).is_some()).map(|(id, _)| *id);
        let first = configured.next()?;
        configured.next().is_none().then_some(first)
    }

    /// The URL a provider called, as it signed it: the configured public base URL, the request
    /// path and its raw query. Empty when no base URL is configured (Twilio then refuses with
    /// `invalid_configuration`; the configuration's validation requires one for Twilio).
    pub fn public_url(&self, path: &str, query: &str) -> String {
        match &self.public_base_url {
            None => String::new(),
            Some(base) if query.is_empty() => format!("{base}{path}"),
            Some(base) => format!("{base}{path}?{query}"),
        }
    }
}

/// Verified deliveries allowed per practice, by provider (forged requests fall under the
/// doors' per-address limit instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderBudgets {
    pub stripe: Limit,
    pub whatsapp: Limit,
    pub twilio: Limit,
    pub vapi: Limit,
    pub standard: Limit,
}

impl ProviderBudgets {
    pub fn of(&self, provider: Provider) -> Limit {
        match provider {
            Provider::Stripe => self.stripe,
            Provider::WhatsApp => self.whatsapp,
            Provider::Twilio => self.twilio,
            Provider::Vapi => self.vapi,
            Provider::Standard => self.standard,
        }
    }
}

/// Which Stripe events may move an appointment's payment state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentEvents {
    /// Live-mode events only (production): a test-mode signing secret left in the list cannot
    /// mark a real appointment paid.
    LiveOnly,
    /// Test-mode events too (development runs against Stripe's test mode).
    LiveAndTest,
}

impl PaymentEvents {
    /// Whether an event of this mode (`livemode`) may move payment state.
    pub fn apply(self, livemode: bool) -> bool {
        livemode || self == PaymentEvents::LiveAndTest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_production_only_live_stripe_events_move_payment_state() {
        assert!(PaymentEvents::LiveOnly.apply(true));
        assert!(!PaymentEvents::LiveOnly.apply(false));
        assert!(PaymentEvents::LiveAndTest.apply(false));
        assert!(PaymentEvents::LiveAndTest.apply(true));
    }

    #[test]
    fn the_sole_practice_is_the_only_one_configuring_the_provider() {
        let standard = || ProviderConfig::Standard(webhooks::StandardConfig { secrets: Vec::new() });
        let (a, b) = (TenantId::new(), TenantId::new());
        let one = Endpoints::new(Some("https://api.example.org/"))
            .with_practice(a, PracticeEndpoints::default().with_provider(standard()));
        assert_eq!(one.sole_practice(Provider::Standard), Some(a));
        assert_eq!(one.sole_practice(Provider::Stripe), None);
        assert_eq!(one.public_url("/webhooks/standard", ""), "https://api.example.org/webhooks/standard");
        assert_eq!(one.public_url("/w", "a=1"), "https://api.example.org/w?a=1");
        let two = one.with_practice(b, PracticeEndpoints::default().with_provider(standard()));
        assert_eq!(two.sole_practice(Provider::Standard), None);
    }
}
