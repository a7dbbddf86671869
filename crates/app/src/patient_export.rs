//! A patient's GDPR export (Art. 15/20): everything Praxis holds on them, decrypted, gathered
//! in one transaction: the record, consents and their history, appointments with their notes
//! and reminders, the message log, and the audit entries about them.
//!
//! Its own module because it reads across areas (patients, consents, appointments, the audit
//! trail) that do not depend on each other.

use crate::patients::{Lock, Patient, live_patient};
use crate::protection::AppointmentNote;
use crate::{Caller, Error, Result, Services};
use ::patients::PatientField;
use audit::{Action, AuditFilter, ChainedEntry, Page};
use consent::{ConsentEvent, ConsentRecord};
use identity::Permission;
use kernel::{PatientId, TenantId};
use serde_json::json;
use sqlx::PgConnection;
use store_postgres::appointments::{AppointmentRow, ReminderRow};
use store_postgres::webhooks::MessageRow;
use time::OffsetDateTime;

/// Audit entries read per round trip when an export gathers the patient's access log.
const ACCESS_LOG_PAGE: u32 = 200;

/// One appointment with what a full read shows: the stored booking, its notes opened (`None`
/// when absent or when the patient's key was destroyed) and its reminders.
#[derive(Debug, Clone)]
pub struct AppointmentDetails {
    pub appointment: AppointmentRow,
    pub notes: Option<String>,
    /// Only for a cancelled appointment.
    pub cancel_note: Option<String>,
    pub reminders: Vec<ReminderRow>,
}

/// Everything Praxis holds on a patient (GDPR Art. 15/20), decrypted.
#[derive(Debug, Clone)]
pub struct PatientExport {
    pub generated_at: OffsetDateTime,
    /// The whole record, clinical notes included (the right of access covers them).
    pub patient: Patient,
    /// The current record of every purpose with history.
    pub consents: Vec<ConsentRecord>,
    /// Every consent change with its evidence, in (purpose, seq) order.
    pub consent_history: Vec<ConsentEvent>,
    pub appointments: Vec<AppointmentDetails>,
    /// Inbound messages from the patient's number: metadata and the text's digest, never the
    /// text.
    pub messages: Vec<MessageRow>,
    /// Audit entries about this patient (record, key, consents), newest first.
    pub access_log: Vec<ChainedEntry>,
}

impl Services {
    /// Everything Praxis holds on a patient (`patient.export`), decrypted: the whole record,
    /// consents and their history, appointments with notes and reminders, the message log, and
    /// the audit entries about them. Audited as `patient.export`.
    pub async fn export_patient(&self, caller: &Caller, id: PatientId) -> Result<PatientExport> {
        self.authorize(caller, Permission::PatientExport, "patient").await?;
        let tenant = caller.tenant;
        let generated_at = self.clock.now();
        // The access log first (its own read-only transaction), so the export includes every
        // access up to this moment.
        let access_log = self.access_log_of(tenant, id).await?;
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        let row = live_patient(&mut tx, tenant, id, Lock::No).await?;
        let data = self.open_patient_fields(&mut tx, caller, &row, &PatientField::ALL).await?;
        let consent_history = store_postgres::patients::consent_history(&mut tx, tenant, id).await?;
        let consents = crate::consents::records_of(id, &consent_history)?;
        let messages = store_postgres::webhooks::messages_of_patient(&mut tx, tenant, id).await?;
        let mut appointments = Vec::new();
        for appointment in store_postgres::appointments::of_patient(&mut tx, tenant, id).await? {
            appointments.push(self.appointment_details(&mut tx, caller, appointment).await?);
        }
        let event = caller
            .audit_event(Action::PatientExport, "patient", self.clock())
            .with_resource_id(id.to_string())
            .with_detail(json!({ "audit_entries": access_log.len(), "consent_events": consent_history.len() }));
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(PatientExport {
            generated_at,
            patient: Patient::new(&row, data),
            consents,
            consent_history,
            appointments,
            messages,
            access_log,
        })
    }

    /// An appointment as a full read shows it, in `conn`'s transaction: its notes opened with the
    /// patient's key (each KMS unwrap audited as the caller's), its reminders listed.
    pub async fn appointment_details(
        &self,
        conn: &mut PgConnection,
        caller: &Caller,
        appointment: AppointmentRow,
    ) -> Result<AppointmentDetails> {
        let notes = match &appointment.notes_enc {
            Some(ciphertext) => {
                self.open_note(conn, caller, appointment.id, AppointmentNote::Booking, ciphertext).await?
            }
            None => None,
        };
        let cancelled = appointment.cancel_reason.is_some() && appointment.cancelled_at.is_some();
        let cancel_note = match &appointment.cancel_note_enc {
            Some(ciphertext) if cancelled => {
                self.open_note(conn, caller, appointment.id, AppointmentNote::Cancellation, ciphertext).await?
            }
            _ => None,
        };
        let reminders = store_postgres::appointments::reminders_of(conn, caller.tenant, appointment.id).await?;
        Ok(AppointmentDetails { appointment, notes, cancel_note, reminders })
    }

    /// Every audit entry whose resource is this patient (record, key, consents), newest first.
    async fn access_log_of(&self, tenant: TenantId, id: PatientId) -> Result<Vec<ChainedEntry>> {
        let filter = AuditFilter { resource_id: Some(id.to_string()), ..AuditFilter::default() };
        let mut entries = Vec::new();
        let mut cursor = None;
        loop {
            let page = Page::new(cursor, ACCESS_LOG_PAGE).map_err(Error::internal)?;
            let found = self.audit_log.query_entries(tenant, &filter, page).await?;
            entries.extend(found.entries);
            match found.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(entries),
            }
        }
    }
}
