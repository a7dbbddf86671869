//! Rate-limit and lockout policy values. The counting happens elsewhere (cache-redis); this is
//! what the limits are and what they are keyed by, so every adapter and test agrees.
//!
//! Login throttling counts *failed* attempts per account and client IP: an attacker guessing one
//! account's password is slowed to 5 guesses per 15 minutes from each address, while a real user
//! who signs in successfully never uses up the budget. Keying by account *and* IP (rather than by
//! account alone) keeps an attacker from locking a victim out by failing on purpose; the global
//! per-IP limit bounds spraying many accounts from one address.

use std::net::IpAddr;
use std::time::Duration;

/// At most `max` events per fixed or sliding `window` (the limiter's choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    pub max: u32,
    pub window: Duration,
}

impl Limit {
    pub const fn per_minute(max: u32) -> Self {
        Self { max, window: Duration::from_secs(60) }
    }
}

/// Which counter a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RateLimitClass {
    /// Every request, per client IP.
    Global,
    /// Failed sign-ins, per account and client IP. Successful sign-ins are not counted.
    Login,
    /// Authenticated requests, per user or API key.
    User,
    /// Inbound webhooks, per provider.
    WebhookWhatsapp,
    WebhookTwilio,
    WebhookStripe,
    WebhookVapi,
}

impl RateLimitClass {
    pub const ALL: [RateLimitClass; 7] = [
        RateLimitClass::Global,
        RateLimitClass::Login,
        RateLimitClass::User,
        RateLimitClass::WebhookWhatsapp,
        RateLimitClass::WebhookTwilio,
        RateLimitClass::WebhookStripe,
        RateLimitClass::WebhookVapi,
    ];

    /// Stable name, used as the counter key prefix and in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            RateLimitClass::Global => "global",
            RateLimitClass::Login => "login",
            RateLimitClass::User => "user",
            RateLimitClass::WebhookWhatsapp => "webhook_whatsapp",
            RateLimitClass::WebhookTwilio => "webhook_twilio",
            RateLimitClass::WebhookStripe => "webhook_stripe",
            RateLimitClass::WebhookVapi => "webhook_vapi",
        }
    }

    /// The default limit.
    /// - global: 1000/min per IP: far above a person clicking, low enough to blunt a flood from
    ///   one address (a practice behind one NAT is still far below it).
    /// - login: 5 failures per 15 min per account+IP (OWASP Authentication Cheat Sheet range).
    /// - user: 60/min per user or key: a busy UI, not a scraper.
    /// - webhooks: by provider volume; WhatsApp's delivery receipts come in bursts (200), Stripe
    ///   sends the fewest (50).
    pub const fn default_limit(self) -> Limit {
        match self {
            RateLimitClass::Global => Limit::per_minute(1000),
            RateLimitClass::Login => Limit { max: 5, window: Duration::from_secs(15 * 60) },
            RateLimitClass::User => Limit::per_minute(60),
            RateLimitClass::WebhookWhatsapp => Limit::per_minute(200),
            RateLimitClass::WebhookTwilio => Limit::per_minute(100),
            RateLimitClass::WebhookStripe => Limit::per_minute(50),
            RateLimitClass::WebhookVapi => Limit::per_minute(100),
        }
    }
}

/// The limits in force: defaults, optionally overridden by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub global: Limit,
    pub login: Limit,
    pub user: Limit,
    pub webhook_whatsapp: Limit,
    pub webhook_twilio: Limit,
    pub webhook_stripe: Limit,
    pub webhook_vapi: Limit,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            global: RateLimitClass::Global.default_limit(),
            login: RateLimitClass::Login.default_limit(),
            user: RateLimitClass::User.default_limit(),
            webhook_whatsapp: RateLimitClass::WebhookWhatsapp.default_limit(),
            webhook_twilio: RateLimitClass::WebhookTwilio.default_limit(),
            webhook_stripe: RateLimitClass::WebhookStripe.default_limit(),
            webhook_vapi: RateLimitClass::WebhookVapi.default_limit(),
        }
    }
}

impl RateLimits {
    pub const fn limit(&self, class: RateLimitClass) -> Limit {
        match class {
            RateLimitClass::Global => self.global,
            RateLimitClass::Login => self.login,
            RateLimitClass::User => self.user,
            RateLimitClass::WebhookWhatsapp => self.webhook_whatsapp,
            RateLimitClass::WebhookTwilio => self.webhook_twilio,
            RateLimitClass::WebhookStripe => self.webhook_stripe,
            RateLimitClass::WebhookVapi => self.webhook_vapi,
        }
    }

    /// Every limit that would disable limiting (`max == 0` blocks everything, a zero window
    /// counts nothing), named, for the app's config validation.
    pub fn problems(&self) -> Vec<String> {
        RateLimitClass::ALL
            .into_iter()
            .filter_map(|class| {
                let limit = self.limit(class);
                (limit.max == 0 || limit.window.is_zero())
                    .then(|| format!("rate_limit.{}: max and window must both be positive", class.as_str()))
            })
            .collect()
    }
}

/// The counter key for failed sign-ins of `account` (an email) from `ip`.
///
/// The email is personal data and the counter store is not the place for it, so the key holds a
/// SHA-256 of the normalised email and the IP instead (`login:<32 hex chars>`). Normalising
/// (trim, lowercase) stops "Anna@x.org" and "anna@x.org " from getting separate budgets.
pub fn login_limit_key(account: &str, ip: IpAddr) -> String {
    let normalised = account.trim().to_lowercase();
    let ip = crate::client_ip::canonical(ip).to_string();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(normalised.as_bytes());
    ctx.update(&[0]);
    ctx.update(ip.as_bytes());
    let digest = ctx.finish();
    let mut key = String::from("login:");
    for byte in digest.as_ref().iter().take(16) {
        key.push_str(&format!("{byte:02x}"));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_issue() {
        let limits = RateLimits::default();
        assert_eq!(limits.global, Limit { max: 1000, window: Duration::from_secs(60) });
        assert_eq!(limits.login, Limit { max: 5, window: Duration::from_secs(900) });
        assert_eq!(limits.user, Limit { max: 60, window: Duration::from_secs(60) });
        assert_eq!(limits.limit(RateLimitClass::WebhookWhatsapp).max, 200);
        assert_eq!(limits.limit(RateLimitClass::WebhookTwilio).max, 100);
        assert_eq!(limits.limit(RateLimitClass::WebhookStripe).max, 50);
        assert_eq!(limits.limit(RateLimitClass::WebhookVapi).max, 100);
        assert!(limits.problems().is_empty());
        for class in RateLimitClass::ALL {
            assert_eq!(limits.limit(class), class.default_limit());
        }
    }

    #[test]
    fn disabled_limits_are_named() {
        let limits = RateLimits { login: Limit { max: 0, window: Duration::from_secs(60) }, ..RateLimits::default() };
        assert_eq!(limits.problems(), vec!["rate_limit.login: max and window must both be positive".to_owned()]);
    }

    #[test]
    fn login_key_hides_the_email_and_normalises() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let key = login_limit_key("Anna@Example.org ", ip);
        assert!(key.starts_with("login:") && key.len() == 6 + 32, "{key}");
        assert!(!key.contains("anna"));
        assert_eq!(key, login_limit_key("anna@example.org", ip));
        assert_ne!(key, login_limit_key("anna@example.org", "203.0.113.8".parse().unwrap()));
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(key, login_limit_key("anna@example.org", mapped));
    }
}
