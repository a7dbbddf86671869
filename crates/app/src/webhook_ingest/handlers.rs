//! The shared transaction of a group of deliveries (`super::batch`), and the handlers per event
//! type: Stripe payment events move an appointment's payment state; inbound WhatsApp and Twilio
//! messages are logged per matched patient, and a STOP withdraws the channel's marketing consent
//! (`crate::consents::withdraw_on_opt_out`); everything else is recorded in the inbox.

use super::{Outcome, PaymentEvents, WebhookIngest};
use crate::{Caller, Error, Result, Services};
use audit::{Action, AuditEvent};
use consent::{InboundChannel, NoteRef};
use crypto::BlindIndexKey;
use kernel::{Clock, PatientId, Pii, TenantId};
use serde_json::{Value, json};
use sqlx::PgConnection;
use std::sync::Arc;
use store_postgres::patients::PatientQuery;
use store_postgres::webhooks::{InboxEvent, NewMessage};
use time::OffsetDateTime;
use webhooks::{
    Provider, StandardEvent, StripeEvent, StripeEventKind, TwilioEvent, TwilioResource, VapiEvent, WebhookEvent,
    WhatsAppMessage, WhatsAppStatus, is_stop_keyword,
};

/// Most patients one sender's number is matched to (a family sharing a phone).
const MAX_MATCHED_PATIENTS: u32 = 10;

/// One unit of a delivery with its own de-duplication key.
#[derive(Clone, Copy)]
pub(super) enum Item<'e> {
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
pub(super) fn dedupe_keys(event: &WebhookEvent) -> Vec<String> {
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
pub(super) fn items(event: &WebhookEvent) -> Result<Vec<(String, Item<'_>)>> {
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
        return Err(Error::internal(anyhow::anyhow!("dedupe keys and items of a webhook event do not line up")));
    }
    Ok(keys.into_iter().zip(items).collect())
}

/// The SHA-256 of `bytes`.
pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
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

/// A verified delivery whose event keys its caller holds, ready for a shared transaction.
pub(super) struct Delivery {
    /// The practice's webhook (`Actor::Webhook`), with the id of the request that carried the
    /// delivery: the audit entries written for it in a shared transaction are its own.
    pub caller: Caller,
    pub event: WebhookEvent,
    /// The keys this delivery processes (claimed, or claimed elsewhere but not recorded).
    pub held: Vec<String>,
    pub body_sha256: [u8; 32],
    /// The practice's blind-index key, when an item matches senders to patients.
    pub index_key: Option<Arc<BlindIndexKey>>,
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
    services: &Services,
    ingest: &WebhookIngest,
    tenant: TenantId,
    deliveries: &[Delivery],
) -> Result<Vec<Outcome>, BatchError> {
    let now = services.clock.now();
    let items_of: Vec<Vec<(String, Item<'_>)>> =
        deliveries.iter().map(|delivery| items(&delivery.event)).collect::<Result<_>>().map_err(BatchError::Failed)?;
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

    // Every delivery's caller is the system's work for this practice: its service context.
    let tx = store_postgres::begin(&services.db, &store_postgres::DbContext::service(tenant))
        .await
        .map_err(|e| BatchError::NotStarted(e.into()))?;
    let batch = Batch { clock: &*services.clock, payment_events: ingest.payment_events, tenant, now };
    batch.process_in(deliveries, &pending, &inbox, tx).await.map_err(BatchError::Failed)
}

/// Why a batch failed: before any of its work began (no transaction: the database is
/// unavailable, and each delivery alone would fail the same way), or during it.
#[derive(Debug)]
pub(super) enum BatchError {
    NotStarted(Error),
    Failed(Error),
}

/// What a batch's transaction works with besides the transaction itself.
struct Batch<'a> {
    clock: &'a dyn Clock,
    payment_events: PaymentEvents,
    tenant: TenantId,
    /// The time of receipt of every delivery in the batch.
    now: OffsetDateTime,
}

impl Batch<'_> {
    /// The transaction of [`process_batch`]. Audit entries are appended last, all at once: the
    /// practice's chain head is the last lock the transaction takes, after any patient or
    /// appointment row a handler locks, the order every other writer follows too.
    async fn process_in(
        &self,
        deliveries: &[Delivery],
        pending: &[Pending<'_>],
        inbox: &[InboxEvent<'_>],
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    ) -> Result<Vec<Outcome>> {
        // First write for the keys: a concurrent copy waits on its key until this transaction
        // ends.
        let new = store_postgres::webhooks::record_events(&mut tx, inbox).await?;
        let new_items: Vec<&Item<'_>> =
            pending.iter().zip(&new).filter(|(_, new)| **new).map(|(p, _)| &p.item).collect();
        let mut payments = self.lock_payments(&mut tx, &new_items).await?;
        let mut processed: Vec<Vec<(&str, &str, Value)>> = deliveries.iter().map(|_| Vec::new()).collect();
        // The audit entries the handlers ask for (a consent withdrawal), per delivery.
        let mut handler_audit: Vec<Vec<AuditEvent>> = deliveries.iter().map(|_| Vec::new()).collect();
        for (p, new) in pending.iter().zip(new) {
            if !new {
                continue; // processed before (its claim was lost, or never asked for)
            }
            let delivery = &deliveries[p.delivery];
            let mut handling = Handling {
                batch: self,
                caller: &delivery.caller,
                index_key: delivery.index_key.as_ref(),
                audit: &mut handler_audit[p.delivery],
            };
            let outcome = handling.handle(&mut tx, &p.item, &mut payments).await?;
            processed[p.delivery].push((p.key, p.event_type.as_str(), merge(p.facts.clone(), outcome)));
        }
        // Per delivery: what its handlers did, then its receipt.
        let mut entries = Vec::new();
        for ((delivery, processed), handled) in deliveries.iter().zip(&processed).zip(handler_audit) {
            entries.extend(handled);
            entries.extend(received_event(self.clock, delivery, processed));
        }
        store_postgres::audit::append_all(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(processed
            .iter()
            .map(|p| if p.is_empty() { Outcome::Duplicate } else { Outcome::Processed { events: p.len() } })
            .collect())
    }

    /// The appointments whose payment state the new Stripe items of a batch may move: locked in
    /// one round trip before the handlers run (`appointments::lock_payment_states`).
    async fn lock_payments(&self, conn: &mut PgConnection, items: &[&Item<'_>]) -> Result<PaymentStates> {
        let mut ids: Vec<uuid::Uuid> = items
            .iter()
            .filter_map(|item| match item {
                Item::Stripe(event) if self.payment_events.apply(event.livemode) => {
                    payment_event_of(event).and_then(|(appointment, _)| appointment)
                }
                _ => None,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(store_postgres::appointments::lock_payment_states(conn, self.tenant, &ids).await?)
    }
}

/// The `webhook.received` entry of a delivery: its first processed key, the event types, and
/// for a single event its facts. `None` when nothing in it was new.
fn received_event(clock: &dyn Clock, delivery: &Delivery, processed: &[(&str, &str, Value)]) -> Option<AuditEvent> {
    let (first_key, _, _) = processed.first()?;
    let event_types: Vec<&str> = processed.iter().map(|(_, event_type, _)| *event_type).collect();
    let mut detail = json!({ "events": processed.len(), "event_types": dedup_sorted(event_types) });
    if let [(_, _, only)] = processed {
        detail = merge(detail, only.clone());
    }
    Some(
        delivery
            .caller
            .audit_event(Action::WebhookReceived, "webhook_event", clock)
            .with_resource_id(audit_resource_id(first_key))
            .with_detail(detail),
    )
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
    batch: &'a Batch<'a>,
    /// The delivery's caller: the actor and request id of its audit entries.
    caller: &'a Caller,
    /// The practice's blind-index key, when an item matches senders to patients.
    index_key: Option<&'a Arc<BlindIndexKey>>,
    /// The audit entries the handlers ask for, appended with the delivery's receipt at the end of
    /// the transaction (`Batch::process_in`).
    audit: &'a mut Vec<AuditEvent>,
}

impl Handling<'_> {
    /// Handles one new item; returns non-personal facts about what it did (for the audit entry).
    async fn handle(
        &mut self,
        conn: &mut PgConnection,
        item: &Item<'_>,
        payments: &mut PaymentStates,
    ) -> Result<Value> {
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
                self.inbound_message(conn, &inbound).await
            }
            Item::Twilio(event) => self.twilio(conn, event).await,
            Item::Stripe(event) => {
                if !self.batch.payment_events.apply(event.livemode) {
                    return Ok(json!({ "payment": "test_mode_ignored" }));
                }
                stripe_payment(conn, self.batch.tenant, event, payments).await
            }
            // Recorded in the inbox (with their metadata, see `describe`) and acknowledged.
            Item::WhatsAppStatus(_) | Item::Vapi(_) | Item::Standard(_) => Ok(json!({})),
        }
    }

    async fn twilio(&mut self, conn: &mut PgConnection, event: &TwilioEvent) -> Result<Value> {
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
                self.inbound_message(conn, &inbound).await
            }
            TwilioResource::Message { .. } | TwilioResource::Call { .. } => Ok(json!({})),
        }
    }

    /// Logs the message (digest only) once per matched patient (or once unmatched), and for an
    /// opt-out keyword withdraws the channel's marketing consent of every matched patient.
    async fn inbound_message(&mut self, conn: &mut PgConnection, message: &Inbound<'_>) -> Result<Value> {
        let (tenant, now) = (self.batch.tenant, self.batch.now);
        let patients = match self.index_key {
            Some(key) => {
                let query = PatientQuery {
                    phone_index: Some(crate::protection::phone_index(key, message.from)),
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
            if stop && self.withdraw_marketing(conn, patient.id, message).await? {
                withdrawn += 1;
            }
        }
        Ok(json!({ "channel": channel, "patients_matched": patients.len(), "opt_out": stop, "withdrawn": withdrawn }))
    }

    /// Withdraws the marketing consent of `message`'s channel for `patient` with the message as
    /// evidence (`crate::consents::withdraw_on_opt_out`: the consent use case, in this delivery's
    /// transaction). Returns whether it did.
    async fn withdraw_marketing(
        &mut self,
        conn: &mut PgConnection,
        patient: PatientId,
        message: &Inbound<'_>,
    ) -> Result<bool> {
        let proof = NoteRef::parse(&evidence_ref(message)).map_err(Error::internal)?;
        let withdrawn = crate::consents::withdraw_on_opt_out(
            conn,
            self.caller.tenant,
            &self.caller.actor,
            patient,
            consent::marketing_purpose_for_channel(message.channel),
            message.channel.evidence_channel(),
            proof,
            self.batch.clock,
        )
        .await?;
        match withdrawn {
            // Appended with the batch's other entries at the end of the transaction
            // (`Batch::process_in`), stamped with the delivery's request.
            Some(entry) => {
                self.audit.push(match &self.caller.request_id {
                    Some(id) => entry.with_request_id(id.clone()),
                    None => entry,
                });
                Ok(true)
            }
            None => Ok(false),
        }
    }
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

/// Payment states locked for a batch's Stripe handlers.
type PaymentStates = std::collections::HashMap<uuid::Uuid, scheduling::PaymentState>;

/// A verified Stripe payment event moves the payment state of the appointment named in its
/// metadata, through the order-independent rule of `scheduling::PaymentState` (the only way the
/// state changes). Events of other types, without an appointment id, or naming an appointment
/// this practice does not have are recorded in the inbox and acknowledged. `payments` holds the
/// locked states of every appointment the batch's events name (see `Batch::lock_payments`).
async fn stripe_payment(
    conn: &mut PgConnection,
    tenant: TenantId,
    event: &StripeEvent,
    payments: &mut PaymentStates,
) -> Result<Value> {
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

/// How a withdrawal's evidence names the message that asked for it: as the inbox keys it
/// ([`dedupe_keys`]). A WhatsApp message id encodes the sender's phone number, and consent
/// events are append-only evidence kept after the patient's erasure, so WhatsApp's is digested;
/// Twilio's `MessageSid` is an opaque id and stays as it is.
fn evidence_ref(message: &Inbound<'_>) -> String {
    if message.provider == Provider::WhatsApp { key_digest(message.message_id) } else { message.message_id.to_owned() }
}
