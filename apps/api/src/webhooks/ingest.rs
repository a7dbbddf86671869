//! Processing a verified webhook exactly once.
//!
//! # De-duplication
//!
//! Each of the event's de-duplication keys (`WebhookEvent::dedupe_keys`) is
//!
//! 1. claimed in Redis (`SET NX`, 24 h, namespaced by practice and provider), in the same round
//!    trip as the practice's budget check for the provider (`ResilientLimiter::check_and_claim`;
//!    a delivery over budget gets 429 and its claims are released): of several copies arriving at
//!    once, one gets the claim and the others are acknowledged as duplicates;
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
//! all of it commits, or none of it. The request answers only after that commit.
//!
//! # Group commit
//!
//! Deliveries of one practice that are ready at the same moment share that transaction
//! (`super::batch`): one inbox insert, one audit-chain lock and one commit for all of them, so a
//! practice's webhooks are not queued one commit at a time behind its audit chain. If anything in
//! a shared transaction fails, it is rolled back whole and each delivery is processed again in a
//! transaction of its own: a delivery that fails alone still fails alone, and the others commit.
//! A shared transaction that cannot even begin (the database is unavailable) fails every delivery
//! in it with 503 at once.

use crate::auth::with_request;
use crate::error::ApiError;
use crate::state::AppState;
use audit::{Action, AuditEvent};
use cache_redis::{Backend, CacheError, Claim, ClaimToken, ClaimsToMake, Decision, Limit};
use consent::{InboundChannel, NoteRef};
use crypto::BlindIndexKey;
use kernel::{Actor, PatientId, Pii, RequestId, TenantId};
use serde_json::{Value, json};
use sqlx::PgConnection;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use store_postgres::patients::PatientQuery;
use store_postgres::webhooks::{InboxEvent, NewMessage};
use store_postgres::{DbContext, begin};
use time::OffsetDateTime;
use webhooks::{
    Provider, StandardEvent, StripeEvent, StripeEventKind, TwilioEvent, TwilioResource, VapiEvent, WebhookEvent,
    WhatsAppMessage, WhatsAppStatus, is_stop_keyword,
};

/// How long a claim marks an event as taken: longer than any provider's retry burst, and far
/// longer than a handler runs.
pub const CLAIM_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Most patients one sender's number is matched to (a family sharing a phone).
const MAX_MATCHED_PATIENTS: u32 = 10;

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

/// One unit of a delivery with its own de-duplication key.
#[derive(Clone, Copy)]
enum Item<'e> {
    Stripe(&'e StripeEvent),
    WhatsAppMessage(&'e WhatsAppMessage),
    WhatsAppStatus(&'e WhatsAppStatus),
    Twilio(&'e TwilioEvent),
    Vapi(&'e VapiEvent),
    Standard(&'e StandardEvent),
}

/// The keys an event is de-duplicated by, as stored (`webhook_inbox.event_key`) and claimed:
/// the provider's ids (`WebhookEvent::dedupe_keys`), except WhatsApp's, which are digested.
/// A WhatsApp message id (`wamid.` + base64) encodes the sender's phone number, and the inbox
/// row outlives the erasure of the patient who sent it; the id's digest still tells a redelivery
/// apart. `migrations/20261123000011_webhook_inbox_whatsapp_key_digests.sql` rewrote the keys
/// stored before, with the same digest.
fn dedupe_keys(event: &WebhookEvent) -> Vec<String> {
    let keys = event.dedupe_keys();
    match event {
        WebhookEvent::WhatsApp(_) => keys.iter().map(|key| key_digest(key)).collect(),
        _ => keys,
    }
}

/// `sha256:` and the lower-case hex SHA-256 of `key`'s UTF-8 bytes.
fn key_digest(key: &str) -> String {
    format!("sha256:{}", hex::encode(sha256(key.as_bytes())))
}

/// The items of `event`, each with its key, in `dedupe_keys` order (messages, then statuses).
fn items(event: &WebhookEvent) -> Result<Vec<(String, Item<'_>)>, ApiError> {
    let keys = dedupe_keys(event);
    let items: Vec<Item<'_>> = match event {
        WebhookEvent::Stripe(e) => vec![Item::Stripe(e)],
        WebhookEvent::WhatsApp(e) => {
            e.messages.iter().map(Item::WhatsAppMessage).chain(e.statuses.iter().map(Item::WhatsAppStatus)).collect()
        }
        WebhookEvent::Twilio(e) => vec![Item::Twilio(e)],
        WebhookEvent::Vapi(e) => vec![Item::Vapi(e)],
        WebhookEvent::Standard(e) => vec![Item::Standard(e)],
    };
    if keys.len() != items.len() {
        return Err(ApiError::internal(anyhow::anyhow!("dedupe keys and items of a webhook event do not line up")));
    }
    Ok(keys.into_iter().zip(items).collect())
}

/// A claim this request holds (or, with Redis unavailable, would have asked for).
struct Held {
    key: String,
    token: Option<ClaimToken>,
}

/// The claim namespace of a practice's provider: keys of two practices never collide.
fn claim_namespace(tenant: TenantId, provider: Provider) -> String {
    format!("webhook:{tenant}:{}", provider.slug())
}

/// A verified delivery's outcome, and the provider budget it was counted against (for the
/// `X-RateLimit-*` headers).
#[derive(Debug)]
pub struct Ingested {
    pub decision: Decision,
    pub result: Result<Outcome, ApiError>,
}

/// Counts a verified delivery against the practice's budget for its provider (`limit`) and,
/// within it, processes the delivery exactly once; see the module docs. The budget check, the
/// event keys' claims and the sender's block-list entry are one Redis round trip (the request
/// guard's check of the address, which this route applies itself: `crate::middleware::guard`);
/// a delivery over the budget is refused with 429, one from a blocked address with 403, and its
/// claims are released, so the provider's retry is processed.
pub async fn ingest(
    state: &AppState,
    tenant: TenantId,
    event: WebhookEvent,
    body: &[u8],
    limit: Limit,
    sender: IpAddr,
) -> Ingested {
    let provider = event.provider();
    let keys = dedupe_keys(&event);
    let namespace = claim_namespace(tenant, provider);
    let subject = format!("{tenant}:{}", provider.slug());
    let event_ids: Vec<&str> = keys.iter().map(String::as_str).collect();
    let claims = ClaimsToMake {
        store: &state.idempotency,
        namespace: &namespace,
        event_ids: &event_ids,
        ttl: CLAIM_TTL,
        sender: Some((&state.blocklist, sender)),
    };
    let check = state.limiter.check_and_claim("webhook", &subject, limit, claims).await;
    let decision = check.decision;
    match check.blocked {
        Some(true) => return Ingested { decision, result: Err(ApiError::Forbidden) },
        Some(false) => {}
        // As the request guard does: the block list fails open while Redis cannot answer.
        None if check.backend == Backend::Redis => tracing::warn!("ip block list unavailable"),
        None => {}
    }
    if !decision.allowed {
        let retry_after_secs = decision.retry_after_secs().unwrap_or(1);
        return Ingested { decision, result: Err(ApiError::TooManyRequests { retry_after_secs }) };
    }
    let claims = sort_claims(keys, check.claims, check.backend);
    Ingested { decision, result: process_claimed(state, tenant, event, body, &namespace, claims).await }
}

/// Processes a delivery whose keys were claimed ([`sort_claims`]); on failure gives the claims
/// back, so the provider's retry is processed.
async fn process_claimed(
    state: &AppState,
    tenant: TenantId,
    event: WebhookEvent,
    body: &[u8],
    namespace: &str,
    (mut held, claimed_elsewhere): (Vec<Held>, Vec<String>),
) -> Result<Outcome, ApiError> {
    if held.is_empty() && claimed_elsewhere.is_empty() {
        return Ok(Outcome::Empty);
    }
    let result = process_held(state, tenant, event, body, &mut held, claimed_elsewhere).await;
    if result.is_err() {
        release_all(state, namespace, &held).await;
    }
    result
}

async fn process_held(
    state: &AppState,
    tenant: TenantId,
    event: WebhookEvent,
    body: &[u8],
    held: &mut Vec<Held>,
    claimed_elsewhere: Vec<String>,
) -> Result<Outcome, ApiError> {
    let provider = event.provider();
    // A Redis claim says another copy started, not that it finished: it outlives a crash, a
    // dropped request or a failed release for its whole TTL. Only the inbox proves an event was
    // processed; a key claimed but not recorded is processed here, and the inbox's key decides
    // (a copy still running makes this one wait, then see it recorded).
    if !claimed_elsewhere.is_empty() {
        let mut tx = begin(&state.db, &DbContext::service(tenant)).await?;
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
    // Matching senders to patients needs the practice's blind-index key.
    let needs_index = items(&event)?.iter().any(|(_, item)| matches!(item, Item::WhatsAppMessage(_) | Item::Twilio(_)));
    prepare_and_process(state, tenant, event, needs_index, held, body).await
}

/// Fetches what the handlers need outside the transaction, then hands the delivery to the
/// practice's next shared transaction and waits for its commit.
async fn prepare_and_process(
    state: &AppState,
    tenant: TenantId,
    event: WebhookEvent,
    needs_index: bool,
    held: &[Held],
    body: &[u8],
) -> Result<Outcome, ApiError> {
    // The blind-index key is fetched (or created) before the transaction, in its own, so no lock
    // waits on the KMS.
    let index_key = if needs_index {
        let actor = Actor::Webhook { provider: event.provider().slug().to_owned() };
        let caller = app::Caller::system(tenant, actor).with_request_id(crate::error::current_request_id());
        Some(state.app.blind_index_key(&caller).await?)
    } else {
        None
    };
    let delivery = Delivery {
        tenant,
        event,
        held: held.iter().map(|h| h.key.clone()).collect(),
        body_sha256: sha256(body),
        index_key,
        request_id: crate::error::current_request_id(),
    };
    state.webhook_batcher.process(state, delivery).await
}

/// The keys this request may process (claimed here, or not claimable: Redis could not answer,
/// and the Postgres inbox alone decides), and those another copy claimed.
fn sort_claims(
    keys: Vec<String>,
    answers: Vec<Result<Claim, CacheError>>,
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

async fn release_all(state: &AppState, namespace: &str, held: &[Held]) {
    for claim in held {
        if let Some(token) = &claim.token
            && let Err(error) = state.idempotency.release(namespace, &claim.key, token).await
        {
            // The claim expires after CLAIM_TTL; until then each retry of the provider first
            // checks the inbox (one more query) before it is processed. Logged for the operator.
            tracing::error!(%error, "could not release a webhook claim after a failed handler");
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The longest resource id the audit trail takes (`audit::AuditEvent::validate`).
const MAX_AUDIT_ID_BYTES: usize = 128;

/// An audit resource id for an event key: the key itself when it is a plain token, else a
/// digest. WhatsApp message ids (`wamid.` + base64) encode the sender's phone number and the
/// audit trail is kept after a patient is erased: their keys arrive digested ([`dedupe_keys`]),
/// and a raw one would be digested here.
fn audit_resource_id(key: &str) -> String {
    let plain = !key.starts_with("wamid")
        && !key.is_empty()
        && key.len() <= MAX_AUDIT_ID_BYTES
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if plain { key.to_owned() } else { format!("sha256:{}", hex::encode(&sha256(key.as_bytes())[..16])) }
}

/// A verified delivery whose event keys this request holds, ready for a shared transaction.
pub(super) struct Delivery {
    pub tenant: TenantId,
    pub event: WebhookEvent,
    /// The keys this request processes (claimed, or claimed elsewhere but not recorded).
    pub held: Vec<String>,
    pub body_sha256: [u8; 32],
    /// The practice's blind-index key, when an item matches senders to patients.
    pub index_key: Option<Arc<BlindIndexKey>>,
    /// The id of the request that received it, for its audit entries.
    pub request_id: Option<RequestId>,
}

/// One held item of a delivery in a batch.
struct Pending<'d> {
    delivery: usize,
    key: &'d str,
    item: Item<'d>,
    event_type: String,
    facts: Value,
}

/// Processes deliveries of `tenant` in one transaction: their inbox rows in one insert, the
/// handlers of the new items in order, one `webhook.received` entry per delivery with a new
/// item (one chain lock for all). Answers in `deliveries`' order. An error rolls back all of it.
pub(super) async fn process_batch(
    state: &AppState,
    tenant: TenantId,
    deliveries: &[Delivery],
) -> Result<Vec<Outcome>, BatchError> {
    let now = state.clock.now();
    let items_of: Vec<Vec<(String, Item<'_>)>> = deliveries
        .iter()
        .map(|delivery| items(&delivery.event))
        .collect::<Result<_, _>>()
        .map_err(BatchError::Failed)?;
    let mut pending = Vec::new();
    for (index, (delivery, items)) in deliveries.iter().zip(&items_of).enumerate() {
        for (key, item) in items {
            if delivery.held.iter().any(|held| held == key) {
                let (event_type, facts) = describe(item);
                pending.push(Pending { delivery: index, key, item: *item, event_type, facts });
            }
        }
    }
    let inbox: Vec<InboxEvent<'_>> = pending
        .iter()
        .map(|p| {
            let delivery = &deliveries[p.delivery];
            InboxEvent {
                tenant,
                provider: delivery.event.provider().slug(),
                event_key: p.key,
                event_type: &p.event_type,
                body_sha256: delivery.body_sha256,
                received_at: now,
                detail: p.facts.clone(),
            }
        })
        .collect();

    let tx = begin(&state.db, &DbContext::service(tenant)).await.map_err(|e| BatchError::NotStarted(e.into()))?;
    process_in(state, tenant, deliveries, &pending, &inbox, now, tx).await.map_err(BatchError::Failed)
}

/// Why a batch failed: before any of its work began (no transaction: the database is
/// unavailable, and each delivery alone would fail the same way), or during it.
pub(super) enum BatchError {
    NotStarted(ApiError),
    Failed(ApiError),
}

/// The transaction of [`process_batch`]. Audit entries are appended last, all at once: the
/// practice's chain head is the last lock the transaction takes, after any patient or
/// appointment row a handler locks, the order every other writer follows too.
async fn process_in(
    state: &AppState,
    tenant: TenantId,
    deliveries: &[Delivery],
    pending: &[Pending<'_>],
    inbox: &[InboxEvent<'_>],
    now: OffsetDateTime,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
) -> Result<Vec<Outcome>, ApiError> {
    // First write for the keys: a concurrent copy waits on its key until this transaction ends.
    let new = store_postgres::webhooks::record_events(&mut tx, inbox).await?;
    let new_items: Vec<&Item<'_>> = pending.iter().zip(&new).filter(|(_, new)| **new).map(|(p, _)| &p.item).collect();
    let mut payments = lock_payments(state, &mut tx, tenant, &new_items).await?;
    let mut processed: Vec<Vec<(&str, &str, Value)>> = deliveries.iter().map(|_| Vec::new()).collect();
    // The audit entries the handlers ask for (a consent withdrawal), per delivery.
    let mut handler_audit: Vec<Vec<AuditEvent>> = deliveries.iter().map(|_| Vec::new()).collect();
    for (p, new) in pending.iter().zip(new) {
        if !new {
            continue; // processed before (its claim was lost, or never asked for)
        }
        let delivery = &deliveries[p.delivery];
        let mut handling = Handling {
            state,
            tenant,
            actor: Actor::Webhook { provider: delivery.event.provider().slug().to_owned() },
            index_key: delivery.index_key.as_ref(),
            now,
            audit: &mut handler_audit[p.delivery],
        };
        let handled = handle(&mut handling, &mut tx, &p.item, &mut payments);
        let outcome = crate::error::in_request_scope(delivery.request_id.clone(), handled).await?;
        processed[p.delivery].push((p.key, p.event_type.as_str(), merge(p.facts.clone(), outcome)));
    }
    // Per delivery: what its handlers did, then its receipt.
    let mut entries = Vec::new();
    for ((delivery, processed), handled) in deliveries.iter().zip(&processed).zip(handler_audit) {
        entries.extend(handled);
        entries.extend(received_event(state, tenant, delivery, processed));
    }
    store_postgres::audit::append_all(&mut tx, entries).await?;
    tx.commit().await?;
    Ok(processed
        .iter()
        .map(|p| if p.is_empty() { Outcome::Duplicate } else { Outcome::Processed { events: p.len() } })
        .collect())
}

/// The `webhook.received` entry of a delivery: its first processed key, the event types, and
/// for a single event its facts. `None` when nothing in it was new.
fn received_event(
    state: &AppState,
    tenant: TenantId,
    delivery: &Delivery,
    processed: &[(&str, &str, Value)],
) -> Option<AuditEvent> {
    let (first_key, _, _) = processed.first()?;
    let event_types: Vec<&str> = processed.iter().map(|(_, event_type, _)| *event_type).collect();
    let mut detail = json!({ "events": processed.len(), "event_types": dedup_sorted(event_types) });
    if let [(_, _, only)] = processed {
        detail = merge(detail, only.clone());
    }
    let actor = Actor::Webhook { provider: delivery.event.provider().slug().to_owned() };
    let event = AuditEvent::new(tenant, actor, Action::WebhookReceived, "webhook_event", &*state.clock)
        .with_resource_id(audit_resource_id(first_key))
        .with_detail(detail);
    Some(match &delivery.request_id {
        Some(id) => event.with_request_id(id.clone()),
        None => event,
    })
}

/// `base` with the members of `more` added (both JSON objects).
fn merge(mut base: Value, more: Value) -> Value {
    if let (Some(map), Value::Object(more)) = (base.as_object_mut(), more) {
        map.extend(more);
    }
    base
}

fn dedup_sorted(mut names: Vec<&str>) -> Vec<&str> {
    names.sort_unstable();
    names.dedup();
    names.truncate(8);
    names
}

/// The inbox row's event type and non-personal facts of an item, known before handling it.
fn describe(item: &Item<'_>) -> (String, Value) {
    match item {
        Item::Stripe(event) => {
            let mut facts = json!({ "livemode": event.livemode });
            if let StripeEventKind::CheckoutSessionCompleted(payment)
            | StripeEventKind::PaymentIntentSucceeded(payment)
            | StripeEventKind::PaymentIntentPaymentFailed(payment) = &event.kind
            {
                facts =
                    merge(facts, json!({ "object_id": payment.object_id, "appointment_id": payment.appointment_id }));
            }
            (event.event_type().to_owned(), facts)
        }
        Item::WhatsAppMessage(message) => ("message".to_owned(), json!({ "kind": message.message_type })),
        Item::WhatsAppStatus(status) => ("status".to_owned(), json!({ "status": status.status })),
        Item::Twilio(event) => {
            let event_type = match (&event.resource, event.status.as_deref()) {
                (TwilioResource::Call { .. }, _) => "call",
                (TwilioResource::Message { .. }, None | Some("received")) => "message",
                (TwilioResource::Message { .. }, Some(_)) => "status",
            };
            (event_type.to_owned(), json!({ "status": event.status }))
        }
        Item::Vapi(event) => (
            event.message_type.clone(),
            json!({ "call_id": event.call_id, "status": event.status, "ended_reason": event.ended_reason }),
        ),
        Item::Standard(event) => (
            event.event_type.clone().unwrap_or_else(|| "message".to_owned()),
            json!({ "webhook_id": event.webhook_id }),
        ),
    }
}

/// What the handlers of one delivery's items work with, besides the batch's transaction.
struct Handling<'a> {
    state: &'a AppState,
    tenant: TenantId,
    actor: Actor,
    /// The practice's blind-index key, when an item matches senders to patients.
    index_key: Option<&'a Arc<BlindIndexKey>>,
    now: OffsetDateTime,
    /// The audit entries the handlers ask for, appended with the delivery's receipt at the end of
    /// the transaction (`process_in`).
    audit: &'a mut Vec<AuditEvent>,
}

/// Handles one new item; returns non-personal facts about what it did (for the audit entry).
async fn handle(
    cx: &mut Handling<'_>,
    conn: &mut PgConnection,
    item: &Item<'_>,
    payments: &mut PaymentStates,
) -> Result<Value, ApiError> {
    match item {
        Item::WhatsAppMessage(message) => {
            let inbound = Inbound {
                provider: Provider::WhatsApp,
                channel: InboundChannel::WhatsApp,
                message_id: &message.id,
                from: message.from.expose(),
                message_type: &message.message_type,
                text: message.text.as_ref().map(Pii::expose).map(String::as_str),
                sent_at: Some(message.timestamp),
            };
            inbound_message(cx, conn, &inbound).await
        }
        Item::Twilio(event) => twilio(cx, conn, event).await,
        Item::Stripe(event) => {
            if !payments_apply(cx.state.config.environment, event.livemode) {
                return Ok(json!({ "payment": "test_mode_ignored" }));
            }
            stripe_payment(conn, cx.tenant, event, payments).await
        }
        // Recorded in the inbox (with their metadata, see `describe`) and acknowledged.
        Item::WhatsAppStatus(_) | Item::Vapi(_) | Item::Standard(_) => Ok(json!({})),
    }
}

/// Whether a Stripe event may move payment state here: in production only live-mode events,
/// so a test-mode signing secret left in the list cannot mark a real appointment paid; test mode
/// everywhere else (development runs against Stripe's test mode).
fn payments_apply(environment: crate::config::Environment, livemode: bool) -> bool {
    livemode || environment != crate::config::Environment::Production
}

/// The payment event a Stripe event carries, with the appointment it names (if any); `None` for
/// other event types.
fn payment_event_of(event: &StripeEvent) -> Option<(Option<uuid::Uuid>, scheduling::PaymentEvent)> {
    let (payment, payment_event) = match &event.kind {
        StripeEventKind::CheckoutSessionCompleted(payment) => {
            let paid = payment.payment_status.as_deref() == Some("paid");
            (payment, scheduling::PaymentEvent::CheckoutCompleted { paid })
        }
        StripeEventKind::PaymentIntentSucceeded(payment) => (payment, scheduling::PaymentEvent::PaymentSucceeded),
        StripeEventKind::PaymentIntentPaymentFailed(payment) => (payment, scheduling::PaymentEvent::PaymentFailed),
        StripeEventKind::Other { .. } => return None,
    };
    Some((payment.appointment_id, payment_event))
}

/// The appointments whose payment state the new Stripe items of a batch may move: locked in
/// one round trip before the handlers run (`appointments::lock_payment_states`).
async fn lock_payments(
    state: &AppState,
    conn: &mut PgConnection,
    tenant: TenantId,
    items: &[&Item<'_>],
) -> Result<PaymentStates, ApiError> {
    let mut ids: Vec<uuid::Uuid> = items
        .iter()
        .filter_map(|item| match item {
            Item::Stripe(event) if payments_apply(state.config.environment, event.livemode) => {
                payment_event_of(event).and_then(|(appointment, _)| appointment)
            }
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(store_postgres::appointments::lock_payment_states(conn, tenant, &ids).await?)
}

/// Payment states locked for a batch's Stripe handlers.
type PaymentStates = std::collections::HashMap<uuid::Uuid, scheduling::PaymentState>;

/// A verified Stripe payment event moves the payment state of the appointment named in its
/// metadata, through the order-independent rule of `scheduling::PaymentState` (the only way the
/// state changes). Events of other types, without an appointment id, or naming an appointment
/// this practice does not have are recorded in the inbox and acknowledged. `payments` holds the
/// locked states of every appointment the batch's events name (see [`lock_payments`]).
async fn stripe_payment(
    conn: &mut PgConnection,
    tenant: TenantId,
    event: &StripeEvent,
    payments: &mut PaymentStates,
) -> Result<Value, ApiError> {
    let Some((appointment, payment_event)) = payment_event_of(event) else {
        return Ok(json!({}));
    };
    let Some(appointment) = appointment else {
        return Ok(json!({ "payment": "no_appointment_id" }));
    };
    let applied =
        store_postgres::appointments::apply_locked_payment_event(conn, tenant, payments, appointment, payment_event)
            .await?;
    match applied {
        None => Ok(json!({ "payment": "unknown_appointment" })),
        Some((state, update)) => Ok(json!({
            "payment": payment_event.as_str(),
            "payment_state": state.as_str(),
            "payment_update": match update {
                scheduling::PaymentUpdate::Changed(_) => "changed",
                scheduling::PaymentUpdate::Unchanged => "unchanged",
                scheduling::PaymentUpdate::Stale => "stale",
            },
        })),
    }
}

async fn twilio(cx: &mut Handling<'_>, conn: &mut PgConnection, event: &TwilioEvent) -> Result<Value, ApiError> {
    match &event.resource {
        // An inbound message (Twilio sends `SmsStatus=received` with it); anything else is a
        // status callback for a message Praxis sent, or a call, recorded in the inbox only.
        TwilioResource::Message { sid } if event.status.as_deref().is_none_or(|s| s == "received") => {
            let Some(from) = event.from.as_ref().map(Pii::expose) else {
                return Ok(json!({ "patients_matched": 0 }));
            };
            // Twilio's WhatsApp senders are `whatsapp:+<number>`; SMS senders the bare number.
            let (channel, number) = match from.strip_prefix("whatsapp:") {
                Some(number) => (InboundChannel::WhatsApp, number),
                None => (InboundChannel::Sms, from.as_str()),
            };
            let inbound = Inbound {
                provider: Provider::Twilio,
                channel,
                message_id: sid,
                from: number,
                message_type: "text",
                text: event.body.as_ref().map(Pii::expose).map(String::as_str),
                sent_at: None,
            };
            inbound_message(cx, conn, &inbound).await
        }
        TwilioResource::Message { .. } | TwilioResource::Call { .. } => Ok(json!({})),
    }
}

/// An inbound message, whichever provider delivered it.
struct Inbound<'a> {
    provider: Provider,
    channel: InboundChannel,
    message_id: &'a str,
    /// The sender's number (E.164).
    from: &'a str,
    message_type: &'a str,
    text: Option<&'a str>,
    sent_at: Option<OffsetDateTime>,
}

/// Logs the message (digest only) once per matched patient (or once unmatched), and for an
/// opt-out keyword withdraws the channel's marketing consent of every matched patient.
async fn inbound_message(
    cx: &mut Handling<'_>,
    conn: &mut PgConnection,
    message: &Inbound<'_>,
) -> Result<Value, ApiError> {
    let (tenant, now) = (cx.tenant, cx.now);
    let patients = match cx.index_key {
        Some(key) => {
            let query = PatientQuery {
                phone_index: Some(app::protection::phone_index(key, message.from)),
                ..PatientQuery::default()
            };
            store_postgres::patients::list(conn, tenant, query, None, MAX_MATCHED_PATIENTS).await?
        }
        None => Vec::new(),
    };
    let stop = message.text.is_some_and(is_stop_keyword);
    let channel = match message.channel {
        InboundChannel::WhatsApp => "whatsapp",
        InboundChannel::Sms | InboundChannel::Email => "sms",
    };
    let row = |patient: Option<PatientId>| NewMessage {
        tenant,
        provider: message.provider.slug(),
        channel,
        message_id: message.message_id.to_owned(),
        patient,
        message_type: message.message_type.to_owned(),
        content_sha256: message.text.map(|text| sha256(text.as_bytes())),
        stop_keyword: stop,
        sent_at: message.sent_at,
        received_at: now,
    };
    if patients.is_empty() {
        store_postgres::webhooks::log_message(conn, &row(None)).await?;
    }
    let mut withdrawn = 0;
    for patient in &patients {
        store_postgres::webhooks::log_message(conn, &row(Some(patient.id))).await?;
        if stop && withdraw_marketing(cx, conn, patient.id, message).await? {
            withdrawn += 1;
        }
    }
    Ok(json!({ "channel": channel, "patients_matched": patients.len(), "opt_out": stop, "withdrawn": withdrawn }))
}

/// Withdraws the marketing consent of `message`'s channel for `patient` with the message as
/// evidence (`app::consents::withdraw_on_opt_out`: the consent use case, in this delivery's
/// transaction). Returns whether it did.
async fn withdraw_marketing(
    cx: &mut Handling<'_>,
    conn: &mut PgConnection,
    patient: PatientId,
    message: &Inbound<'_>,
) -> Result<bool, ApiError> {
    let proof = NoteRef::parse(&evidence_ref(message)).map_err(ApiError::internal)?;
    let withdrawn = app::consents::withdraw_on_opt_out(
        conn,
        cx.tenant,
        &cx.actor,
        patient,
        consent::marketing_purpose_for_channel(message.channel),
        message.channel.evidence_channel(),
        proof,
        &*cx.state.clock,
    )
    .await?;
    match withdrawn {
        // Appended with the batch's other entries at the end of the transaction (`process_in`).
        Some(entry) => {
            cx.audit.push(with_request(entry));
            Ok(true)
        }
        None => Ok(false),
    }
}

/// How a withdrawal's evidence names the message that asked for it: as the inbox keys it
/// ([`dedupe_keys`]). A WhatsApp message id encodes the sender's phone number, and consent
/// events are append-only evidence kept after the patient's erasure, so WhatsApp's is digested;
/// Twilio's `MessageSid` is an opaque id and stays as it is.
fn evidence_ref(message: &Inbound<'_>) -> String {
    if message.provider == Provider::WhatsApp { key_digest(message.message_id) } else { message.message_id.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_production_only_live_stripe_events_move_payment_state() {
        use crate::config::Environment;
        assert!(payments_apply(Environment::Production, true));
        assert!(!payments_apply(Environment::Production, false));
        assert!(payments_apply(Environment::Development, false));
        assert!(payments_apply(Environment::Development, true));
    }
}
