//! Inbound webhooks (migration `20261122000010_webhooks.sql`): the inbox that records each
//! processed event key once, and the metadata log of inbound messages.
//!
//! Every function runs in the caller's transaction. The inbox row is meant to be the first write
//! of a webhook's transaction: [`record_event`] answers whether this transaction is the one that
//! processes the event, and a concurrent transaction inserting the same key waits for this one
//! to end (then finds the row, or inserts it if this one rolled back).

use crate::StoreError;
use kernel::{PatientId, TenantId};
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

/// One processed event key, as recorded in the inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxEvent<'a> {
    pub tenant: TenantId,
    /// The provider's slug (`webhooks::Provider::slug`).
    pub provider: &'a str,
    /// The provider's de-duplication key for the event.
    pub event_key: &'a str,
    /// `payment_intent.succeeded`, `message`, `status-update`, …
    pub event_type: &'a str,
    /// SHA-256 of the delivery's raw body.
    pub body_sha256: [u8; 32],
    pub received_at: OffsetDateTime,
    /// Non-personal facts about the outcome (ids, states, counts).
    pub detail: serde_json::Value,
}

/// Inserts the event key unless it is already recorded. `true`: this transaction owns the event
/// and must process it; `false`: it was processed before (a duplicate).
pub async fn record_event(conn: &mut PgConnection, event: &InboxEvent<'_>) -> Result<bool, StoreError> {
    let recorded = record_events(conn, std::slice::from_ref(event)).await?;
    Ok(recorded.first().copied().unwrap_or(false))
}

/// [`record_event`] for many events of one practice in one statement (a batch of deliveries).
/// Answers in `events`' order; of several events with the same provider and key, only the first
/// can be `true`. Keys are inserted in sorted order, so two batches sharing keys queue on the
/// first shared key instead of deadlocking.
pub async fn record_events(conn: &mut PgConnection, events: &[InboxEvent<'_>]) -> Result<Vec<bool>, StoreError> {
    let Some(first) = events.first() else { return Ok(Vec::new()) };
    let tenant = first.tenant;
    if events.iter().any(|e| e.tenant != tenant) {
        return Err(StoreError::Misuse("a batch of inbox events spans several practices"));
    }
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by(|&a, &b| (events[a].provider, events[a].event_key).cmp(&(events[b].provider, events[b].event_key)));
    let mut provider = Vec::with_capacity(events.len());
    let mut event_key = Vec::with_capacity(events.len());
    let mut event_type = Vec::with_capacity(events.len());
    let mut body_sha256 = Vec::with_capacity(events.len());
    let mut received_at = Vec::with_capacity(events.len());
    let mut detail = Vec::with_capacity(events.len());
    for &i in &order {
        let event = &events[i];
        provider.push(event.provider);
        event_key.push(event.event_key);
        event_type.push(event.event_type);
        body_sha256.push(event.body_sha256.as_slice());
        received_at.push(event.received_at);
        detail.push(&event.detail);
    }
    let inserted: Vec<(String, String)> = crate::sql::query_as(
        "INSERT INTO webhook_inbox (tenant_id, provider, event_key, event_type, body_sha256, received_at, detail) \
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bytea[], $6::timestamptz[], $7::jsonb[]) \
         ON CONFLICT (tenant_id, provider, event_key) DO NOTHING \
         RETURNING provider, event_key",
    )
    .bind(tenant.as_uuid())
    .bind(&provider)
    .bind(&event_key)
    .bind(&event_type)
    .bind(&body_sha256)
    .bind(&received_at)
    .bind(&detail)
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    let mut unclaimed: std::collections::HashSet<(&str, &str)> =
        inserted.iter().map(|(provider, key)| (provider.as_str(), key.as_str())).collect();
    // The first event with an inserted key owns it; later copies in the batch are duplicates.
    Ok(events.iter().map(|event| unclaimed.remove(&(event.provider, event.event_key))).collect())
}

/// Whether an event key is recorded: the ingest path asks it for keys another copy claimed in
/// Redis (a claim alone does not prove the event was processed); tests and operators use it too.
pub async fn is_recorded(
    conn: &mut PgConnection,
    tenant: TenantId,
    provider: &str,
    event_key: &str,
) -> Result<bool, StoreError> {
    let found: Option<i32> = crate::sql::query_scalar(
        "SELECT 1 FROM webhook_inbox WHERE tenant_id = $1 AND provider = $2 AND event_key = $3",
    )
    .bind(tenant.as_uuid())
    .bind(provider)
    .bind(event_key)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(found.is_some())
}

/// An inbound message to log. No text: only its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub tenant: TenantId,
    /// `whatsapp` or `twilio`.
    pub provider: &'static str,
    /// `whatsapp` or `sms`.
    pub channel: &'static str,
    pub message_id: String,
    /// The patient whose phone number sent it, when one matched.
    pub patient: Option<PatientId>,
    pub message_type: String,
    /// SHA-256 of the text, when the message has text.
    pub content_sha256: Option<[u8; 32]>,
    /// Whether the text was an opt-out keyword.
    pub stop_keyword: bool,
    pub sent_at: Option<OffsetDateTime>,
    pub received_at: OffsetDateTime,
}

pub async fn log_message(conn: &mut PgConnection, message: &NewMessage) -> Result<(), StoreError> {
    crate::sql::query(
        "INSERT INTO webhook_messages (id, tenant_id, provider, channel, message_id, patient_id, message_type, \
            content_sha256, stop_keyword, sent_at, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(Uuid::now_v7())
    .bind(message.tenant.as_uuid())
    .bind(message.provider)
    .bind(message.channel)
    .bind(&message.message_id)
    .bind(message.patient.map(|p| *p.as_uuid()))
    .bind(&message.message_type)
    .bind(message.content_sha256.map(|d| d.to_vec()))
    .bind(message.stop_keyword)
    .bind(message.sent_at)
    .bind(message.received_at)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(())
}

/// A logged message, as the patient's export shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub id: Uuid,
    pub provider: String,
    pub channel: String,
    pub message_id: String,
    pub message_type: String,
    pub content_sha256: Option<Vec<u8>>,
    pub stop_keyword: bool,
    pub sent_at: Option<OffsetDateTime>,
    pub received_at: OffsetDateTime,
}

/// The messages logged for a patient the caller's context can see, oldest first.
pub async fn messages_of_patient(
    conn: &mut PgConnection,
    tenant: TenantId,
    patient: PatientId,
) -> Result<Vec<MessageRow>, StoreError> {
    let rows = crate::sql::query(
        "SELECT id, provider, channel, message_id, message_type, content_sha256, stop_keyword, sent_at, received_at \
         FROM webhook_messages WHERE tenant_id = $1 AND patient_id = $2 ORDER BY received_at, id",
    )
    .bind(tenant.as_uuid())
    .bind(patient.as_uuid())
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    rows.iter()
        .map(|row| {
            Ok(MessageRow {
                id: row.try_get("id")?,
                provider: row.try_get("provider")?,
                channel: row.try_get("channel")?,
                message_id: row.try_get("message_id")?,
                message_type: row.try_get("message_type")?,
                content_sha256: row.try_get("content_sha256")?,
                stop_keyword: row.try_get("stop_keyword")?,
                sent_at: row.try_get("sent_at")?,
                received_at: row.try_get("received_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Deletes a patient's message log (on erasure). Returns how many rows went.
pub async fn erase_patient_messages(
    conn: &mut PgConnection,
    tenant: TenantId,
    patient: PatientId,
) -> Result<u64, StoreError> {
    let result = crate::sql::query("DELETE FROM webhook_messages WHERE tenant_id = $1 AND patient_id = $2")
        .bind(tenant.as_uuid())
        .bind(patient.as_uuid())
        .execute(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    Ok(result.rows_affected())
}
