//! Consent per purpose: the current state of every purpose, the history with its evidence, and
//! recording a change, whichever door asks for it (the API, or a patient's STOP message arriving
//! by webhook).
//!
//! A change is decided by the pure state machine (`crates/consent`) over the stored history,
//! with the patient row locked so one patient's changes happen one at a time; the unique
//! `(patient, purpose, seq)` key would refuse a second change computed from the same history
//! anyway.

use crate::patients::{Lock, live_patient};
use crate::{Caller, Error, Result, Services};
use audit::{Action, AuditEvent};
use consent::{
    Channel, ConsentAction, ConsentCommand, ConsentError, ConsentEvent, ConsentRecord, ConsentText, Evidence, NoteRef,
    Purpose,
};
use identity::Permission;
use kernel::{Actor, Clock, PatientId, TenantId};
use serde_json::json;
use sqlx::PgConnection;
use store_postgres::patients as store;
use time::OffsetDateTime;

/// A consent change as a caller submits it: names as `crates/consent` spells them.
#[derive(Debug, Clone, Default)]
pub struct ConsentChange {
    pub purpose: String,
    pub action: String,
    /// Only with `grant`: when the consent lapses.
    pub expires_at: Option<OffsetDateTime>,
    pub text_version: String,
    /// The exact consent text shown, or its SHA-256 in `text_sha256`.
    pub text: Option<String>,
    pub text_sha256: Option<String>,
    pub channel: String,
    pub evidence_ref: Option<String>,
}

/// A recorded change: the purpose's record after it, and every purpose's record (for
/// `may_contact`, which for marketing also needs `data_processing`).
#[derive(Debug, Clone)]
pub struct ChangedConsent {
    pub record: ConsentRecord,
    pub all: Vec<ConsentRecord>,
}

impl Services {
    /// The consent history of a patient the caller may see (`consent.read`), in (purpose, seq)
    /// order.
    pub async fn consent_history(&self, caller: &Caller, patient: PatientId) -> Result<Vec<ConsentEvent>> {
        self.authorize(caller, Permission::ConsentRead, "consent").await?;
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        live_patient(&mut tx, caller.tenant, patient, Lock::No).await?;
        let history = store::consent_history(&mut tx, caller.tenant, patient).await?;
        tx.commit().await?;
        Ok(history)
    }

    /// The record of every purpose with history, for a patient the caller may see.
    pub async fn consent_records(&self, caller: &Caller, patient: PatientId) -> Result<Vec<ConsentRecord>> {
        let history = self.consent_history(caller, patient).await?;
        records_of(patient, &history)
    }

    /// Records a consent change (`consent.record`) with its evidence, and its audit entry.
    pub async fn change_consent(
        &self,
        caller: &Caller,
        patient: PatientId,
        change: ConsentChange,
    ) -> Result<ChangedConsent> {
        self.authorize(caller, Permission::ConsentRecord, "consent").await?;
        let purpose: Purpose = change.purpose.parse().map_err(refusal)?;
        let action: ConsentAction = change.action.parse().map_err(|e| refusal(ConsentError::from(e)))?;
        let channel: Channel = change.channel.parse().map_err(refusal)?;
        let command = match action {
            ConsentAction::Grant => ConsentCommand::Grant { expires_at: change.expires_at },
            _ if change.expires_at.is_some() => {
                return Err(Error::invalid("expires_at", "only a grant can have an expiry"));
            }
            ConsentAction::Request => ConsentCommand::Request,
            ConsentAction::Withdraw => ConsentCommand::Withdraw,
            ConsentAction::Archive => ConsentCommand::Archive,
        };
        let text =
            ConsentText::from_submission(&change.text_version, change.text.as_deref(), change.text_sha256.as_deref())
                .map_err(refusal)?;
        let mut evidence = Evidence::new(text, channel, caller.actor.clone());
        if let Some(reference) = &change.evidence_ref {
            evidence = evidence.with_note_ref(NoteRef::parse(reference).map_err(refusal)?);
        }
        let now = self.clock.now();

        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        live_patient(&mut tx, caller.tenant, patient, Lock::ForUpdate).await?;
        let history = store::consent_history(&mut tx, caller.tenant, patient).await?;
        let mut record = replay(patient, purpose, &history)?;
        let event = record.apply(command, evidence, now).map_err(refusal)?;
        store::record_consent(&mut tx, caller.tenant, &event, &record).await?;
        let entry = change_entry(caller.audit_event(audit_action(action), "consent", self.clock()), patient, &event);
        store_postgres::audit::append(&mut tx, entry).await?;
        tx.commit().await?;
        let mut all: Vec<ConsentRecord> =
            records_of(patient, &history)?.into_iter().filter(|r| r.purpose() != purpose).collect();
        all.push(record.clone());
        Ok(ChangedConsent { record, all })
    }
}

/// A patient's opt-out (a STOP message) withdraws `purpose`, inside the caller's transaction
/// (the webhook ingest's shared one): the same state machine and evidence rules as
/// [`Services::change_consent`]. Withdraws only what may be withdrawn now: a consent never
/// given, already withdrawn, or of an erased or invisible patient is left as it is (`None`).
/// Returns the audit entry for the caller to append in that transaction.
#[expect(clippy::too_many_arguments, reason = "the transaction's context, spelled out: no hidden state")]
pub async fn withdraw_on_opt_out(
    conn: &mut PgConnection,
    tenant: TenantId,
    actor: &Actor,
    patient: PatientId,
    purpose: Purpose,
    channel: Channel,
    proof: NoteRef,
    clock: &dyn Clock,
) -> Result<Option<AuditEvent>> {
    let now = clock.now();
    // Locks the patient: consent changes of one patient happen one at a time.
    match live_patient(conn, tenant, patient, Lock::ForUpdate).await {
        Ok(_) => {}
        Err(Error::NotFound | Error::Gone) => return Ok(None),
        Err(other) => return Err(other),
    }
    let history = store::consent_history(conn, tenant, patient).await?;
    let mut record = replay(patient, purpose, &history)?;
    // The withdrawal is evidenced by the text that was consented to.
    let Some(text) = record.text().cloned() else { return Ok(None) };
    if !record.allowed_actions(now).contains(&ConsentAction::Withdraw) {
        return Ok(None);
    }
    let evidence = Evidence::new(text, channel, actor.clone()).with_note_ref(proof);
    // A change stamped later than this server's clock (clock skew between instances) fails the
    // delivery: the provider's retry will find it in order.
    let event = record.apply(ConsentCommand::Withdraw, evidence, now).map_err(Error::internal)?;
    store::record_consent(conn, tenant, &event, &record).await?;
    let entry = AuditEvent::new(tenant, actor.clone(), Action::ConsentWithdrawn, "consent", clock);
    Ok(Some(change_entry(entry, patient, &event)))
}

/// The records of every purpose that has history, folded from `history` ((purpose, seq) order).
/// A history that does not replay is stored corruption, never the caller's fault.
pub fn records_of(patient: PatientId, history: &[ConsentEvent]) -> Result<Vec<ConsentRecord>> {
    Purpose::ALL
        .iter()
        .filter(|purpose| history.iter().any(|e| e.purpose() == **purpose))
        .map(|purpose| replay(patient, *purpose, history))
        .collect()
}

fn replay(patient: PatientId, purpose: Purpose, history: &[ConsentEvent]) -> Result<ConsentRecord> {
    ConsentRecord::replay(patient, purpose, history.iter().filter(|e| e.purpose() == purpose)).map_err(Error::internal)
}

/// The audit entry of a recorded change: the patient, and the change's facts (no personal data).
fn change_entry(entry: AuditEvent, patient: PatientId, event: &ConsentEvent) -> AuditEvent {
    entry.with_resource_id(patient.to_string()).with_detail(json!({
        "purpose": event.purpose().as_str(),
        "seq": event.seq(),
        "from": event.from_state().as_str(),
        "to": event.to_state().as_str(),
        "channel": event.evidence().channel.as_str(),
    }))
}

fn audit_action(action: ConsentAction) -> Action {
    match action {
        ConsentAction::Request => Action::ConsentRequested,
        ConsentAction::Grant => Action::ConsentGranted,
        ConsentAction::Withdraw => Action::ConsentWithdrawn,
        ConsentAction::Archive => Action::ConsentArchived,
    }
}

/// The consent domain's refusals in the caller's terms: input problems name their field, an
/// illegal transition lists the allowed actions, corrupt stored history is our fault.
fn refusal(error: ConsentError) -> Error {
    match &error {
        ConsentError::IllegalTransition { from, action, allowed } => Error::IllegalTransition {
            detail: format!("Cannot {} a consent that is {}.", action.as_str(), from.as_str()),
            allowed: allowed.iter().map(|a| a.as_str().to_owned()).collect(),
        },
        ConsentError::TimeBeforeLastChange { .. } => {
            Error::Conflict("The consent changed after this request's time; retry.".into())
        }
        e if e.is_storage_corruption() => Error::internal(error),
        e => Error::invalid(e.field().unwrap_or("body"), e.to_string()),
    }
}
