//! The `[webhooks]` configuration section: which practice receives which provider's webhooks,
//! with which secrets, and the per-provider rate limits.
//!
//! ```toml
//! [webhooks]
//! public_base_url = "https://api.example.org"   # Twilio signs the URL it called
//!
//! [webhooks.tenants."0190f0a4-1b2c-7d3e-8f40-123456789abc".stripe]
//! signing_secrets = ["whsec_new", "whsec_old"]   # several while rotating
//!
//! [webhooks.tenants."0190f0a4-1b2c-7d3e-8f40-123456789abc".whatsapp]
//! app_secrets = ["..."]
//! verify_tokens = ["..."]
//! phone_number_ids = ["106540352242922"]   # required when practices share a Meta app
//! ```
//!
//! A practice's endpoint is `/webhooks/{provider}/{practice id}`: the practice comes from the URL
//! the practice registered with its provider and is confirmed by that practice's secret, never
//! read from the unverified body. Secrets are lists so one can be rotated without dropping events
//! signed with the other (see docs/operations.md). Environment variables reach them too, e.g.
//! `PRAXIS__WEBHOOKS__TENANTS__<practice id>__STRIPE__SIGNING_SECRETS='["whsec_..."]'`.
//!
//! The webhook ingest (`app::webhook_ingest`) receives the section as plain values:
//! [`WebhooksConfig::endpoints`], [`WebhooksConfig::budgets`] and
//! [`WebhooksConfig::rejection_audits_per_ip`].

use super::{Environment, Problem};
use app::webhook_ingest::{Endpoints, GroupCommit, PaymentEvents, PracticeEndpoints, ProviderBudgets};
use kernel::{Secret, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use webhooks::{
    ProviderConfig, StandardConfig, StandardSecret, StripeConfig, StripeTolerance, TwilioConfig, VapiConfig,
    WhatsAppConfig,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// The public origin providers call (`https://api.example.org`, optionally with a path
    /// prefix). Twilio signs the full URL it called; it is rebuilt from this, never from the
    /// request's Host header. Required when any practice configures Twilio.
    pub public_base_url: Option<String>,
    /// Verified deliveries per minute, per practice and provider (forged requests fall under the
    /// global per-address limit instead).
    pub rate_limits: WebhookRateLimits,
    /// Rejected webhooks written to the audit trail per source IP and minute; further rejections
    /// from that address are still refused, and counted in the log, but not audited one by one.
    pub rejection_audits_per_ip_per_minute: u32,
    /// How verified deliveries share database transactions (group commit).
    pub group_commit: GroupCommitConfig,
    /// The practices that receive webhooks, keyed by practice id.
    pub tenants: BTreeMap<String, TenantWebhooks>,
}

/// `[webhooks.group_commit]`: deliveries that arrive together are processed in one transaction
/// per practice (see docs/architecture.md, "Group commit for webhooks"). `max_batch = 1` gives
/// every delivery a transaction of its own. (`[audit.read_group_commit]` is
/// `config::audit::ReadGroupCommitConfig`: its defaults are the reads' own.)
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupCommitConfig {
    /// Most deliveries in one shared transaction (1 to 256).
    pub max_batch: usize,
    /// Most shared transactions at once, each holding a database connection (1 to 64).
    pub runners: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        let defaults = GroupCommit::default();
        Self { max_batch: defaults.max_batch, runners: defaults.runners }
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            public_base_url: None,
            rate_limits: WebhookRateLimits::default(),
            rejection_audits_per_ip_per_minute: 10,
            group_commit: GroupCommitConfig::default(),
            tenants: BTreeMap::new(),
        }
    }
}

/// Per-provider budgets (verified deliveries per minute per practice). The defaults are issue #5's:
/// `identity::RateLimits`; Standard Webhooks senders get Vapi's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookRateLimits {
    pub stripe: u32,
    pub whatsapp: u32,
    pub twilio: u32,
    pub vapi: u32,
    pub standard: u32,
}

impl Default for WebhookRateLimits {
    fn default() -> Self {
        let limits = identity::RateLimits::default();
        Self {
            stripe: limits.webhook_stripe.max,
            whatsapp: limits.webhook_whatsapp.max,
            twilio: limits.webhook_twilio.max,
            vapi: limits.webhook_vapi.max,
            standard: limits.webhook_vapi.max,
        }
    }
}

/// One practice's providers; a provider left out has no endpoint (404).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantWebhooks {
    pub stripe: Option<StripeWebhook>,
    pub whatsapp: Option<WhatsAppWebhook>,
    pub twilio: Option<TwilioWebhook>,
    pub vapi: Option<VapiWebhook>,
    pub standard: Option<StandardWebhook>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StripeWebhook {
    /// The endpoint's signing secrets (`whsec_...`), newest first.
    pub signing_secrets: Vec<Secret<String>>,
    /// How far `t` may be from now, either way; 0 disables the check (refused in production).
    pub tolerance_secs: u64,
}

impl Default for StripeWebhook {
    fn default() -> Self {
        Self { signing_secrets: Vec::new(), tolerance_secs: webhooks::stripe::DEFAULT_TOLERANCE.as_secs() }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhatsAppWebhook {
    /// The Meta app secret(s) signing `X-Hub-Signature-256`.
    pub app_secrets: Vec<Secret<String>>,
    /// Tokens accepted in the GET subscription handshake (`hub.verify_token`).
    pub verify_tokens: Vec<Secret<String>>,
    /// The practice's WhatsApp Business phone number ids. Required when practices share a Meta
    /// app (the same app secret): each delivery must then name one of these in
    /// `metadata.phone_number_id`, or it is refused, so a delivery signed for one practice
    /// cannot be posted to another's endpoint.
    pub phone_number_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwilioWebhook {
    /// The account's auth token and, while one is promoted, the secondary.
    pub auth_tokens: Vec<Secret<String>>,
}

/// How Vapi authenticates: `hmac` (a Vapi HMAC credential) or the legacy shared secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VapiMode {
    #[default]
    Hmac,
    /// `x-vapi-secret`: no body integrity and no replay window. Refused in production unless
    /// `allow_legacy_in_production` is set.
    LegacySharedSecret,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VapiWebhook {
    pub mode: VapiMode,
    pub secrets: Vec<Secret<String>>,
    /// `hmac` mode: how far `x-timestamp` may be from now.
    pub tolerance_secs: u64,
    /// The explicit opt-in production needs for `legacy_shared_secret`.
    pub allow_legacy_in_production: bool,
}

impl Default for VapiWebhook {
    fn default() -> Self {
        Self {
            mode: VapiMode::Hmac,
            secrets: Vec::new(),
            tolerance_secs: webhooks::vapi::DEFAULT_TOLERANCE.as_secs(),
            allow_legacy_in_production: false,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StandardWebhook {
    /// `whsec_<base64>` secrets (24 to 64 bytes decoded), newest first.
    pub secrets: Vec<Secret<String>>,
}

impl WebhooksConfig {
    /// Every problem of the section. Problems about one practice name it and the setting:
    /// `webhooks.tenants: <id>.stripe.signing_secrets: ...`.
    pub fn problems(&self, environment: Environment) -> Vec<Problem> {
        let production = environment == Environment::Production;
        let mut problems = Vec::new();
        let mut push = |field: &'static str, message: String| problems.push(Problem { field, message });

        if !(1..=GroupCommit::MAX_BATCH_LIMIT).contains(&self.group_commit.max_batch) {
            push("webhooks.group_commit.max_batch", format!("must be between 1 and {}", GroupCommit::MAX_BATCH_LIMIT));
        }
        if !(1..=GroupCommit::RUNNERS_LIMIT).contains(&self.group_commit.runners) {
            push("webhooks.group_commit.runners", format!("must be between 1 and {}", GroupCommit::RUNNERS_LIMIT));
        }
        let limits = self.rate_limits;
        for (provider, max) in [
            ("stripe", limits.stripe),
            ("whatsapp", limits.whatsapp),
            ("twilio", limits.twilio),
            ("vapi", limits.vapi),
            ("standard", limits.standard),
        ] {
            if max == 0 {
                push("webhooks.rate_limits", format!("{provider}: must be greater than 0"));
            }
        }
        if self.rejection_audits_per_ip_per_minute == 0 {
            push("webhooks.rejection_audits_per_ip_per_minute", "must be greater than 0".into());
        }
        if let Some(message) = self.public_base_url.as_deref().and_then(|url| base_url_problem(url, production)) {
            push("webhooks.public_base_url", message);
        }

        for (tenant, providers) in &self.tenants {
            let mut tenant_problem = |setting: &str, message: &str| {
                push("webhooks.tenants", format!("{tenant}.{setting}: {message}"));
            };
            if tenant.parse::<uuid::Uuid>().is_err() {
                tenant_problem("", "the key is not a practice id (a UUID)");
            }
            let mut secrets = |setting: &str, list: &[Secret<String>], required: bool| {
                if list.iter().any(|s| s.expose_secret().trim().is_empty()) {
                    tenant_problem(setting, "an entry is empty");
                }
                if required && list.is_empty() {
                    tenant_problem(setting, "required: at least one secret for a configured provider in production");
                }
            };
            if let Some(stripe) = &providers.stripe {
                secrets("stripe.signing_secrets", &stripe.signing_secrets, production);
            }
            if let Some(whatsapp) = &providers.whatsapp {
                secrets("whatsapp.app_secrets", &whatsapp.app_secrets, production);
                secrets("whatsapp.verify_tokens", &whatsapp.verify_tokens, false);
            }
            if let Some(twilio) = &providers.twilio {
                secrets("twilio.auth_tokens", &twilio.auth_tokens, production);
            }
            if let Some(vapi) = &providers.vapi {
                secrets("vapi.secrets", &vapi.secrets, production);
            }
            if let Some(standard) = &providers.standard {
                secrets("standard.secrets", &standard.secrets, production);
                for secret in &standard.secrets {
                    if !secret.expose_secret().trim().is_empty() && StandardSecret::parse(secret).is_err() {
                        tenant_problem("standard.secrets", "an entry is not whsec_ + base64 of 24 to 64 bytes");
                    }
                }
            }
            if let Some(stripe) = &providers.stripe
                && production
                && stripe.tolerance_secs == 0
            {
                tenant_problem("stripe.tolerance_secs", "0 disables the replay window; not allowed in production");
            }
            if let Some(vapi) = &providers.vapi {
                if vapi.mode == VapiMode::Hmac && vapi.tolerance_secs == 0 {
                    tenant_problem("vapi.tolerance_secs", "must be greater than 0");
                }
                if production && vapi.mode == VapiMode::LegacySharedSecret && !vapi.allow_legacy_in_production {
                    tenant_problem(
                        "vapi.mode",
                        "legacy_shared_secret has no body integrity or replay window; production needs \
                         allow_legacy_in_production = true to use it",
                    );
                }
            }
        }
        // Practices sharing a Meta app (the same app secret): the signature cannot tell their
        // deliveries apart, so each must name its phone number ids, and no id two practices.
        let whatsapp: Vec<(&String, &WhatsAppWebhook)> =
            self.tenants.iter().filter_map(|(tenant, t)| t.whatsapp.as_ref().map(|w| (tenant, w))).collect();
        for (i, (tenant, mine)) in whatsapp.iter().enumerate() {
            for (other, theirs) in &whatsapp[i + 1..] {
                let shared_secret = mine.app_secrets.iter().any(|a| {
                    !a.expose_secret().is_empty()
                        && theirs.app_secrets.iter().any(|b| a.expose_secret() == b.expose_secret())
                });
                if shared_secret && (mine.phone_number_ids.is_empty() || theirs.phone_number_ids.is_empty()) {
                    problems.push(Problem {
                        field: "webhooks.tenants",
                        message: format!(
                            "{tenant} and {other} share a WhatsApp app secret: both need whatsapp.phone_number_ids"
                        ),
                    });
                }
                if mine.phone_number_ids.iter().any(|id| theirs.phone_number_ids.contains(id)) {
                    problems.push(Problem {
                        field: "webhooks.tenants",
                        message: format!("{tenant} and {other} list the same whatsapp.phone_number_ids entry"),
                    });
                }
            }
        }
        if self.public_base_url.is_none() && self.tenants.values().any(|t| t.twilio.is_some()) {
            problems.push(Problem {
                field: "webhooks.public_base_url",
                message: "required when a practice configures Twilio (Twilio signs the URL it called)".into(),
            });
        }
        problems
    }
}

impl WebhooksConfig {
    /// The configured endpoints, ready for `webhooks::receive`. Entries [`WebhooksConfig::problems`]
    /// refuses (a key that is not a practice id, a Standard Webhooks secret that does not decode)
    /// are left out here: a server never starts with them.
    pub fn endpoints(&self) -> Endpoints {
        let mut endpoints = Endpoints::new(self.public_base_url.as_deref());
        for (key, providers) in &self.tenants {
            let Ok(id) = key.parse::<uuid::Uuid>() else { continue };
            endpoints = endpoints.with_practice(TenantId::from_uuid(id), providers.endpoints());
        }
        endpoints
    }

    /// The per-practice budget of each provider: `rate_limits` verified deliveries a minute.
    pub fn budgets(&self) -> ProviderBudgets {
        let per_minute = |max| cache_redis::Limit::new(max, Duration::from_secs(60));
        let limits = self.rate_limits;
        ProviderBudgets {
            stripe: per_minute(limits.stripe),
            whatsapp: per_minute(limits.whatsapp),
            twilio: per_minute(limits.twilio),
            vapi: per_minute(limits.vapi),
            standard: per_minute(limits.standard),
        }
    }

    /// How verified deliveries share transactions.
    pub fn group_commit(&self) -> GroupCommit {
        // Deliveries start runners eagerly: 4 at once beat fewer (see `GroupCommit::default`).
        GroupCommit {
            max_batch: self.group_commit.max_batch,
            runners: self.group_commit.runners,
            spare_runner_after: std::time::Duration::ZERO,
        }
    }

    /// How many `webhook.rejected` entries one source address may cause a minute.
    pub fn rejection_audits_per_ip(&self) -> cache_redis::Limit {
        cache_redis::Limit::new(self.rejection_audits_per_ip_per_minute, Duration::from_secs(60))
    }
}

impl TenantWebhooks {
    /// This practice's configured providers.
    fn endpoints(&self) -> PracticeEndpoints {
        let mut endpoints = PracticeEndpoints::default();
        if let Some(stripe) = &self.stripe {
            let tolerance = match stripe.tolerance_secs {
                0 => StripeTolerance::Disabled,
                secs => StripeTolerance::Within(Duration::from_secs(secs)),
            };
            endpoints = endpoints.with_provider(ProviderConfig::Stripe(StripeConfig {
                signing_secrets: stripe.signing_secrets.clone(),
                tolerance,
            }));
        }
        if let Some(whatsapp) = &self.whatsapp {
            endpoints = endpoints
                .with_provider(ProviderConfig::WhatsApp(WhatsAppConfig {
                    app_secrets: whatsapp.app_secrets.clone(),
                    phone_number_ids: whatsapp.phone_number_ids.clone(),
                }))
                .with_whatsapp_verify_tokens(whatsapp.verify_tokens.clone());
        }
        if let Some(twilio) = &self.twilio {
            endpoints = endpoints
                .with_provider(ProviderConfig::Twilio(TwilioConfig { auth_tokens: twilio.auth_tokens.clone() }));
        }
        if let Some(vapi) = &self.vapi {
            let config = match vapi.mode {
                VapiMode::Hmac => VapiConfig::Hmac {
                    secrets: vapi.secrets.clone(),
                    tolerance: Duration::from_secs(vapi.tolerance_secs),
                },
                VapiMode::LegacySharedSecret => VapiConfig::LegacySharedSecret { secrets: vapi.secrets.clone() },
            };
            endpoints = endpoints.with_provider(ProviderConfig::Vapi(config));
        }
        if let Some(standard) = &self.standard {
            let secrets = standard.secrets.iter().filter_map(|s| StandardSecret::parse(s).ok()).collect();
            endpoints = endpoints.with_provider(ProviderConfig::Standard(StandardConfig { secrets }));
        }
        endpoints
    }
}

/// Which Stripe events may move payment state in `environment`: in production only live-mode
/// events, so a test-mode signing secret left in the list cannot mark a real appointment paid;
/// test mode everywhere else (development runs against Stripe's test mode).
pub fn payment_events(environment: Environment) -> PaymentEvents {
    match environment {
        Environment::Production => PaymentEvents::LiveOnly,
        Environment::Development => PaymentEvents::LiveAndTest,
    }
}

/// Why `url` cannot be the public base URL, if it cannot.
fn base_url_problem(url: &str, production: bool) -> Option<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some(format!("{url:?} is not an http(s) URL such as https://api.example.org"));
    };
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.starts_with('/') {
        return Some(format!("{url:?} is not an http(s) URL such as https://api.example.org"));
    }
    if rest.contains(['?', '#']) {
        return Some("must not have a query or fragment".into());
    }
    if production && scheme != "https" {
        return Some("must be https:// in production".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> Secret<String> {
        Secret::new(text.to_owned())
    }

    fn messages(config: &WebhooksConfig, environment: Environment) -> Vec<String> {
        config.problems(environment).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn group_commit_bounds_are_checked_and_named() {
        let mut config = WebhooksConfig::default();
        assert!(config.problems(Environment::Development).is_empty());
        assert_eq!(config.group_commit(), GroupCommit::default());
        config.group_commit = GroupCommitConfig { max_batch: 0, runners: GroupCommit::RUNNERS_LIMIT + 1 };
        let fields: Vec<_> = config.problems(Environment::Development).into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["webhooks.group_commit.max_batch", "webhooks.group_commit.runners"]);
        config.group_commit = GroupCommitConfig { max_batch: 1, runners: 8 };
        assert!(config.problems(Environment::Development).is_empty());
        assert_eq!(config.group_commit(), GroupCommit { max_batch: 1, runners: 8, ..GroupCommit::default() });
    }

    #[test]
    fn production_refuses_empty_secret_lists_and_names_each() {
        let mut config = WebhooksConfig::default();
        let tenant = uuid::Uuid::new_v4().to_string();
        config.tenants.insert(
            tenant.clone(),
            TenantWebhooks {
                stripe: Some(StripeWebhook::default()),
                twilio: Some(TwilioWebhook::default()),
                ..TenantWebhooks::default()
            },
        );
        let found = messages(&config, Environment::Production);
        assert!(
            found
                .iter()
                .any(|m| m.starts_with(&format!("webhooks.tenants: {tenant}.stripe.signing_secrets: required"))),
            "{found:?}"
        );
        assert!(
            found.iter().any(|m| m.starts_with(&format!("webhooks.tenants: {tenant}.twilio.auth_tokens: required"))),
            "{found:?}"
        );
        assert!(found.iter().any(|m| m.starts_with("webhooks.public_base_url: required")), "{found:?}");
        // Development tolerates the empty lists (everything is refused at run time) but not a
        // missing Twilio URL.
        let found = messages(&config, Environment::Development);
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn practices_sharing_a_meta_app_must_each_name_their_own_phone_numbers() {
        let whatsapp = |ids: &[&str]| TenantWebhooks {
            whatsapp: Some(WhatsAppWebhook {
                app_secrets: vec![secret("one-app-for-both")],
                verify_tokens: vec![],
                phone_number_ids: ids.iter().map(|id| (*id).to_owned()).collect(),
            }),
            ..TenantWebhooks::default()
        };
        let (a, b) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
        let mut config = WebhooksConfig::default();
        config.tenants.insert(a.clone(), whatsapp(&["1001"]));
        config.tenants.insert(b.clone(), whatsapp(&[]));
        let found = messages(&config, Environment::Development);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("share a WhatsApp app secret: both need whatsapp.phone_number_ids"), "{found:?}");

        config.tenants.insert(b.clone(), whatsapp(&["1001"]));
        let found = messages(&config, Environment::Development);
        assert!(found.iter().any(|m| m.contains("list the same whatsapp.phone_number_ids entry")), "{found:?}");

        config.tenants.insert(b, whatsapp(&["2002"]));
        assert_eq!(messages(&config, Environment::Development), Vec::<String>::new());
    }

    #[test]
    fn vapi_legacy_needs_an_explicit_opt_in_in_production() {
        let mut config = WebhooksConfig::default();
        let tenant = uuid::Uuid::new_v4().to_string();
        let vapi =
            VapiWebhook { mode: VapiMode::LegacySharedSecret, secrets: vec![secret("s")], ..VapiWebhook::default() };
        config.tenants.insert(tenant.clone(), TenantWebhooks { vapi: Some(vapi), ..TenantWebhooks::default() });
        assert_eq!(messages(&config, Environment::Development), Vec::<String>::new());
        let found = messages(&config, Environment::Production);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with(&format!("webhooks.tenants: {tenant}.vapi.mode: legacy_shared_secret")));
        if let Some(vapi) = config.tenants.get_mut(&tenant).and_then(|t| t.vapi.as_mut()) {
            vapi.allow_legacy_in_production = true;
        }
        assert_eq!(messages(&config, Environment::Production), Vec::<String>::new());
    }

    #[test]
    fn keys_urls_and_standard_secrets_are_checked() {
        let mut config = WebhooksConfig {
            public_base_url: Some("http://api.example.org/prefix".into()),
            ..WebhooksConfig::default()
        };
        let standard = StandardWebhook { secrets: vec![secret("whsec_notbase64!")] };
        config
            .tenants
            .insert("practice-1".into(), TenantWebhooks { standard: Some(standard), ..TenantWebhooks::default() });
        let found = messages(&config, Environment::Production);
        assert!(found.contains(&"webhooks.public_base_url: must be https:// in production".to_owned()), "{found:?}");
        assert!(found.iter().any(|m| m.contains("practice-1.: the key is not a practice id")), "{found:?}");
        assert!(found.iter().any(|m| m.contains("practice-1.standard.secrets: an entry is not whsec_")), "{found:?}");
        for bad in ["api.example.org", "ftp://x", "https://", "https://x/?q=1"] {
            assert!(base_url_problem(bad, false).is_some(), "{bad}");
        }
        assert!(base_url_problem("https://api.example.org", true).is_none());
    }

    #[test]
    fn only_production_ignores_test_mode_payment_events() {
        assert_eq!(payment_events(Environment::Production), PaymentEvents::LiveOnly);
        assert_eq!(payment_events(Environment::Development), PaymentEvents::LiveAndTest);
    }

    #[test]
    fn secrets_are_masked_when_printed() {
        let stripe = StripeWebhook { signing_secrets: vec![secret("whsec_do-not-print")], ..StripeWebhook::default() };
        let printed = format!("{stripe:?} {}", toml::to_string(&stripe).unwrap_or_default());
        assert!(!printed.contains("do-not-print"), "{printed}");
    }
}
