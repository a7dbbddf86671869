//! The webhook ingest: a provider's request at a practice's endpoint, verified on its raw bytes
//! before anything else, then processed exactly once. The doors hand it the request as received
//! (headers, raw body, path and query, the sender's address) and map what comes back; the pure
//! `webhooks` crate verifies and parses.
//!
//! # Order
//!
//! 1. The endpoint ([`Services::webhook_endpoint`]): the provider must be configured for the
//!    practice the door names; the practice is never read from the body.
//! 2. Verification and parsing (`webhooks::receive`), before any I/O. A request that fails it
//!    is a [`Verdict::Rejected`]: nothing is written or counted for it here; the door applies its
//!    own per-address checks first, then records it ([`Services::record_webhook_rejection`]).
//! 3. The provider's budget for the practice ([`ProviderBudgets`]), counted for verified
//!    deliveries only, so forged requests cannot use it up and lock the real provider out.
//! 4. De-duplication and the handlers, below.
//!
//! # De-duplication
//!
//! Each of the event's de-duplication keys (`WebhookEvent::dedupe_keys`) is
//!
//! 1. claimed in Redis (`SET NX`, 24 h, namespaced by practice and provider), in the same round
//!    trip as the budget check and the sender's block-list lookup
//!    (`ResilientLimiter::check_and_claim`; a delivery over budget, or from a blocked address, is
//!    refused and its claims are released): of several copies arriving at once, one gets the
//!    claim and the others are acknowledged as duplicates;
//! 2. recorded in the Postgres inbox (`webhook_inbox`, primary key (practice, provider, key)) as
//!    the first write of the handler's transaction: the durable decision. A copy that got a
//!    claim although the key was processed before (Redis flushed, failed over, evicted, or down:
//!    then no claim is asked for at all) finds the row and is acknowledged as a duplicate; two
//!    such copies at once queue on the row, and the second finds it once the first commits.
//!
//! A handler that fails rolls its transaction back (the inbox rows with it) and releases its
//! claims (compare-and-delete on the claim's token), so the provider's retry is processed.
//!
//! # Handlers
//!
//! Each runs in the one transaction (context `DbContext::service(practice)`, actor
//! `Actor::Webhook`) that also records the inbox rows and the `webhook.received` audit entry:
//! all of it commits, or none of it. The call returns only after that commit. The entries are
//! stamped with the id of the request that carried the delivery (the [`Caller`] each delivery
//! keeps), although the shared transaction runs outside that request.
//!
//! # Group commit
//!
//! Deliveries of one practice that are ready at the same moment share that transaction
//! (`batch.rs`): one inbox insert, one audit-chain lock and one commit for all of them, so a
//! practice's webhooks are not queued one commit at a time behind its audit chain. If anything in
//! a shared transaction fails, it is rolled back whole and each delivery is processed again in a
//! transaction of its own: a delivery that fails alone still fails alone, and the others commit.
//! A shared transaction that cannot even begin (the database is unavailable) fails every delivery
//! in it with [`Error::Unavailable`] at once.

mod batch;
mod endpoints;
mod handlers;

pub use batch::GroupCommit;
pub use endpoints::{Endpoints, PaymentEvents, PracticeEndpoints, ProviderBudgets};
/// An inbound message as the message log keeps it (metadata and the text's digest, never the
/// text), for the doors that show it (a patient's GDPR export).
pub use store_postgres::webhooks::MessageRow;

pub(crate) use batch::IngestBatcher;

use crate::{Caller, Error, Result, Services};
use audit::{Action, Outcome as AuditOutcome};
use cache_redis::{
    Backend, CacheError, Claim, ClaimToken, ClaimsToMake, Decision, IdempotencyClaims, IpBlockList, Limit,
    ResilientLimiter,
};
use handlers::{Delivery, Item, items, sha256};
use kernel::{Actor, RequestId, TenantId};
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use webhooks::{Headers, InboundRequest, Provider, ProviderConfig, RejectReason, WebhookError, WebhookEvent};

/// How long a claim marks an event as taken: longer than any provider's retry burst, and far
/// longer than a handler runs.
pub const CLAIM_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What the webhook ingest works with besides the database: the endpoints and budgets the
/// wiring's configuration sets, and the Redis pieces (shared with the doors' own checks).
#[derive(Clone)]
pub struct WebhookIngest {
    pub endpoints: Arc<Endpoints>,
    /// Verified deliveries per minute, per practice and provider.
    pub budgets: ProviderBudgets,
    /// `webhook.rejected` entries written per source address; further rejections from it are
    /// refused all the same, and counted in the log, but not audited one by one.
    pub rejection_audits_per_ip: Limit,
    pub payment_events: PaymentEvents,
    /// The rate limiter (Redis, with its in-process fallback) that counts the budgets and makes
    /// the claims in the same round trip.
    pub limiter: Arc<ResilientLimiter>,
    pub blocklist: IpBlockList,
    /// The Redis claims that keep concurrent copies of an event apart.
    pub claims: IdempotencyClaims,
    /// How verified deliveries share transactions.
    pub group_commit: GroupCommit,
}

impl std::fmt::Debug for WebhookIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookIngest").field("endpoints", &self.endpoints).finish_non_exhaustive()
    }
}

/// A configured endpoint: a practice and one of its providers.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'s> {
    pub tenant: TenantId,
    pub provider: Provider,
    config: &'s ProviderConfig,
    practice: &'s PracticeEndpoints,
    ingest: &'s WebhookIngest,
}

/// A request at an endpoint, as the door received it.
#[derive(Clone)]
pub struct RawDelivery<'a> {
    pub headers: &'a Headers,
    /// The body's bytes exactly as received: what the provider signed.
    pub body: &'a [u8],
    /// The request's path and raw query (Twilio signs the URL it called, see
    /// [`Endpoints::public_url`]).
    pub path: &'a str,
    pub query: &'a str,
    /// The client address the door determined: checked against the block list.
    pub sender: IpAddr,
    /// The request that carried the delivery, stamped on the audit entries written for it.
    pub request_id: Option<RequestId>,
}

/// Prints neither headers nor body: the headers carry signatures, the body personal data.
impl std::fmt::Debug for RawDelivery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawDelivery")
            .field("body_bytes", &self.body.len())
            .field("path", &self.path)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

/// What became of a request at an endpoint.
#[derive(Debug)]
pub enum Verdict<T> {
    /// It did not verify (or its payload is not one Praxis accepts): nothing was counted or
    /// written for it. The door applies its per-address checks, then records the rejection.
    Rejected(WebhookError),
    /// It verified, and was counted against the practice's budget for the provider (`budget`,
    /// for the door's rate-limit headers); `result` is its answer.
    Counted { budget: Decision, result: Result<T> },
}

/// What became of a verified delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// At least one of its events was new and is now processed.
    Processed { events: usize },
    /// Every event in it was processed before (or is being processed by another copy).
    Duplicate,
    /// It carries nothing to process (a WhatsApp delivery without messages or statuses).
    Empty,
}

impl Services {
    /// The endpoint of `provider` for `practice`, or for `None`, the one practice that configures
    /// the provider (single-practice deployments). [`Error::NotFound`] when it is not configured
    /// (or when this process receives no webhooks).
    pub fn webhook_endpoint(&self, provider: Provider, practice: Option<TenantId>) -> Result<Endpoint<'_>> {
        let ingest = self.webhook_ingest.as_ref().ok_or(Error::NotFound)?;
        let tenant = match practice {
            Some(tenant) => tenant,
            None => ingest.endpoints.sole_practice(provider).ok_or(Error::NotFound)?,
        };
        let practice = ingest.endpoints.practice(tenant).ok_or(Error::NotFound)?;
        let config = practice.provider(provider).ok_or(Error::NotFound)?;
        Ok(Endpoint { tenant, provider, config, practice, ingest })
    }

    /// Verifies a delivery on its raw bytes, counts it against the practice's budget for its
    /// provider and, within it, processes it exactly once (see the module documentation). The
    /// budget check, the event keys' claims and the sender's block-list entry are one Redis round
    /// trip; a delivery over the budget is refused with [`Error::RateLimited`], one from a blocked
    /// address with [`Error::Forbidden`], and its claims are released, so the provider's retry is
    /// processed.
    pub async fn receive_webhook(&self, endpoint: &Endpoint<'_>, delivery: RawDelivery<'_>) -> Verdict<Outcome> {
        let public_url = endpoint.ingest.endpoints.public_url(delivery.path, delivery.query);
        let request = InboundRequest {
            headers: delivery.headers,
            body: delivery.body,
            public_url: &public_url,
            now: self.clock.now(),
        };
        let event = match webhooks::receive(endpoint.config, &request) {
            Ok(event) => event,
            Err(rejection) => {
                crate::metrics::record_webhook_rejection(endpoint.provider, &rejection);
                return Verdict::Rejected(rejection);
            }
        };
        let caller = Caller::system(endpoint.tenant, Actor::Webhook { provider: endpoint.provider.slug().to_owned() })
            .with_request_id(delivery.request_id);
        let ingest = endpoint.ingest;
        let keys = handlers::dedupe_keys(&event);
        let namespace = claim_namespace(endpoint.tenant, endpoint.provider);
        let event_ids: Vec<&str> = keys.iter().map(String::as_str).collect();
        let claims = ClaimsToMake {
            store: &ingest.claims,
            namespace: &namespace,
            event_ids: &event_ids,
            ttl: CLAIM_TTL,
            sender: Some((&ingest.blocklist, delivery.sender)),
        };
        let limit = ingest.budgets.of(endpoint.provider);
        let check = ingest.limiter.check_and_claim("webhook", &budget_subject(endpoint), limit, claims).await;
        let budget = check.decision;
        match check.blocked {
            Some(true) => {
                telemetry::metrics::record_ip_blocklist_hit();
                return Verdict::Counted { budget, result: Err(Error::Forbidden) };
            }
            Some(false) => {}
            // As the doors' own check does: the block list fails open while Redis cannot answer.
            None if check.backend == Backend::Redis => tracing::warn!("ip block list unavailable"),
            None => {}
        }
        if !budget.allowed {
            telemetry::metrics::record_rate_limit_refusal("webhook");
            let retry_after_secs = budget.retry_after_secs().unwrap_or(1);
            return Verdict::Counted { budget, result: Err(Error::RateLimited { retry_after_secs }) };
        }
        let claimed = sort_claims(keys, check.claims, check.backend);
        let result = self.process_claimed(ingest, caller, event, delivery.body, &namespace, claimed).await;
        crate::metrics::record_webhook_delivery(endpoint.provider, matches!(result, Ok(Outcome::Duplicate)));
        Verdict::Counted { budget, result }
    }

    /// The WhatsApp subscription handshake (`hub.mode`, `hub.verify_token`, `hub.challenge` in
    /// the raw `query`): the challenge to echo once a configured token matched, counted against
    /// the practice's WhatsApp budget as deliveries are.
    pub async fn confirm_whatsapp_subscription(&self, endpoint: &Endpoint<'_>, query: &str) -> Verdict<String> {
        let tokens = endpoint.practice.whatsapp_verify_tokens().unwrap_or_default();
        let challenge = match webhooks::whatsapp::verify_subscription(query, tokens) {
            Ok(challenge) => challenge,
            Err(rejection) => return Verdict::Rejected(rejection),
        };
        let limit = endpoint.ingest.budgets.of(endpoint.provider);
        let (budget, _) = endpoint.ingest.limiter.check("webhook", &budget_subject(endpoint), limit).await;
        let result = if budget.allowed {
            Ok(challenge)
        } else {
            telemetry::metrics::record_rate_limit_refusal("webhook");
            Err(Error::RateLimited { retry_after_secs: budget.retry_after_secs().unwrap_or(1) })
        };
        Verdict::Counted { budget, result }
    }

    /// Writes `webhook.rejected` to the practice's audit trail, with the provider, the reason
    /// and its class and the source address, at most [`WebhookIngest::rejection_audits_per_ip`]
    /// times per address. Call it only for requests the door's per-address checks let through:
    /// nothing is written for a blocked or over-limit address. Best effort: the rejection is
    /// answered the same whether or not its entry could be written (a failure is logged).
    pub async fn record_webhook_rejection(
        &self,
        endpoint: &Endpoint<'_>,
        reason: RejectReason,
        source_ip: IpAddr,
        request_id: Option<RequestId>,
    ) {
        let limit = endpoint.ingest.rejection_audits_per_ip;
        let (decision, _) =
            endpoint.ingest.limiter.check("webhook_rejection_audit", &source_ip.to_string(), limit).await;
        let provider = endpoint.provider.slug();
        if !decision.allowed {
            tracing::warn!(
                provider,
                reason = reason.slug(),
                "webhook rejected; this address's rejections are over the audit budget for this minute"
            );
            return;
        }
        let caller = Caller::system(endpoint.tenant, Actor::System { component: "webhook-verifier".to_owned() })
            .with_request_id(request_id);
        let event = caller
            .audit_event(Action::WebhookRejected, "webhook_endpoint", self.clock())
            .with_resource_id(provider)
            .with_outcome(AuditOutcome::Denied)
            .with_detail(json!({
                "provider": provider,
                "reason": reason.slug(),
                "class": reason_class(reason),
                "source_ip": source_ip.to_string(),
            }));
        let appended = async {
            let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
            store_postgres::audit::append(&mut tx, event).await?;
            tx.commit().await?;
            Ok::<_, Error>(())
        };
        if let Err(error) = appended.await {
            tracing::error!(?error, provider, "could not audit a rejected webhook");
        }
    }

    /// Processes a delivery whose keys were claimed ([`sort_claims`]); on failure gives the claims
    /// back, so the provider's retry is processed.
    async fn process_claimed(
        &self,
        ingest: &WebhookIngest,
        caller: Caller,
        event: WebhookEvent,
        body: &[u8],
        namespace: &str,
        (mut held, claimed_elsewhere): (Vec<Held>, Vec<String>),
    ) -> Result<Outcome> {
        if held.is_empty() && claimed_elsewhere.is_empty() {
            return Ok(Outcome::Empty);
        }
        let result = self.process_held(ingest, caller, event, body, &mut held, claimed_elsewhere).await;
        if result.is_err() {
            release_all(&ingest.claims, namespace, &held).await;
        }
        result
    }

    async fn process_held(
        &self,
        ingest: &WebhookIngest,
        caller: Caller,
        event: WebhookEvent,
        body: &[u8],
        held: &mut Vec<Held>,
        claimed_elsewhere: Vec<String>,
    ) -> Result<Outcome> {
        let tenant = caller.tenant;
        let provider = event.provider();
        // A Redis claim says another copy started, not that it finished: it outlives a crash, a
        // dropped request or a failed release for its whole TTL. Only the inbox proves an event was
        // processed; a key claimed but not recorded is processed here, and the inbox's key decides
        // (a copy still running makes this one wait, then see it recorded).
        if !claimed_elsewhere.is_empty() {
            let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
            for key in claimed_elsewhere {
                if !store_postgres::webhooks::is_recorded(&mut tx, tenant, provider.slug(), &key).await? {
                    held.push(Held { key, token: None });
                }
            }
            tx.commit().await?;
        }
        if held.is_empty() {
            return Ok(Outcome::Duplicate);
        }
        // Matching senders to patients needs the practice's blind-index key. It is fetched (or
        // created) before the shared transaction, in its own, so no lock waits on the KMS.
        let needs_index =
            items(&event)?.iter().any(|(_, item)| matches!(item, Item::WhatsAppMessage(_) | Item::Twilio(_)));
        let index_key = if needs_index { Some(self.blind_index_key(&caller).await?) } else { None };
        let delivery = Delivery {
            caller,
            event,
            held: held.iter().map(|h| h.key.clone()).collect(),
            body_sha256: sha256(body),
            index_key,
        };
        // Handed to the practice's next shared transaction; answers once that has committed.
        self.webhook_batcher.process(self, ingest, delivery).await
    }
}

/// The claim namespace of a practice's provider: keys of two practices never collide.
fn claim_namespace(tenant: TenantId, provider: Provider) -> String {
    format!("webhook:{tenant}:{}", provider.slug())
}

/// What the practice's budget for the endpoint's provider is counted under.
fn budget_subject(endpoint: &Endpoint<'_>) -> String {
    format!("{}:{}", endpoint.tenant, endpoint.provider.slug())
}

/// The class of a rejection reason, recorded beside the reason.
fn reason_class(reason: RejectReason) -> &'static str {
    if reason.is_authentication_failure() {
        "authentication"
    } else if reason.is_configuration_fault() {
        "configuration"
    } else {
        "payload"
    }
}

/// A claim this delivery holds (or, with Redis unavailable, would have asked for).
struct Held {
    key: String,
    token: Option<ClaimToken>,
}

/// The keys this delivery may process (claimed here, or not claimable: Redis could not answer,
/// and the Postgres inbox alone decides), and those another copy claimed.
fn sort_claims(
    keys: Vec<String>,
    answers: Vec<std::result::Result<Claim, CacheError>>,
    backend: Backend,
) -> (Vec<Held>, Vec<String>) {
    let mut held = Vec::with_capacity(keys.len());
    let mut claimed_elsewhere = Vec::new();
    for (key, answer) in keys.into_iter().zip(answers) {
        match answer {
            Ok(Claim::Claimed(token)) => held.push(Held { key, token: Some(token) }),
            Ok(Claim::Duplicate) => claimed_elsewhere.push(key),
            Err(error) => {
                // With Redis down the limiter has logged the outage once; a claim Redis refused
                // while answering otherwise is worth a line of its own.
                if backend == Backend::Redis {
                    tracing::warn!(%error, "webhook idempotency claim unavailable; relying on the Postgres inbox");
                }
                held.push(Held { key, token: None });
            }
        }
    }
    (held, claimed_elsewhere)
}

async fn release_all(claims: &IdempotencyClaims, namespace: &str, held: &[Held]) {
    for claim in held {
        if let Some(token) = &claim.token
            && let Err(error) = claims.release(namespace, &claim.key, token).await
        {
            // The claim expires after CLAIM_TTL; until then each retry of the provider first
            // checks the inbox (one more query) before it is processed. Logged for the operator.
            tracing::error!(%error, "could not release a webhook claim after a failed handler");
        }
    }
}
