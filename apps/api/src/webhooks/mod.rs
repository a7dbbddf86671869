//! Inbound webhooks in the application: which practice and provider an endpoint serves (from the
//! `[webhooks]` configuration), de-duplication (Redis claims + the Postgres inbox) and the
//! handlers. The HTTP side is `crate::routes::webhooks`; verification and parsing are the pure
//! `webhooks` crate.

pub mod batch;
pub mod config;
pub mod ingest;

use crate::webhooks::config::{VapiMode, WebhooksConfig};
use kernel::{Secret, TenantId};
use std::collections::HashMap;
use std::time::Duration;
use webhooks::{
    Provider, ProviderConfig, StandardConfig, StandardSecret, StripeConfig, StripeTolerance, TwilioConfig, VapiConfig,
    WhatsAppConfig,
};

/// The providers, by the name used in endpoint paths and configuration.
pub const PROVIDERS: [(&str, Provider); 5] = [
    ("stripe", Provider::Stripe),
    ("whatsapp", Provider::WhatsApp),
    ("twilio", Provider::Twilio),
    ("vapi", Provider::Vapi),
    ("standard", Provider::Standard),
];

/// The provider an endpoint path names.
pub fn provider_from_path(name: &str) -> Option<Provider> {
    PROVIDERS.iter().find(|(path, _)| *path == name).map(|(_, provider)| *provider)
}

/// One practice's configured providers, ready for `webhooks::receive`.
#[derive(Debug, Clone, Default)]
pub struct TenantEndpoints {
    configs: HashMap<Provider, ProviderConfig>,
    whatsapp_verify_tokens: Vec<Secret<String>>,
}

impl TenantEndpoints {
    pub fn provider(&self, provider: Provider) -> Option<&ProviderConfig> {
        self.configs.get(&provider)
    }

    pub fn whatsapp_verify_tokens(&self) -> Option<&[Secret<String>]> {
        self.configs.contains_key(&Provider::WhatsApp).then_some(self.whatsapp_verify_tokens.as_slice())
    }
}

/// Every configured endpoint, built once from the configuration.
#[derive(Debug, Default)]
pub struct Endpoints {
    tenants: HashMap<TenantId, TenantEndpoints>,
    public_base_url: Option<String>,
}

impl Endpoints {
    /// Builds the endpoints. Entries `Config::validate` refuses (a key that is not a practice
    /// id, a Standard Webhooks secret that does not decode) are left out here: a server never
    /// starts with them.
    pub fn from_config(config: &WebhooksConfig) -> Self {
        let mut tenants = HashMap::new();
        for (key, providers) in &config.tenants {
            let Ok(id) = key.parse::<uuid::Uuid>() else { continue };
            let mut endpoints = TenantEndpoints::default();
            if let Some(stripe) = &providers.stripe {
                let tolerance = match stripe.tolerance_secs {
                    0 => StripeTolerance::Disabled,
                    secs => StripeTolerance::Within(Duration::from_secs(secs)),
                };
                endpoints.configs.insert(
                    Provider::Stripe,
                    ProviderConfig::Stripe(StripeConfig { signing_secrets: stripe.signing_secrets.clone(), tolerance }),
                );
            }
            if let Some(whatsapp) = &providers.whatsapp {
                endpoints.configs.insert(
                    Provider::WhatsApp,
                    ProviderConfig::WhatsApp(WhatsAppConfig {
                        app_secrets: whatsapp.app_secrets.clone(),
                        phone_number_ids: whatsapp.phone_number_ids.clone(),
                    }),
                );
                endpoints.whatsapp_verify_tokens.clone_from(&whatsapp.verify_tokens);
            }
            if let Some(twilio) = &providers.twilio {
                endpoints.configs.insert(
                    Provider::Twilio,
                    ProviderConfig::Twilio(TwilioConfig { auth_tokens: twilio.auth_tokens.clone() }),
                );
            }
            if let Some(vapi) = &providers.vapi {
                let config = match vapi.mode {
                    VapiMode::Hmac => VapiConfig::Hmac {
                        secrets: vapi.secrets.clone(),
                        tolerance: Duration::from_secs(vapi.tolerance_secs),
                    },
                    VapiMode::LegacySharedSecret => VapiConfig::LegacySharedSecret { secrets: vapi.secrets.clone() },
                };
                endpoints.configs.insert(Provider::Vapi, ProviderConfig::Vapi(config));
            }
            if let Some(standard) = &providers.standard {
                let secrets = standard.secrets.iter().filter_map(|s| StandardSecret::parse(s).ok()).collect();
                endpoints.configs.insert(Provider::Standard, ProviderConfig::Standard(StandardConfig { secrets }));
            }
            tenants.insert(TenantId::from_uuid(id), endpoints);
        }
        let public_base_url = config.public_base_url.as_ref().map(|url| url.trim_end_matches('/').to_owned());
        Self { tenants, public_base_url }
    }

    pub fn tenant(&self, tenant: TenantId) -> Option<&TenantEndpoints> {
        self.tenants.get(&tenant)
    }

    /// The practice of `/webhooks/{provider}` without a practice id: the one practice that
    /// configures the provider, for single-practice deployments. `None` when none or several do
    /// (then only the path with the practice id reaches an endpoint).
    pub fn sole_tenant(&self, provider: Provider) -> Option<TenantId> {
        let mut configured = self.tenants.iter().filter(|(_, t)| t.provider(provider).is_some()).map(|(id, _)| *id);
        let first = configured.next()?;
        configured.next().is_none().then_some(first)
    }

    /// The URL a provider called, as it signed it: the configured public base URL, the request
    /// path and its raw query. Empty when no base URL is configured (Twilio then refuses with
    /// `invalid_configuration`; config validation requires one for Twilio).
    pub fn public_url(&self, path: &str, query: &str) -> String {
        match &self.public_base_url {
            None => String::new(),
            Some(base) if query.is_empty() => format!("{base}{path}"),
            Some(base) => format!("{base}{path}?{query}"),
        }
    }

    /// The per-practice budget of a provider.
    pub fn rate_limit(config: &WebhooksConfig, provider: Provider) -> cache_redis::Limit {
        let limits = config.rate_limits;
        let max = match provider {
            Provider::Stripe => limits.stripe,
            Provider::WhatsApp => limits.whatsapp,
            Provider::Twilio => limits.twilio,
            Provider::Vapi => limits.vapi,
            Provider::Standard => limits.standard,
        };
        cache_redis::Limit::new(max, Duration::from_secs(60))
    }
}
