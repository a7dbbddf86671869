//! A patient's GDPR export (Art. 15/20): everything Praxis holds on them, decrypted, gathered
//! in one transaction: the record, consents and their history, appointments with their notes
//! and reminders, the message log, and the audit entries about them.
//!
//! Its own module because it reads across areas (patients, consents, appointments, the audit
//! trail) that do not depend on each other.

use crate::appointments::AppointmentDetails;
use crate::patients::{Lock, Patient, live_patient};
use crate::{Caller, Error, Result, Services};
use ::patients::PatientField;
use audit::{Action, AuditFilter, Page, RecordedEntry};
use consent::{ConsentEvent, ConsentRecord};
use identity::Permission;
use kernel::{PatientId, TenantId};
use serde_json::json;
use store_postgres::webhooks::MessageRow;
use time::OffsetDateTime;

/// Audit entries read per round trip when an export gathers the patient's access log.
const ACCESS_LOG_PAGE: u32 = 200;

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
    pub access_log: Vec<RecordedEntry>,
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
        let access_log = &self.access_log_of(tenant, id).await?;
        self.with_patient_keys(|keys| async move {
            let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
            let row = live_patient(&mut tx, tenant, id, Lock::No).await?;
            let data = self.open_patient_fields(&mut tx, caller, &keys, &row, &PatientField::ALL).await?;
            let consent_history = store_postgres::patients::consent_history(&mut tx, tenant, id).await?;
            let consents = crate::consents::records_of(id, &consent_history)?;
            let messages = store_postgres::webhooks::messages_of_patient(&mut tx, tenant, id).await?;
            let appointments = self.appointments_for_export(&mut tx, caller, &keys, id).await?;
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
                access_log: access_log.clone(),
            })
        })
        .await
    }

    /// Every audit entry whose resource is this patient (record, key, consents), newest first.
    async fn access_log_of(&self, tenant: TenantId, id: PatientId) -> Result<Vec<RecordedEntry>> {
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
