//! Inbound webhooks over HTTP: each provider's signature rules (valid, tampered, wrong secret,
//! rotated secret, timestamps out of the window, missing headers, Stripe v0-only, Twilio with a
//! port and as JSON), the generic answers and the `webhook.rejected` audit entries, the size and
//! rate limits, exactly-once processing under concurrency and after Redis loses its claims, and
//! STOP over WhatsApp and Twilio withdrawing marketing consent.
//!
//! Every secret is generated at run time; signatures are computed here from the providers'
//! published rules, independently of the `webhooks` crate.

use crate::identity::{bearer, create_practice, fast_hashing, login};
use crate::support::{TestApp, assert_problem};
use api::config::Config;
use api::config::webhooks::{
    StandardWebhook, StripeWebhook, TenantWebhooks, TwilioWebhook, VapiWebhook, WhatsAppWebhook,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kernel::{PatientId, Secret, SystemClock, TenantId};
use reqwest::StatusCode;
use ring::hmac;
use serde_json::{Value, json};
use std::sync::Arc;
use store_postgres::{DbContext, begin};

const PUBLIC_BASE_URL: &str = "https://praxis.example.test";

fn random_token(prefix: &str) -> String {
    format!("{prefix}{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Every secret of the test practice: the current one and, where rotation is tested, the old one.
#[derive(Clone)]
pub(crate) struct Secrets {
    stripe: String,
    stripe_old: String,
    whatsapp: String,
    whatsapp_old: String,
    verify_token: String,
    twilio: String,
    twilio_old: String,
    vapi: String,
    standard: String,
    standard_old: String,
}

fn standard_secret() -> String {
    let bytes: Vec<u8> =
        uuid::Uuid::new_v4().as_bytes().iter().chain(uuid::Uuid::new_v4().as_bytes()).copied().collect();
    format!("whsec_{}", BASE64.encode(bytes))
}

impl Secrets {
    fn generate() -> Self {
        Self {
            stripe: random_token("whsec_"),
            stripe_old: random_token("whsec_"),
            whatsapp: random_token(""),
            whatsapp_old: random_token(""),
            verify_token: random_token(""),
            twilio: random_token(""),
            twilio_old: random_token(""),
            vapi: random_token(""),
            standard: standard_secret(),
            standard_old: standard_secret(),
        }
    }
}

fn secrets(list: &[&str]) -> Vec<Secret<String>> {
    list.iter().map(|s| Secret::new((*s).to_owned())).collect()
}

/// Configures every provider for `tenant`, with generous limits (tests of the limits set their own).
pub(crate) fn configure(config: &mut Config, tenant: TenantId, s: &Secrets) {
    fast_hashing(config);
    config.webhooks.public_base_url = Some(PUBLIC_BASE_URL.into());
    config.webhooks.rate_limits.stripe = 10_000;
    config.webhooks.rate_limits.whatsapp = 10_000;
    config.webhooks.rate_limits.twilio = 10_000;
    config.webhooks.rate_limits.vapi = 10_000;
    config.webhooks.rate_limits.standard = 10_000;
    config.webhooks.rejection_audits_per_ip_per_minute = 10_000;
    config.webhooks.tenants.insert(
        tenant.to_string(),
        TenantWebhooks {
            stripe: Some(StripeWebhook {
                signing_secrets: secrets(&[&s.stripe, &s.stripe_old]),
                ..StripeWebhook::default()
            }),
            whatsapp: Some(WhatsAppWebhook {
                app_secrets: secrets(&[&s.whatsapp, &s.whatsapp_old]),
                verify_tokens: secrets(&[&s.verify_token]),
                phone_number_ids: Vec::new(),
            }),
            twilio: Some(TwilioWebhook { auth_tokens: secrets(&[&s.twilio, &s.twilio_old]) }),
            vapi: Some(VapiWebhook { secrets: secrets(&[&s.vapi]), ..VapiWebhook::default() }),
            standard: Some(StandardWebhook { secrets: secrets(&[&s.standard, &s.standard_old]) }),
        },
    );
}

/// A running server with one practice whose webhooks are configured.
pub(crate) struct Hooks {
    pub(crate) app: TestApp,
    _base: TestApp,
    pub(crate) tenant: TenantId,
    pub(crate) admin_email: String,
    pub(crate) s: Secrets,
}

async fn start_with(adjust: impl FnOnce(&mut Config)) -> Hooks {
    let base = TestApp::start_with(fast_hashing, api::server::no_extra_routes).await;
    let practice = create_practice(&base, "Hooks").await;
    let s = Secrets::generate();
    let tenant = practice.tenant;
    let app = base
        .sibling(|config| {
            configure(config, tenant, &s);
            adjust(config);
        })
        .await;
    Hooks { app, _base: base, tenant, admin_email: practice.admin_email, s }
}

pub(crate) async fn start() -> Hooks {
    start_with(|_| {}).await
}

fn now() -> i64 {
    kernel::Clock::now(&kernel::SystemClock).unix_timestamp()
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message).as_ref().to_vec()
}

fn stripe_header(secret: &str, t: i64, body: &str) -> String {
    format!("t={t},v1={}", hex::encode(hmac_sha256(secret.as_bytes(), format!("{t}.{body}").as_bytes())))
}

pub(crate) fn stripe_body(id: &str, event_type: &str) -> String {
    json!({
        "id": id, "object": "event", "type": event_type, "livemode": false, "created": now(),
        "data": { "object": { "id": "pi_123", "object": "payment_intent", "metadata": {} } }
    })
    .to_string()
}

fn whatsapp_signature(secret: &str, body: &str) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret.as_bytes(), body.as_bytes())))
}

fn whatsapp_body(message_id: &str, from_digits: &str, text: &str) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "1", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "messages": [{ "id": message_id, "from": from_digits, "timestamp": now().to_string(), "type": "text",
                           "text": { "body": text } }]
        }}]}]
    })
    .to_string()
}

/// Twilio's rule: base64 HMAC-SHA1 of the URL followed by the sorted parameters (name + value).
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut signed = url.to_owned();
    for (name, value) in sorted {
        signed.push_str(name);
        signed.push_str(value);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token.as_bytes());
    BASE64.encode(hmac::sign(&key, signed.as_bytes()))
}

/// `application/x-www-form-urlencoded`, as Twilio sends it.
fn form(params: &[(&str, &str)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => (b as char).to_string(),
                b' ' => "+".to_owned(),
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    params.iter().map(|(name, value)| format!("{}={}", encode(name), encode(value))).collect::<Vec<_>>().join("&")
}

fn vapi_signature(secret: &str, timestamp: &str, body: &str) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), format!("{timestamp}.{body}").as_bytes()))
}

fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = BASE64.decode(secret.trim_start_matches("whsec_")).unwrap();
    format!("v1,{}", BASE64.encode(hmac_sha256(&key, format!("{id}.{timestamp}.{body}").as_bytes())))
}

impl Hooks {
    fn path(&self, provider: &str) -> String {
        format!("/webhooks/{provider}/{}", self.tenant)
    }

    async fn post(&self, provider: &str, query: &str, headers: &[(&str, String)], body: String) -> reqwest::Response {
        let mut request = self.app.client.post(self.app.url(&format!("{}{query}", self.path(provider)))).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.unwrap()
    }

    async fn stripe(&self, header: Option<String>, body: &str) -> reqwest::Response {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(header) = header {
            headers.push(("stripe-signature", header));
        }
        self.post("stripe", "", &headers, body.to_owned()).await
    }

    /// `webhook.rejected` entries: (provider, reason, class, source_ip), oldest first.
    async fn rejections(&self) -> Vec<(String, String, String, String)> {
        let mut tx = begin(&self.app.db.app_pool, &DbContext::service(self.tenant)).await.unwrap();
        let rows: Vec<(serde_json::Value,)> = sqlx::query_as(
            "SELECT detail FROM audit_entries WHERE tenant_id = $1 AND action = 'webhook.rejected' ORDER BY seq",
        )
        .bind(self.tenant.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(d,)| {
                let field = |name: &str| d[name].as_str().unwrap_or_default().to_owned();
                (field("provider"), field("reason"), field("class"), field("source_ip"))
            })
            .collect()
    }

    pub(crate) async fn count(&self, sql: &str) -> i64 {
        let mut tx = begin(&self.app.db.app_pool, &DbContext::service(self.tenant)).await.unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(self.tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .unwrap()
    }

    pub(crate) async fn received(&self) -> i64 {
        self.count("SELECT count(*) FROM audit_entries WHERE tenant_id = $1 AND action = 'webhook.received'").await
    }
}

async fn assert_received(response: reqwest::Response, duplicate: bool) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "received": true, "duplicate": duplicate }));
}

/// 401 problem+json that says nothing about which check failed.
async fn assert_unauthorized(response: reqwest::Response) {
    let body = assert_problem(response, 401, "urn:praxis:problem:unauthorized").await;
    assert!(body.get("detail").is_none(), "{body}");
}

#[actix_web::test]
async fn stripe_signatures_follow_stripes_rules() {
    let hooks = start().await;
    let s = &hooks.s;
    let body = stripe_body("evt_valid_1", "customer.created");

    // Valid, then the same event again: acknowledged as a duplicate, processed once.
    assert_received(hooks.stripe(Some(stripe_header(&s.stripe, now(), &body)), &body).await, false).await;
    assert_received(hooks.stripe(Some(stripe_header(&s.stripe, now(), &body)), &body).await, true).await;
    assert_eq!(hooks.received().await, 1);
    assert_eq!(
        hooks
            .count("SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1 AND event_type = 'customer.created'")
            .await,
        1
    );

    // The old secret, still listed while rotating, is accepted.
    let body = stripe_body("evt_rotated", "invoice.paid");
    assert_received(hooks.stripe(Some(stripe_header(&s.stripe_old, now(), &body)), &body).await, false).await;

    // Several v1 signatures, one of them valid (Stripe while rolling a secret).
    let body = stripe_body("evt_multi", "invoice.paid");
    let valid = stripe_header(&s.stripe, now(), &body);
    let v1 = valid.split_once(",v1=").unwrap().1;
    let header = format!("t={},v1={},v1={v1}", now(), "ab".repeat(32));
    assert_received(hooks.stripe(Some(header), &body).await, false).await;

    let before = hooks.rejections().await.len();
    let body = stripe_body("evt_bad", "invoice.paid");
    let cases: Vec<(&str, Option<String>, String)> = vec![
        ("tampered", Some(stripe_header(&s.stripe, now(), &body)), body.replace("invoice.paid", "invoice.void")),
        ("wrong secret", Some(stripe_header(&random_token("whsec_"), now(), &body)), body.clone()),
        ("expired", Some(stripe_header(&s.stripe, now() - 330, &body)), body.clone()),
        ("future", Some(stripe_header(&s.stripe, now() + 330, &body)), body.clone()),
        ("missing header", None, body.clone()),
        ("malformed header", Some("garbage".into()), body.clone()),
        ("v0 only", Some(stripe_header(&s.stripe, now(), &body).replace("v1=", "v0=")), body.clone()),
    ];
    for (case, header, sent) in cases {
        let response = hooks.stripe(header, &sent).await;
        assert_eq!(response.status(), 401, "{case}");
        assert_unauthorized(response).await;
    }
    let rejections = hooks.rejections().await;
    let reasons: Vec<&str> = rejections[before..].iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "bad_signature",
            "bad_signature",
            "timestamp_out_of_tolerance",
            "timestamp_out_of_tolerance",
            "missing_header",
            "malformed_header",
            "bad_signature"
        ]
    );
    assert!(rejections.iter().all(|r| r.0 == "stripe" && r.2 == "authentication" && r.3 == "127.0.0.1"));
    // Nothing of a rejected event reached the inbox.
    assert_eq!(
        hooks.count("SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1 AND event_key = 'evt_bad'").await,
        0
    );

    // Authentic but not an event Praxis can read: 400, audited as a payload rejection.
    let body = json!({ "id": "", "type": "x", "livemode": false }).to_string();
    let response = hooks.stripe(Some(stripe_header(&s.stripe, now(), &body)), &body).await;
    let problem = assert_problem(response, 400, "urn:praxis:problem:bad-request").await;
    assert_eq!(problem["detail"], "The webhook was not accepted.");
    assert_eq!(hooks.rejections().await.last().unwrap().2, "payload");
}

#[actix_web::test]
async fn unknown_endpoints_are_404_and_bodies_over_256_kib_are_413() {
    let hooks = start().await;
    let body = stripe_body("evt_x", "invoice.paid");
    let header = ("stripe-signature", stripe_header(&hooks.s.stripe, now(), &body));
    for path in [
        "/webhooks/paypal/".to_owned() + &hooks.tenant.to_string(),
        format!("/webhooks/stripe/{}", TenantId::new()),
        "/webhooks/stripe/not-a-uuid".to_owned(),
    ] {
        let response = hooks
            .app
            .client
            .post(hooks.app.url(&path))
            .header(header.0, &header.1)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_problem(response, 404, "urn:praxis:problem:not-found").await;
    }
    let big = "x".repeat(256 * 1024 + 1);
    let response = hooks.stripe(Some(stripe_header(&hooks.s.stripe, now(), &big)), &big).await;
    let problem = assert_problem(response, 413, "urn:praxis:problem:payload-too-large").await;
    assert_eq!(problem["detail"], "The body must not exceed 262144 bytes.");
    assert_eq!(hooks.rejections().await.last().unwrap().1, "payload_too_large");
    // Exactly at the limit is read (and then refused for what it is, not for its size).
    let exact = "x".repeat(256 * 1024);
    let response = hooks.stripe(Some(stripe_header(&hooks.s.stripe, now(), &exact)), &exact).await;
    assert_eq!(response.status(), 400);
}

#[actix_web::test]
async fn provider_budgets_count_verified_deliveries_only_and_rejections_are_audited_within_a_budget() {
    let hooks = start_with(|config| {
        config.webhooks.rate_limits.stripe = 3;
        config.webhooks.rejection_audits_per_ip_per_minute = 2;
    })
    .await;
    let secret = hooks.s.stripe.clone();
    // Forged deliveries are refused without touching the practice's budget: the headers are the
    // global limit's, and the real provider still gets its three.
    for _ in 0..5 {
        let response = hooks.stripe(None, "{}").await;
        assert_eq!(response.status(), 401);
        let global = hooks.app.config.rate_limits.global_per_minute.to_string();
        assert_eq!(response.headers()["x-ratelimit-limit"], global.as_str());
    }
    // Five rejections, two audited: the budget per source address.
    assert_eq!(hooks.rejections().await.len(), 2);
    for i in 0..3 {
        let body = stripe_body(&format!("evt_budget_{i}"), "payment_intent.created");
        let response = hooks.stripe(Some(stripe_header(&secret, now(), &body)), &body).await;
        assert_eq!(response.headers()["x-ratelimit-limit"], "3");
        assert_eq!(response.headers()["x-ratelimit-remaining"], (2 - i).to_string().as_str());
        assert!(response.headers().contains_key("x-ratelimit-reset"));
        assert_received(response, false).await;
    }
    // Over the budget: 429, the event is not processed, and its claim is given back, so the
    // provider's retry (once the budget allows) is processed rather than taken for a copy.
    let over = stripe_body("evt_budget_over", "payment_intent.created");
    let response = hooks.stripe(Some(stripe_header(&secret, now(), &over)), &over).await;
    assert_eq!(response.headers()["x-ratelimit-limit"], "3");
    assert!(response.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_problem(response, 429, "urn:praxis:problem:rate-limited").await;
    let recorded = "SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1 AND event_key = 'evt_budget_over'";
    assert_eq!(hooks.count(recorded).await, 0);
    let redis = &hooks.app.redis;
    let claims = cache_redis::IdempotencyClaims::new(
        cache_redis::RedisStore::new(&redis.url, &redis.prefix, std::time::Duration::from_secs(2)).unwrap(),
    );
    let namespace = format!("webhook:{}:stripe", hooks.tenant);
    let again = claims.claim(&namespace, "evt_budget_over", std::time::Duration::from_secs(60)).await.unwrap();
    assert!(again.is_claimed(), "the refused delivery's claim was released");
    let taken = claims.claim(&namespace, "evt_budget_0", std::time::Duration::from_secs(60)).await.unwrap();
    assert!(!taken.is_claimed(), "a processed delivery's claim stays");
    // Another provider has its own budget.
    let body = json!({ "message": { "type": "status-update", "call": { "id": "call_budget" }, "status": "ringing" } })
        .to_string();
    let ts = now().to_string();
    let headers = [("x-timestamp", ts.clone()), ("x-signature", vapi_signature(&hooks.s.vapi, &ts, &body))];
    let response = hooks.post("vapi", "", &headers, body).await;
    assert_eq!(response.headers()["x-ratelimit-limit"], "10000");
    assert_received(response, false).await;
}

/// The request guard's address checks on the webhook routes: verified deliveries are refused
/// from a blocked address (their claims given back) but are limited by the practice's provider
/// budget alone, not by the per-address global limit, which every provider's deliveries for
/// every practice would share; unverified requests, and the router's own answers under
/// `/webhooks/`, are limited and blocked per address as any request is.
#[actix_web::test]
async fn blocked_addresses_are_refused_and_only_unverified_requests_count_against_the_global_limit() {
    let hooks = start_with(|config| config.rate_limits.global_per_minute = 8).await;
    let secret = hooks.s.stripe.clone();
    let deliver = |id: &str| {
        let body = stripe_body(id, "payment_intent.created");
        (Some(stripe_header(&secret, now(), &body)), body)
    };
    // More verified deliveries from one address than its global limit admits: all processed.
    for i in 0..10 {
        let (header, body) = deliver(&format!("evt_guard_{i}"));
        let response = hooks.stripe(header, &body).await;
        assert_eq!(response.headers()["x-ratelimit-limit"], "10000", "the Stripe budget's headers");
        assert_received(response, false).await;
    }

    let redis = &hooks.app.redis;
    let store = cache_redis::RedisStore::new(&redis.url, &redis.prefix, std::time::Duration::from_secs(2)).unwrap();
    let blocklist = cache_redis::IpBlockList::new(store.clone());
    let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    blocklist.block(loopback, std::time::Duration::from_secs(60), "test").await.unwrap();
    let rejections = hooks.rejections().await.len();
    let (header, body) = deliver("evt_guard_blocked");
    assert_problem(hooks.stripe(header, &body).await, 403, "urn:praxis:problem:forbidden").await;
    assert_problem(hooks.stripe(None, "{}").await, 403, "urn:praxis:problem:forbidden").await;
    let unrouted = hooks.app.client.post(hooks.app.url("/webhooks/a/b/c")).body("{}").send().await.unwrap();
    assert_problem(unrouted, 403, "urn:praxis:problem:forbidden").await;
    let handshake = format!("{}?hub.mode=subscribe&hub.verify_token=x&hub.challenge=1", hooks.path("whatsapp"));
    let response = hooks.app.client.get(hooks.app.url(&handshake)).send().await.unwrap();
    assert_problem(response, 403, "urn:praxis:problem:forbidden").await;
    assert_eq!(hooks.rejections().await.len(), rejections, "nothing is audited for a blocked address");
    let recorded = "SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1 AND event_key = 'evt_guard_blocked'";
    assert_eq!(hooks.count(recorded).await, 0);
    // Its claim was given back: once the address is unblocked, the provider's retry is processed.
    assert!(blocklist.unblock(loopback).await.unwrap());
    let (header, body) = deliver("evt_guard_blocked");
    assert_received(hooks.stripe(header, &body).await, false).await;

    // A failed handshake counts once against the address's limit, as any rejected request does.
    let remaining = |response: &reqwest::Response| -> u32 {
        response.headers()["x-ratelimit-remaining"].to_str().unwrap().parse().unwrap()
    };
    let before = remaining(&hooks.stripe(None, "{}").await);
    let response = hooks.app.client.get(hooks.app.url(&handshake)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(remaining(&response), before - 1);

    // Forged requests count against the address's global limit; once it is used up, they and
    // the router's answers under /webhooks/ get 429 with the global limit's headers.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(hooks.stripe(None, "{}").await.status().as_u16());
    }
    assert!(statuses.contains(&401) && statuses.ends_with(&[429]), "{statuses:?}");
    let unrouted = hooks.app.client.post(hooks.app.url("/webhooks/a/b/c")).body("{}").send().await.unwrap();
    assert_eq!(unrouted.headers()["x-ratelimit-limit"], "8");
    assert_problem(unrouted, 429, "urn:praxis:problem:rate-limited").await;
    // A verified delivery is still processed: the provider's budget is its limit. Also on a
    // percent-escaped path, which the router decodes to the same route.
    let (header, body) = deliver("evt_guard_after");
    assert_received(hooks.stripe(header, &body).await, false).await;
    let (header, body) = deliver("evt_guard_escaped");
    let escaped = hooks.app.url(&format!("/%77ebhooks/stripe/{}", hooks.tenant));
    let response = hooks
        .app
        .client
        .post(escaped)
        .header("content-type", "application/json")
        .header("stripe-signature", header.unwrap())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_received(response, false).await;
}

#[actix_web::test]
async fn whatsapp_signatures_handshake_and_bounds() {
    let hooks = start().await;
    let s = &hooks.s;
    let body = whatsapp_body("wamid.HBgLNDkxNTE=", "4915100000001", "Hallo");
    let sign = |secret: &str, body: &str| vec![("x-hub-signature-256", whatsapp_signature(secret, body))];
    assert_received(hooks.post("whatsapp", "", &sign(&s.whatsapp, &body), body.clone()).await, false).await;
    assert_received(hooks.post("whatsapp", "", &sign(&s.whatsapp, &body), body.clone()).await, true).await;
    // The inbox keys a WhatsApp message by its id's digest (the id encodes the sender's number
    // and the row outlives an erasure), the same digest the migration gave keys stored before.
    let raw = "SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1 AND event_key LIKE '%wamid%'";
    assert_eq!(hooks.count(raw).await, 0);
    let digest = "SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1 \
                  AND event_key = 'sha256:' || encode(sha256(convert_to('wamid.HBgLNDkxNTE=', 'UTF8')), 'hex')";
    assert_eq!(hooks.count(digest).await, 1);
    let rotated = whatsapp_body("wamid.second", "4915100000001", "Hallo");
    assert_received(hooks.post("whatsapp", "", &sign(&s.whatsapp_old, &rotated), rotated.clone()).await, false).await;
    let other = whatsapp_body("wamid.third", "4915100000001", "Hallo");
    assert_unauthorized(hooks.post("whatsapp", "", &sign(&s.whatsapp, &other), other.replace("Hallo", "Hallo!")).await)
        .await;
    assert_unauthorized(hooks.post("whatsapp", "", &sign(&random_token(""), &other), other.clone()).await).await;
    assert_unauthorized(hooks.post("whatsapp", "", &[], other.clone()).await).await;
    // The message log holds the text's digest, never the text.
    assert_eq!(hooks.count("SELECT count(*) FROM webhook_messages WHERE tenant_id = $1").await, 2);
    let stored: i64 = hooks
        .count("SELECT count(*) FROM webhook_messages WHERE tenant_id = $1 AND content_sha256 = sha256('Hallo'::bytea)")
        .await;
    assert_eq!(stored, 2);

    // More entries than allowed: verified, then refused as a payload (400).
    let entries: Vec<Value> = (0..11).map(|i| json!({ "id": i.to_string(), "changes": [] })).collect();
    let bounded = json!({ "object": "whatsapp_business_account", "entry": entries }).to_string();
    let response = hooks.post("whatsapp", "", &sign(&s.whatsapp, &bounded), bounded.clone()).await;
    assert_problem(response, 400, "urn:praxis:problem:bad-request").await;

    // The GET subscription handshake echoes the challenge for a configured token only.
    let handshake = |token: &str, mode: &str| {
        format!("{}?hub.mode={mode}&hub.verify_token={token}&hub.challenge=1158201444", hooks.path("whatsapp"))
    };
    let response = hooks.app.get(&handshake(&s.verify_token, "subscribe")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "1158201444");
    assert_unauthorized(hooks.app.get(&handshake("wrong", "subscribe")).await).await;
    assert_problem(
        hooks.app.get(&handshake(&s.verify_token, "unsubscribe")).await,
        400,
        "urn:praxis:problem:bad-request",
    )
    .await;
    // Only WhatsApp has a handshake; the other providers' endpoints take deliveries only.
    let response = hooks.app.get(&hooks.path("stripe")).await;
    assert_eq!(response.headers().get("allow").map(|v| v.to_str().unwrap().to_owned()).as_deref(), Some("POST"));
    assert_problem(response, 405, "urn:praxis:problem:method-not-allowed").await;
}

#[actix_web::test]
async fn twilio_signs_the_configured_url_with_or_without_port_and_json_bodies() {
    let hooks = start().await;
    let s = &hooks.s;
    let url = format!("{PUBLIC_BASE_URL}{}", hooks.path("twilio"));
    let form_headers = |signature: String| {
        vec![("content-type", "application/x-www-form-urlencoded".to_owned()), ("x-twilio-signature", signature)]
    };
    let params = |sid: &'static str| {
        vec![
            ("MessageSid", sid),
            ("AccountSid", "AC123"),
            ("From", "+4915100000002"),
            ("To", "+4930000000"),
            ("Body", "Hello there"),
            ("SmsStatus", "received"),
        ]
    };
    let p = params("SM0001");
    assert_received(
        hooks.post("twilio", "", &form_headers(twilio_signature(&s.twilio, &url, &p)), form(&p)).await,
        false,
    )
    .await;
    assert_received(
        hooks.post("twilio", "", &form_headers(twilio_signature(&s.twilio, &url, &p)), form(&p)).await,
        true,
    )
    .await;
    // Signed with the default port in the URL, as Twilio sometimes does.
    let with_port = url.replace("example.test/", "example.test:443/");
    let p = params("SM0002");
    assert_received(
        hooks.post("twilio", "", &form_headers(twilio_signature(&s.twilio, &with_port, &p)), form(&p)).await,
        false,
    )
    .await;
    // The secondary auth token while rotating.
    let p = params("SM0003");
    assert_received(
        hooks.post("twilio", "", &form_headers(twilio_signature(&s.twilio_old, &url, &p)), form(&p)).await,
        false,
    )
    .await;
    // Wrong token, tampered parameter, a URL built from another host, missing header.
    let p = params("SM0004");
    assert_unauthorized(
        hooks.post("twilio", "", &form_headers(twilio_signature(&random_token(""), &url, &p)), form(&p)).await,
    )
    .await;
    let tampered = form(&p).replace("Hello", "Hullo");
    assert_unauthorized(hooks.post("twilio", "", &form_headers(twilio_signature(&s.twilio, &url, &p)), tampered).await)
        .await;
    let other_host = url.replace("praxis.example.test", hooks.app.addr.to_string().as_str()).replace("https", "http");
    assert_unauthorized(
        hooks.post("twilio", "", &form_headers(twilio_signature(&s.twilio, &other_host, &p)), form(&p)).await,
    )
    .await;
    assert_unauthorized(hooks.post("twilio", "", &[], form(&p)).await).await;

    // The JSON variant: the signature covers the URL with bodySHA256, which must match the body.
    let body =
        json!({ "MessageSid": "SM0005", "AccountSid": "AC123", "From": "+4915100000002", "Body": "Hi" }).to_string();
    let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, body.as_bytes()));
    let query = format!("?bodySHA256={digest}");
    let signature = twilio_signature(&s.twilio, &format!("{url}{query}"), &[]);
    let json_headers = vec![("content-type", "application/json".to_owned()), ("x-twilio-signature", signature)];
    assert_received(hooks.post("twilio", &query, &json_headers, body.clone()).await, false).await;
    assert_unauthorized(hooks.post("twilio", &query, &json_headers, body.replace("Hi", "Ho")).await).await;
    let reasons: Vec<String> = hooks.rejections().await.into_iter().map(|r| r.1).collect();
    assert_eq!(reasons.last().map(String::as_str), Some("body_digest_mismatch"));
}

#[actix_web::test]
async fn vapi_hmac_and_standard_webhooks() {
    let hooks = start().await;
    let s = &hooks.s;
    let body =
        json!({ "message": { "type": "end-of-call-report", "call": { "id": "call_1" }, "endedReason": "hangup" } })
            .to_string();
    let vapi = |secret: &str, timestamp: i64, signed: &str| {
        let ts = timestamp.to_string();
        vec![("x-timestamp", ts.clone()), ("x-signature", vapi_signature(secret, &ts, signed))]
    };
    assert_received(hooks.post("vapi", "", &vapi(&s.vapi, now(), &body), body.clone()).await, false).await;
    assert_received(hooks.post("vapi", "", &vapi(&s.vapi, now(), &body), body.clone()).await, true).await;
    // Milliseconds are read as such.
    let status =
        json!({ "message": { "type": "status-update", "status": "ringing", "call": { "id": "call_1" } } }).to_string();
    assert_received(hooks.post("vapi", "", &vapi(&s.vapi, now() * 1000, &status), status.clone()).await, false).await;
    for headers in
        [vapi(&s.vapi, now() - 330, &body), vapi(&s.vapi, now() + 330, &body), vapi(&random_token(""), now(), &body)]
    {
        assert_unauthorized(hooks.post("vapi", "", &headers, body.clone()).await).await;
    }
    assert_unauthorized(hooks.post("vapi", "", &vapi(&s.vapi, now(), &body), body.replace("hangup", "other")).await)
        .await;
    assert_unauthorized(hooks.post("vapi", "", &[("x-timestamp", now().to_string())], body.clone()).await).await;
    // Metadata only: the call id, type and status.
    assert_eq!(
        hooks.count("SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1 AND detail->>'call_id' = 'call_1'").await,
        2
    );

    let standard = |secret: &str, id: &str, timestamp: i64, signed: &str| {
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", standard_signature(secret, id, timestamp, signed)),
        ]
    };
    let body = json!({ "type": "invoice.created", "data": {} }).to_string();
    assert_received(
        hooks.post("standard", "", &standard(&s.standard, "msg_1", now(), &body), body.clone()).await,
        false,
    )
    .await;
    assert_received(
        hooks.post("standard", "", &standard(&s.standard, "msg_1", now(), &body), body.clone()).await,
        true,
    )
    .await;
    assert_received(
        hooks.post("standard", "", &standard(&s.standard_old, "msg_2", now(), &body), body.clone()).await,
        false,
    )
    .await;
    for headers in [
        standard(&s.standard, "msg_3", now() - 330, &body),
        standard(&s.standard, "msg_3", now() + 330, &body),
        standard(&standard_secret(), "msg_3", now(), &body),
    ] {
        assert_unauthorized(hooks.post("standard", "", &headers, body.clone()).await).await;
    }
    let tampered = standard(&s.standard, "msg_3", now(), &body);
    assert_unauthorized(hooks.post("standard", "", &tampered, body.replace("created", "deleted")).await).await;
    assert_eq!(
        hooks.count("SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1 AND provider = 'standard_webhooks'").await,
        2
    );
}

/// A Redis of this test's own, so FLUSHALL touches nothing another test uses.
struct PrivateRedis {
    child: std::process::Child,
    url: String,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (cargo xtask test installs it)");
        let url = format!("redis://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self { child, url }
    }

    async fn flushall(&self) {
        let pool = deadpool_redis::Config::from_url(self.url.clone())
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .unwrap();
        let mut conn = pool.get().await.unwrap();
        let reply: String = deadpool_redis::redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
        assert_eq!(reply, "OK");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `copies` identical deliveries at once; returns how many were processed (not duplicates).
pub(crate) async fn deliver_at_once(hooks: &Hooks, app: &TestApp, copies: usize, body: &str) -> usize {
    let header = stripe_header(&hooks.s.stripe, now(), body);
    let url = app.url(&hooks.path("stripe"));
    let sends = (0..copies).map(|_| {
        let (client, url, header, body) = (app.client.clone(), url.clone(), header.clone(), body.to_owned());
        async move {
            let response = client.post(url).header("stripe-signature", header).body(body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let receipt: Value = response.json().await.unwrap();
            !receipt["duplicate"].as_bool().unwrap()
        }
    });
    futures_util::future::join_all(sends).await.into_iter().filter(|processed| *processed).count()
}

#[actix_web::test]
async fn concurrent_copies_are_processed_once_even_after_flushall_or_without_redis() {
    let redis = PrivateRedis::start();
    let redis_url = redis.url.clone();
    let hooks = start_with(|config| {
        config.redis.url = Some(Secret::new(redis_url));
        config.database.max_connections = 8;
    })
    .await;
    let body = stripe_body("evt_concurrent", "invoice.paid");
    assert_eq!(deliver_at_once(&hooks, &hooks.app, 50, &body).await, 1);
    assert_eq!(hooks.received().await, 1);

    // Redis forgets every claim; the Postgres inbox still knows.
    redis.flushall().await;
    assert_eq!(deliver_at_once(&hooks, &hooks.app, 1, &body).await, 0);
    // And after FLUSHALL, new copies racing each other are still processed once.
    redis.flushall().await;
    let fresh = stripe_body("evt_after_flush", "invoice.paid");
    assert_eq!(deliver_at_once(&hooks, &hooks.app, 20, &fresh).await, 1);

    // An instance whose Redis is unreachable: Postgres's unique key alone decides.
    let s = hooks.s.clone();
    let tenant = hooks.tenant;
    let no_redis = hooks
        .app
        .sibling(|config| {
            configure(config, tenant, &s);
            config.redis.url = Some(Secret::new("redis://127.0.0.1:1".into()));
            config.redis.timeout_ms = 200;
            config.database.max_connections = 8;
        })
        .await;
    assert_eq!(deliver_at_once(&hooks, &no_redis, 1, &body).await, 0);
    let without = stripe_body("evt_without_redis", "invoice.paid");
    assert_eq!(deliver_at_once(&hooks, &no_redis, 20, &without).await, 1);
    assert_eq!(hooks.received().await, 3);
    assert_eq!(hooks.count("SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1").await, 3);
}

#[actix_web::test]
async fn a_claim_left_behind_by_a_copy_that_never_finished_does_not_swallow_the_retry() {
    let hooks = start_with(|_| {}).await;
    // A copy claimed the event in Redis and then died before committing (a crash, a dropped
    // request, a failed release): the claim stays for 24 h, the inbox never saw the event.
    let state = api::AppState::from_config(Arc::new(hooks.app.config.clone()), Arc::new(SystemClock)).unwrap();
    let claims = cache_redis::IdempotencyClaims::new(state.redis.clone());
    let namespace = format!("webhook:{}:stripe", hooks.tenant);
    let claim = claims.claim(&namespace, "evt_orphaned", app::webhook_ingest::CLAIM_TTL).await.unwrap();
    assert!(matches!(claim, cache_redis::Claim::Claimed(_)));

    // The provider's retry is processed, not acknowledged as a duplicate, and only once.
    let body = stripe_body("evt_orphaned", "invoice.paid");
    assert_eq!(deliver_at_once(&hooks, &hooks.app, 5, &body).await, 1);
    assert_eq!(deliver_at_once(&hooks, &hooks.app, 1, &body).await, 0);
    assert_eq!(hooks.count("SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1").await, 1);
}

/// A patient with a phone number and granted marketing consent on WhatsApp and SMS.
async fn patient_with_marketing_consent(hooks: &Hooks, admin: &Value, phone: &str) -> PatientId {
    let response = hooks
        .app
        .client
        .post(hooks.app.url("/api/v1/patients"))
        .header("authorization", bearer(admin))
        .json(&json!({ "name": "Mara Opt", "phone": phone }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    for purpose in ["data_processing", "marketing_whatsapp", "marketing_sms"] {
        let response = hooks
            .app
            .client
            .post(hooks.app.url(&format!("/api/v1/patients/{id}/consents")))
            .header("authorization", bearer(admin))
            .json(&json!({ "purpose": purpose, "action": "grant", "text_version": "v1", "text": "I agree.", "channel": "paper" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }
    PatientId::from_uuid(id.parse().unwrap())
}

/// The consent records of a patient, read as the webhook handler would.
async fn may_contact(hooks: &Hooks, patient: PatientId, purpose: consent::Purpose) -> bool {
    let mut tx = begin(&hooks.app.db.app_pool, &DbContext::service(hooks.tenant)).await.unwrap();
    let history = store_postgres::patients::consent_history(&mut tx, hooks.tenant, patient).await.unwrap();
    let records = app::consents::records_of(patient, &history).unwrap();
    consent::may_contact(&records, purpose, kernel::Clock::now(&kernel::SystemClock))
}

async fn consent_state(hooks: &Hooks, admin: &Value, patient: PatientId, purpose: &str) -> Value {
    let response = hooks
        .app
        .client
        .get(hooks.app.url(&format!("/api/v1/patients/{patient}/consents")))
        .header("authorization", bearer(admin))
        .send()
        .await
        .unwrap();
    let views: Vec<Value> = response.json().await.unwrap();
    views.into_iter().find(|v| v["purpose"] == purpose).unwrap()
}

#[actix_web::test]
async fn stop_over_whatsapp_withdraws_whatsapp_marketing_with_the_message_as_evidence() {
    let hooks = start().await;
    let admin = login(&hooks.app, hooks.tenant, &hooks.admin_email).await;
    let patient = patient_with_marketing_consent(&hooks, &admin, "+4915123456789").await;
    assert!(may_contact(&hooks, patient, consent::Purpose::MarketingWhatsapp).await);

    // An ordinary message changes nothing; " stop " does.
    for (id, text) in [("wamid.plain", "Can we move my appointment?"), ("wamid.stop", "  Stop ")] {
        let body = whatsapp_body(id, "4915123456789", text);
        let headers = vec![("x-hub-signature-256", whatsapp_signature(&hooks.s.whatsapp, &body))];
        assert_received(hooks.post("whatsapp", "", &headers, body).await, false).await;
        if id == "wamid.plain" {
            assert!(may_contact(&hooks, patient, consent::Purpose::MarketingWhatsapp).await);
        }
    }
    assert!(!may_contact(&hooks, patient, consent::Purpose::MarketingWhatsapp).await);
    assert!(may_contact(&hooks, patient, consent::Purpose::MarketingSms).await, "a STOP on one channel is not all");
    let view = consent_state(&hooks, &admin, patient, "marketing_whatsapp").await;
    assert_eq!(view["state"], "withdrawn");
    assert_eq!(view["active"], false);

    // The withdrawal's evidence: the channel, the webhook as recorder, and the message as the
    // inbox keys it. Consent events outlive an erasure; a WhatsApp message id encodes the
    // sender's number, so the evidence holds its SHA-256, never the id.
    let response = hooks
        .app
        .client
        .get(hooks.app.url(&format!("/api/v1/patients/{patient}/consents/history")))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap();
    let history: Vec<Value> = response.json().await.unwrap();
    crate::contract::assert_each_conforms(&Value::from(history.clone()), "ConsentEventView");
    let withdrawal = history.iter().find(|e| e["action"] == "withdraw").unwrap();
    assert_eq!(withdrawal["channel"], "whatsapp");
    let wamid_digest = format!("sha256:{}", hex::encode(ring::digest::digest(&ring::digest::SHA256, b"wamid.stop")));
    assert_eq!(withdrawal["evidence_ref"], wamid_digest);
    assert!(!serde_json::to_string(&history).unwrap().contains("wamid"), "{history:?}");
    let inbox_keyed = "SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1 \
                       AND event_key = 'sha256:' || encode(sha256(convert_to('wamid.stop', 'UTF8')), 'hex')";
    assert_eq!(hooks.count(inbox_keyed).await, 1, "the evidence names the message as the inbox keys it");
    assert_eq!(withdrawal["recorded_by"], json!({ "kind": "webhook", "provider": "whatsapp" }));
    let withdrawn =
        hooks.count("SELECT count(*) FROM audit_entries WHERE tenant_id = $1 AND action = 'consent.withdrawn'").await;
    assert_eq!(withdrawn, 1);

    // The export lists both messages as metadata: digests, never the text.
    let response = hooks
        .app
        .client
        .get(hooks.app.url(&format!("/api/v1/patients/{patient}/export")))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(!text.contains("move my appointment"));
    let export: Value = serde_json::from_str(&text).unwrap();
    crate::contract::assert_conforms(&export, "PatientExport");
    let messages = export["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["message_id"], "wamid.stop");
    assert_eq!(messages[1]["stop_keyword"], true);
    assert_eq!(messages[1]["content_sha256"], hex::encode(ring::digest::digest(&ring::digest::SHA256, b"  Stop ")));

    // A second STOP (a new message) finds nothing left to withdraw, and fails nothing.
    let body = whatsapp_body("wamid.stop2", "4915123456789", "STOP");
    let headers = vec![("x-hub-signature-256", whatsapp_signature(&hooks.s.whatsapp, &body))];
    assert_received(hooks.post("whatsapp", "", &headers, body).await, false).await;
    assert_eq!(
        hooks.count("SELECT count(*) FROM audit_entries WHERE tenant_id = $1 AND action = 'consent.withdrawn'").await,
        1
    );
}

#[actix_web::test]
async fn stop_over_twilio_sms_withdraws_sms_marketing() {
    let hooks = start().await;
    let admin = login(&hooks.app, hooks.tenant, &hooks.admin_email).await;
    let patient = patient_with_marketing_consent(&hooks, &admin, "+4915198765000").await;
    assert!(may_contact(&hooks, patient, consent::Purpose::MarketingSms).await);
    let url = format!("{PUBLIC_BASE_URL}{}", hooks.path("twilio"));
    let p = [
        ("MessageSid", "SMstop1"),
        ("AccountSid", "AC1"),
        ("From", "+4915198765000"),
        ("Body", "ABMELDEN"),
        ("SmsStatus", "received"),
    ];
    let headers = vec![
        ("content-type", "application/x-www-form-urlencoded".to_owned()),
        ("x-twilio-signature", twilio_signature(&hooks.s.twilio, &url, &p)),
    ];
    assert_received(hooks.post("twilio", "", &headers, form(&p)).await, false).await;
    assert!(!may_contact(&hooks, patient, consent::Purpose::MarketingSms).await);
    assert!(may_contact(&hooks, patient, consent::Purpose::MarketingWhatsapp).await);
    assert_eq!(consent_state(&hooks, &admin, patient, "marketing_sms").await["state"], "withdrawn");

    // Twilio's WhatsApp sender (`whatsapp:+…`) is the WhatsApp channel.
    let p = [
        ("MessageSid", "SMstop2"),
        ("AccountSid", "AC1"),
        ("From", "whatsapp:+4915198765000"),
        ("Body", "stop"),
        ("SmsStatus", "received"),
    ];
    let headers = vec![
        ("content-type", "application/x-www-form-urlencoded".to_owned()),
        ("x-twilio-signature", twilio_signature(&hooks.s.twilio, &url, &p)),
    ];
    assert_received(hooks.post("twilio", "", &headers, form(&p)).await, false).await;
    assert!(!may_contact(&hooks, patient, consent::Purpose::MarketingWhatsapp).await);
}

/// Verified Stripe payment events move the payment state of the appointment in their metadata;
/// a checkout that completed unpaid (SEPA) does not count as paid, and a failure after success
/// arriving late does not undo it.
#[actix_web::test]
async fn stripe_payment_events_set_the_payment_state_of_the_named_appointment() {
    let hooks = start().await;
    let tenant = hooks.tenant;
    let at = kernel::Clock::now(&kernel::SystemClock);
    let mut tx = begin(&hooks.app.db.app_pool, &DbContext::operator(tenant)).await.unwrap();
    let admin: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let patient = PatientId::from_uuid(uuid::Uuid::now_v7());
    store_postgres::patients::insert(
        &mut tx,
        &store_postgres::patients::NewPatientRow {
            id: patient,
            tenant,
            dek_generation: 1,
            assigned_therapist: None,
            fields: [(patients::PatientField::Name, vec![9; 60])].into_iter().collect(),
            email_index: None,
            phone_index: None,
            created_at: at,
        },
    )
    .await
    .unwrap();
    let mut appointments = Vec::new();
    for day in [3, 4, 5] {
        let id = uuid::Uuid::now_v7();
        let start = at + time::Duration::days(day);
        store_postgres::appointments::insert(
            &mut tx,
            &store_postgres::appointments::NewAppointment {
                id,
                tenant,
                patient,
                therapist: kernel::UserId::from_uuid(admin),
                slot: scheduling::Slot::new(start, start + time::Duration::hours(1)).unwrap(),
                kind: scheduling::AppointmentKind::TherapySession,
                notes_enc: None,
                created_at: at,
            },
        )
        .await
        .unwrap();
        appointments.push(id);
    }
    tx.commit().await.unwrap();
    let event = |id: &str, event_type: &str, object: &str, appointment: uuid::Uuid, status: Option<&str>| {
        let mut object = json!({ "id": object, "metadata": { "appointment_id": appointment.to_string() } });
        if let Some(status) = status {
            object["payment_status"] = json!(status);
        }
        json!({ "id": id, "object": "event", "type": event_type, "livemode": false, "created": now(),
                "data": { "object": object } })
        .to_string()
    };
    deliver_stripe(&hooks, event("evt_pay_1", "payment_intent.succeeded", "pi_1", appointments[0], None)).await;
    assert_eq!(payment_state(&hooks, appointments[0]).await, "paid");
    // A late failure of the same payment does not undo the success.
    deliver_stripe(&hooks, event("evt_pay_2", "payment_intent.payment_failed", "pi_1", appointments[0], None)).await;
    assert_eq!(payment_state(&hooks, appointments[0]).await, "paid");
    // A checkout completed without payment (delayed method) leaves it unpaid; its failure marks it failed.
    deliver_stripe(&hooks, event("evt_pay_3", "checkout.session.completed", "cs_2", appointments[1], Some("unpaid")))
        .await;
    assert_eq!(payment_state(&hooks, appointments[1]).await, "unpaid");
    deliver_stripe(&hooks, event("evt_pay_4", "payment_intent.payment_failed", "pi_2", appointments[1], None)).await;
    assert_eq!(payment_state(&hooks, appointments[1]).await, "failed");
    // An appointment this practice does not have is acknowledged and changes nothing.
    deliver_stripe(&hooks, event("evt_pay_5", "payment_intent.succeeded", "pi_3", uuid::Uuid::now_v7(), None)).await;

    // Twenty events for one appointment at once, which the server processes in shared
    // transactions (group commit): each is applied once, one after the other, and the
    // order-independent rule ends where it would for any order: one success among failures is paid.
    let racing: Vec<String> = (0..20)
        .map(|i| {
            let event_type = if i == 13 { "payment_intent.succeeded" } else { "payment_intent.payment_failed" };
            event(&format!("evt_race_{i}"), event_type, "pi_4", appointments[2], None)
        })
        .collect();
    futures_util::future::join_all(racing.into_iter().map(|body| deliver_stripe(&hooks, body))).await;
    assert_eq!(payment_state(&hooks, appointments[2]).await, "paid");
    let raced =
        hooks.count("SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1 AND event_key LIKE 'evt_race_%'").await;
    assert_eq!(raced, 20);
    hooks.app.stop().await;
}

async fn deliver_stripe(hooks: &Hooks, body: String) {
    assert_received(hooks.stripe(Some(stripe_header(&hooks.s.stripe, now(), &body)), &body).await, false).await;
}

async fn payment_state(hooks: &Hooks, id: uuid::Uuid) -> String {
    let mut tx = begin(&hooks.app.db.app_pool, &DbContext::operator(hooks.tenant)).await.unwrap();
    sqlx::query_scalar("SELECT payment_state FROM appointments WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_whatsapp_delivery_for_another_practices_number_is_refused_at_that_practices_endpoint() {
    // Two practices on one Meta app (one app secret), each with its own phone number.
    let base = TestApp::start_with(fast_hashing, api::server::no_extra_routes).await;
    let (a, b) = (create_practice(&base, "Number A").await, create_practice(&base, "Number B").await);
    let s = Secrets::generate();
    let app = base
        .sibling(|config| {
            configure(config, a.tenant, &s);
            let bound = |id: &str| TenantWebhooks {
                whatsapp: Some(WhatsAppWebhook {
                    app_secrets: secrets(&[&s.whatsapp]),
                    verify_tokens: Vec::new(),
                    phone_number_ids: vec![id.to_owned()],
                }),
                ..TenantWebhooks::default()
            };
            config.webhooks.tenants.insert(a.tenant.to_string(), bound("1001"));
            config.webhooks.tenants.insert(b.tenant.to_string(), bound("2002"));
        })
        .await;
    // A delivery Meta signed for practice A's number.
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "1", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "4930100100", "phone_number_id": "1001" },
            "messages": [{ "id": "wamid.for_a", "from": "4915123456789", "timestamp": now().to_string(),
                           "type": "text", "text": { "body": "Hallo" } }]
        }}]}]
    })
    .to_string();
    let send = |tenant: TenantId| {
        let request = app
            .client
            .post(app.url(&format!("/webhooks/whatsapp/{tenant}")))
            .header("x-hub-signature-256", whatsapp_signature(&s.whatsapp, &body))
            .body(body.clone());
        async move { request.send().await.unwrap() }
    };
    // Posted to B's endpoint, the valid signature is not enough: refused, and nothing recorded for B.
    assert_problem(send(b.tenant).await, 400, "urn:praxis:problem:bad-request").await;
    // At A's endpoint it is processed.
    let response = send(a.tenant).await;
    assert_eq!(response.status(), 200);
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(receipt["duplicate"], false);
}
