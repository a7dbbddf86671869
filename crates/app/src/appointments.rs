//! Appointments: book, list, read, move, cancel, and record confirmations and outcomes, with
//! their notes and reminders.
//!
//! Authorization happens twice, as for patients: the permission matrix first
//! (`appointment.read`, `appointment.manage`; refused and audited), then row-level security,
//! under which a therapist sees the appointments they conduct and a patient their own; anything
//! else is [`Error::NotFound`] like an appointment that does not exist. Within "own", a therapist
//! books and moves appointments only for themself, and a patient only confirms or cancels
//! (outcomes are recorded by staff).
//!
//! Double booking is refused by the database (the exclusion constraint over therapist and time
//! on active appointments): of two racing bookings for overlapping times exactly one commits,
//! the other is refused as [`Error::SlotUnavailable`]. Working hours and absences are checked
//! before, in the calendar context (see [`crate::calendar`]); a refusal tells the caller only as
//! much as it may learn (a patient never learns of absences or others' bookings). Every create,
//! change and cancellation writes its audit entry in its own transaction; reminders are planned,
//! replanned and dropped in it too.
//!
//! # Notes
//! Booking and cancellation notes are scheduling notes ("bring the referral"), not clinical
//! notes: those belong in the patient's clinical record. They are sealed under the patient's DEK
//! ([`crate::protection`]), so erasing the patient erases them.

use crate::calendar::{calendar_context, check_instant_range, ensure_therapist, invalid_input, parse_instant};
use crate::patients::{Lock, live_patient};
use crate::protection::{AppointmentNote, PatientKeys, SealingKey, seal_note, wrapped_of};
use crate::{Access, Caller, Error, Result, Services};
use audit::Action;
use identity::{Permission, Scope};
use kernel::{PatientId, Role, TenantId, UserId};
use scheduling::{
    Absence, AppointmentKind, AppointmentStatus, PlannedReminder, ReminderChannel, ReminderSkipReason, SchedulingError,
    Slot, fits_working_hours, plan_reminders,
};
use serde_json::json;
use sqlx::PgConnection;
use store_postgres::appointments::{
    AppointmentChange, AppointmentCursor, AppointmentQuery, BookingWriteError, NewAppointment, ReminderRow,
};
/// An appointment as stored, why it was cancelled, and where a reminder stands: the doors show
/// these as they are.
pub use store_postgres::appointments::{AppointmentRow, CancelReason, ReminderStatus};
use store_postgres::{AuditStoreError, StoreError, appointments as store};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;
/// Appointments per page of a listing when the caller names no limit.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Most appointments per page of a listing.
pub const MAX_PAGE_SIZE: u32 = 100;
/// How often a booking transaction is tried when it loses a lock race (a deadlock Postgres
/// broke between racing inserts); the next try then meets the winner's committed row.
const MAX_ATTEMPTS: usize = 5;

/// A booking as a caller submits it: RFC 3339 times, the kind's name, an optional note.
#[derive(Debug, Clone)]
pub struct NewBooking {
    pub patient: PatientId,
    /// An enabled therapist of the practice (a therapist books only for themself).
    pub therapist: UserId,
    /// Whole minutes, not before the current minute.
    pub start: String,
    /// Whole minutes, after `start`; the duration within the booking policy's bounds.
    pub end: String,
    /// As `scheduling::AppointmentKind` spells it.
    pub kind: String,
    pub notes: Option<String>,
}

/// A change to an appointment as a caller submits it; `None` leaves a field as it is. A lone
/// `start` keeps the duration.
#[derive(Debug, Clone, Default)]
pub struct AppointmentEdit {
    pub start: Option<String>,
    pub end: Option<String>,
    pub therapist: Option<UserId>,
    pub kind: Option<String>,
    /// `Some(None)` clears the notes.
    pub notes: Option<Option<String>>,
    /// The caller also tried to set the status, which changes only through
    /// [`Services::change_appointment_status`] and [`Services::cancel_appointment`]: refused by
    /// name.
    pub sets_status: bool,
    /// The caller also tried to set the payment state, which only verified payment events set:
    /// refused by name.
    pub sets_payment_state: bool,
}

/// What a listing asks for, as a caller submits it.
#[derive(Debug, Clone, Default)]
pub struct AppointmentFilter {
    pub therapist: Option<UserId>,
    pub patient: Option<PatientId>,
    /// RFC 3339: only appointments ending after this.
    pub from: Option<String>,
    /// RFC 3339: only appointments starting before this.
    pub to: Option<String>,
    /// One status, as `scheduling::AppointmentStatus` spells it.
    pub status: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to [`MAX_PAGE_SIZE`]; default [`DEFAULT_PAGE_SIZE`].
    pub limit: Option<u32>,
}

/// A page of appointments in time order.
#[derive(Debug, Clone)]
pub struct AppointmentPage {
    pub appointments: Vec<AppointmentRow>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A planned reminder and what became of it, as the appointment's readers may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderState {
    pub due_at: OffsetDateTime,
    pub status: ReminderStatus,
    pub skip_reason: Option<ReminderSkipReason>,
    pub channel: Option<ReminderChannel>,
    pub attempts: i32,
}

impl ReminderState {
    /// A reminder just planned: pending, never tried.
    fn planned(reminder: &PlannedReminder) -> Self {
        Self { due_at: reminder.due_at, status: ReminderStatus::Pending, skip_reason: None, channel: None, attempts: 0 }
    }
}

impl From<&ReminderRow> for ReminderState {
    fn from(row: &ReminderRow) -> Self {
        Self {
            due_at: row.due_at,
            status: row.status,
            skip_reason: row.skip_reason,
            channel: row.channel,
            attempts: row.attempts,
        }
    }
}

/// One appointment with its notes opened and its reminders.
#[derive(Debug, Clone)]
pub struct AppointmentDetails {
    pub appointment: AppointmentRow,
    /// The booking note; `None` when there is none, or once the patient was erased.
    pub notes: Option<String>,
    /// The cancellation note, likewise.
    pub cancel_note: Option<String>,
    pub reminders: Vec<ReminderState>,
}

impl Services {
    /// Books an appointment (`appointment.manage`) as `scheduled`: the slot within the booking
    /// policy and the therapist's calendar, the note sealed under the patient's DEK, reminders
    /// planned by the reminder policy. Audited as `appointment.create`.
    pub async fn book_appointment(&self, caller: &Caller, booking: NewBooking) -> Result<AppointmentDetails> {
        let scope = self.authorize(caller, Permission::AppointmentManage, "appointment").await?;
        let now = self.clock.now();
        let start = parse_instant("start", &booking.start)?;
        let end = parse_instant("end", &booking.end)?;
        let kind = parse_kind(&booking.kind)?;
        let notes = note_text("notes", booking.notes)?;
        let slot = self.booking_policy.validate_booking(start, end, now).map_err(|e| invalid_input(&e))?;
        let (patient, therapist) = (booking.patient, booking.therapist);
        self.check_own_therapist(caller, scope, therapist).await?;
        if let Err(refusal) = self.check_calendar(caller.tenant, therapist, &slot).await? {
            return Err(refusal.to_error(Audience::of(caller)));
        }
        let planned = plan_reminders(slot.start(), now, &self.reminder_policy);
        let id = Uuid::now_v7();
        let (notes_ref, planned_ref) = (&notes, &planned);
        let row = self
            .with_retries(caller, therapist, slot, None, move || {
                self.with_patient_keys(move |keys| async move {
                    let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
                    let patient_row = live_patient(&mut tx, caller.tenant, patient, Lock::No).await?;
                    let notes_enc = match notes_ref {
                        Some(text) => {
                            let key = SealingKey {
                                dek: self.patient_dek(&mut tx, caller, &keys, &patient_row).await?,
                                wrapped: wrapped_of(&patient_row)?,
                                generation: patient_row.dek_generation,
                            };
                            Some(seal_note(&key, caller.tenant, patient, id, AppointmentNote::Booking, text)?)
                        }
                        None => None,
                    };
                    let new = NewAppointment {
                        id,
                        tenant: caller.tenant,
                        patient,
                        therapist,
                        slot,
                        kind,
                        notes_enc,
                        created_at: now,
                    };
                    // Racing bookings of one therapist queue on the calendar lock the insert takes
                    // (`store_postgres::appointments::insert`), not on each other's exclusion checks.
                    let event = caller
                        .audit_event(Action::AppointmentCreate, "appointment", self.clock())
                        .with_resource_id(id.to_string())
                        .with_detail(json!({
                            "patient_id": patient.to_string(),
                            "therapist_id": therapist.to_string(),
                            "start": format_time(slot.start()),
                            "end": format_time(slot.end()),
                            "kind": kind.as_str(),
                            "reminders_planned": planned_ref.len(),
                        }));
                    store_postgres::audit::append(&mut tx, event).await?;
                    store::insert(&mut tx, &new).await?;
                    store::insert_reminders(&mut tx, caller.tenant, id, slot.start(), planned_ref, now).await?;
                    let row = store::get(&mut tx, caller.tenant, id, false).await?.ok_or(Error::NotFound)?;
                    tx.commit().await?;
                    Ok(row)
                })
            })
            .await?;
        Ok(AppointmentDetails {
            appointment: row,
            notes,
            cancel_note: None,
            reminders: planned.iter().map(ReminderState::planned).collect(),
        })
    }

    /// The appointments the caller may see (`appointment.read`; a therapist: those they
    /// conduct; a patient: their own), in time order, a page at a time. Notes stay sealed.
    pub async fn list_appointments(&self, caller: &Caller, filter: &AppointmentFilter) -> Result<AppointmentPage> {
        self.authorize(caller, Permission::AppointmentRead, "appointment").await?;
        let limit = filter.limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(Error::invalid("limit", format!("must be between 1 and {MAX_PAGE_SIZE}")));
        }
        let query = AppointmentQuery {
            therapist: filter.therapist,
            patient: filter.patient,
            from: filter.from.as_deref().map(|t| parse_instant("from", t)).transpose()?,
            to: filter.to.as_deref().map(|t| parse_instant("to", t)).transpose()?,
            status: filter
                .status
                .as_deref()
                .map(|s| s.parse::<AppointmentStatus>().map_err(|e| invalid_input(&e)))
                .transpose()?,
        };
        if let (Some(from), Some(to)) = (query.from, query.to)
            && to <= from
        {
            return Err(Error::invalid("to", "must be after from"));
        }
        let after = filter.cursor.as_deref().map(parse_cursor).transpose()?;
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        let rows = store::list(&mut tx, caller.tenant, &query, after, limit).await?;
        tx.commit().await?;
        let next_cursor = (rows.len() == limit as usize).then(|| rows.last().map(cursor_of)).flatten();
        Ok(AppointmentPage { appointments: rows, next_cursor })
    }

    /// One appointment the caller may see (`appointment.read`), its notes opened, with its
    /// reminders.
    pub async fn appointment(&self, caller: &Caller, id: Uuid) -> Result<AppointmentDetails> {
        self.authorize(caller, Permission::AppointmentRead, "appointment").await?;
        self.with_patient_keys(|keys| async move {
            let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
            let row = store::get(&mut tx, caller.tenant, id, false).await?.ok_or(Error::NotFound)?;
            let details = self.details(&mut tx, caller, &keys, row).await?;
            tx.commit().await?;
            Ok(details)
        })
        .await
    }

    /// Moves an appointment, changes its therapist or kind, or sets or clears its notes
    /// (`appointment.manage`). A new start replans the reminders (the old ones are skipped as
    /// `appointment_moved`). Audited as `appointment.update`.
    pub async fn edit_appointment(
        &self,
        caller: &Caller,
        id: Uuid,
        edit: AppointmentEdit,
    ) -> Result<AppointmentDetails> {
        let scope = self.authorize(caller, Permission::AppointmentManage, "appointment").await?;
        if edit.sets_payment_state {
            return Err(Error::invalid("payment_state", "is set only by verified payment events, never by a client"));
        }
        if edit.sets_status {
            return Err(Error::invalid("status", "changes through POST /api/v1/appointments/{id}/status or /cancel"));
        }
        if edit.start.is_none()
            && edit.end.is_none()
            && edit.therapist.is_none()
            && edit.kind.is_none()
            && edit.notes.is_none()
        {
            return Err(Error::invalid("body", "nothing to change"));
        }
        let new_start = edit.start.as_deref().map(|t| parse_instant("start", t)).transpose()?;
        let new_end = edit.end.as_deref().map(|t| parse_instant("end", t)).transpose()?;
        let new_kind = edit.kind.as_deref().map(parse_kind).transpose()?;
        let new_notes = edit.notes.map(|n| note_text("notes", n)).transpose()?;
        let now = self.clock.now();

        // Read the appointment as it is, to work out the new slot and check the calendar first.
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        let current = store::get(&mut tx, caller.tenant, id, false).await?.ok_or(Error::NotFound)?;
        tx.commit().await?;
        if current.status.is_final() {
            return Err(refuse_final(&current));
        }
        let therapist = edit.therapist.unwrap_or(current.therapist);
        self.check_own_therapist(caller, scope, therapist).await?;
        let moved = new_start.is_some() || new_end.is_some();
        let slot = if moved {
            let start = new_start.unwrap_or(current.slot.start());
            let end = new_end.unwrap_or_else(|| start + current.slot.duration());
            self.booking_policy.validate_booking(start, end, now).map_err(|e| invalid_input(&e))?
        } else {
            current.slot
        };
        let rebook = moved || therapist != current.therapist;
        if rebook && let Err(refusal) = self.check_calendar(caller.tenant, therapist, &slot).await? {
            return Err(refusal.to_error(Audience::of(caller)));
        }
        let planned =
            (slot.start() != current.slot.start()).then(|| plan_reminders(slot.start(), now, &self.reminder_policy));
        let mut changed: Vec<&str> = Vec::new();
        if slot.start() != current.slot.start() {
            changed.push("start");
        }
        if slot.end() != current.slot.end() {
            changed.push("end");
        }
        if therapist != current.therapist {
            changed.push("therapist_id");
        }
        if new_kind.is_some_and(|k| k != current.kind) {
            changed.push("kind");
        }
        if new_notes.is_some() {
            changed.push("notes");
        }
        let (planned_ref, notes_ref, changed_ref, current_ref) = (&planned, &new_notes, &changed, &current);
        self.with_retries(caller, therapist, slot, Some(id), move || {
            self.with_patient_keys(move |keys| async move {
                let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
                let row = store::get(&mut tx, caller.tenant, id, true).await?.ok_or(Error::NotFound)?;
                if row.status.is_final() {
                    return Err(Attempt::Failed(refuse_final(&row)));
                }
                // The slot and therapist written below were worked out from `current`, read before
                // this lock: had someone moved the appointment in between, writing them would
                // silently undo that move (and leave its reminders stale).
                if rebook {
                    refuse_patient_after_start(caller, &row, now)?;
                }
                if row.slot != current_ref.slot || row.therapist != current_ref.therapist {
                    return Err(Attempt::Failed(Error::Conflict(
                        "The appointment was changed by someone else meanwhile; read it again and retry.".into(),
                    )));
                }
                let notes_enc = match notes_ref {
                    None => row.notes_enc.clone(),
                    Some(None) => None,
                    Some(Some(text)) => {
                        let key = self.sealing_key(&mut tx, caller, &keys, row.patient).await?.ok_or(Error::Gone)?;
                        Some(seal_note(&key, caller.tenant, row.patient, id, AppointmentNote::Booking, text)?)
                    }
                };
                let change = AppointmentChange { therapist, slot, kind: new_kind.unwrap_or(row.kind), notes_enc };
                // The calendar lock is taken by `reschedule` itself, as for a new booking.
                let event = caller
                    .audit_event(Action::AppointmentUpdate, "appointment", self.clock())
                    .with_resource_id(id.to_string())
                    .with_detail(json!({
                        "fields": changed_ref,
                        "start": format_time(slot.start()),
                        "end": format_time(slot.end()),
                        "therapist_id": therapist.to_string(),
                        "reminders_replanned": planned_ref.as_ref().map(Vec::len),
                    }));
                store_postgres::audit::append(&mut tx, event).await?;
                if !store::reschedule(&mut tx, caller.tenant, id, &change, now).await? {
                    return Err(Attempt::Failed(Error::NotFound));
                }
                if let Some(planned) = planned_ref {
                    store::skip_pending_reminders(
                        &mut tx,
                        caller.tenant,
                        id,
                        ReminderSkipReason::AppointmentMoved,
                        now,
                    )
                    .await?;
                    store::insert_reminders(&mut tx, caller.tenant, id, slot.start(), planned, now).await?;
                }
                let row = store::get(&mut tx, caller.tenant, id, false).await?.ok_or(Error::NotFound)?;
                let details = self.details(&mut tx, caller, &keys, row).await?;
                tx.commit().await?;
                Ok(details)
            })
        })
        .await
    }

    /// Cancels an appointment (`appointment.manage`) for `reason`, with an optional note sealed
    /// under the patient's DEK: the slot is free again, pending reminders are skipped as
    /// `appointment_cancelled`. A patient cancels only before the start. Audited as
    /// `appointment.cancel`.
    pub async fn cancel_appointment(
        &self,
        caller: &Caller,
        id: Uuid,
        reason: &str,
        note: Option<String>,
    ) -> Result<AppointmentDetails> {
        self.authorize(caller, Permission::AppointmentManage, "appointment").await?;
        let reason = CancelReason::parse(reason).filter(|r| *r != CancelReason::PatientErased).ok_or_else(|| {
            let given: Vec<&str> =
                CancelReason::ALL.iter().filter(|r| **r != CancelReason::PatientErased).map(|r| r.as_str()).collect();
            Error::invalid("reason", format!("must be one of {}", given.join(", ")))
        })?;
        let note = note_text("note", note)?;
        let now = self.clock.now();
        let note = &note;
        self.with_patient_keys(|keys| async move {
            let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
            let row = store::get(&mut tx, caller.tenant, id, true).await?.ok_or(Error::NotFound)?;
            row.status
                .transition_at(AppointmentStatus::Cancelled, row.slot.start(), now)
                .map_err(|e| transition_error(&e, &row, now))?;
            refuse_patient_after_start(caller, &row, now)?;
            let note_enc = match note {
                Some(text) => {
                    let key = self.sealing_key(&mut tx, caller, &keys, row.patient).await?.ok_or(Error::Gone)?;
                    Some(seal_note(&key, caller.tenant, row.patient, id, AppointmentNote::Cancellation, text)?)
                }
                None => None,
            };
            if !store::cancel(&mut tx, caller.tenant, id, row.status, reason, note_enc.as_deref(), now).await? {
                return Err(Error::Conflict("The appointment changed meanwhile; read it and retry.".into()));
            }
            let skipped = store::skip_pending_reminders(
                &mut tx,
                caller.tenant,
                id,
                ReminderSkipReason::AppointmentCancelled,
                now,
            )
            .await?;
            let event = caller
                .audit_event(Action::AppointmentCancel, "appointment", self.clock())
                .with_resource_id(id.to_string())
                .with_detail(json!({
                    "reason": reason.as_str(),
                    "from": row.status.as_str(),
                    "reason_detailed": note.is_some(),
                    "reminders_skipped": skipped,
                }));
            store_postgres::audit::append(&mut tx, event).await?;
            let row = store::get(&mut tx, caller.tenant, id, false).await?.ok_or(Error::NotFound)?;
            let details = self.details(&mut tx, caller, &keys, row).await?;
            tx.commit().await?;
            Ok(details)
        })
        .await
    }

    /// Records a confirmation or an outcome (`appointment.manage`): `confirmed`, `completed` or
    /// `no_show` along the status machine, outcomes not before the start; a patient may only
    /// confirm. Cancelling is [`Services::cancel_appointment`]. Audited as
    /// `appointment.update`.
    pub async fn change_appointment_status(
        &self,
        caller: &Caller,
        id: Uuid,
        status: &str,
    ) -> Result<AppointmentDetails> {
        self.authorize(caller, Permission::AppointmentManage, "appointment").await?;
        let to: AppointmentStatus = status.parse().map_err(|e| invalid_input(&e))?;
        if to == AppointmentStatus::Cancelled {
            return Err(Error::invalid("status", "cancel with POST /api/v1/appointments/{id}/cancel and a reason"));
        }
        if is_patient(caller) && to != AppointmentStatus::Confirmed {
            return Err(self.refuse_outside_own(caller, Permission::AppointmentManage, "appointment").await);
        }
        let now = self.clock.now();
        self.with_patient_keys(|keys| async move {
            let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
            let row = store::get(&mut tx, caller.tenant, id, true).await?.ok_or(Error::NotFound)?;
            row.status.transition_at(to, row.slot.start(), now).map_err(|e| transition_error(&e, &row, now))?;
            if !store::set_status(&mut tx, caller.tenant, id, row.status, to, now).await? {
                return Err(Error::Conflict("The appointment changed meanwhile; read it and retry.".into()));
            }
            let event = caller
                .audit_event(Action::AppointmentUpdate, "appointment", self.clock())
                .with_resource_id(id.to_string())
                .with_detail(json!({ "fields": ["status"], "from": row.status.as_str(), "to": to.as_str() }));
            store_postgres::audit::append(&mut tx, event).await?;
            let row = store::get(&mut tx, caller.tenant, id, false).await?.ok_or(Error::NotFound)?;
            let details = self.details(&mut tx, caller, &keys, row).await?;
            tx.commit().await?;
            Ok(details)
        })
        .await
    }

    /// The patient's appointments for the GDPR export, in the export's transaction: everything
    /// stored, notes opened with the patient's keys, and each appointment's reminders (when and
    /// on which channel the patient was contacted, or why not). The export checks its own
    /// permission.
    pub async fn appointments_for_export(
        &self,
        conn: &mut PgConnection,
        caller: &Caller,
        keys: &PatientKeys,
        patient: PatientId,
    ) -> Result<Vec<AppointmentDetails>> {
        let rows = store::of_patient(conn, caller.tenant, patient).await?;
        let mut documents = Vec::with_capacity(rows.len());
        for row in rows {
            documents.push(self.details(conn, caller, keys, row).await?);
        }
        Ok(documents)
    }

    /// The whole of one appointment: notes opened, reminders listed.
    async fn details(
        &self,
        conn: &mut PgConnection,
        caller: &Caller,
        keys: &PatientKeys,
        row: AppointmentRow,
    ) -> Result<AppointmentDetails> {
        let notes = match &row.notes_enc {
            Some(ciphertext) => {
                self.open_note(conn, caller, keys, row.id, AppointmentNote::Booking, ciphertext).await?
            }
            None => None,
        };
        // A cancellation's note, opened only for an appointment shown as cancelled.
        let cancel_note = match (row.cancel_reason, row.cancelled_at, &row.cancel_note_enc) {
            (Some(_), Some(_), Some(ciphertext)) => {
                self.open_note(conn, caller, keys, row.id, AppointmentNote::Cancellation, ciphertext).await?
            }
            _ => None,
        };
        let reminders = store::reminders_of(conn, row.tenant, row.id).await?;
        Ok(AppointmentDetails {
            reminders: reminders.iter().map(ReminderState::from).collect(),
            appointment: row,
            notes,
            cancel_note,
        })
    }

    /// A therapist with only "own" scope books and moves only their own appointments.
    async fn check_own_therapist(&self, caller: &Caller, scope: Scope, therapist: UserId) -> Result<()> {
        let is_therapist = matches!(caller.access, Access::Account { role: Role::Therapist, .. });
        if scope == Scope::Own && is_therapist && caller.user() != Some(therapist) {
            return Err(self.refuse_outside_own(caller, Permission::AppointmentManage, "appointment").await);
        }
        Ok(())
    }

    /// Whether `slot` fits the therapist's working hours and absences (other bookings are the
    /// exclusion constraint's job). Runs in the calendar context; [`Error::NotFound`] for an
    /// unknown therapist.
    async fn check_calendar(
        &self,
        tenant: TenantId,
        therapist: UserId,
        slot: &Slot,
    ) -> Result<Result<(), SlotRefusal>> {
        let mut tx = store_postgres::begin(&self.db, &calendar_context(tenant)).await?;
        ensure_therapist(&mut tx, tenant, therapist).await?;
        let Some((hours, _)) = store::working_hours(&mut tx, tenant, therapist).await? else {
            return Ok(Err(SlotRefusal::NoWorkingHours));
        };
        let absences: Vec<Absence> = store::absences(&mut tx, tenant, therapist, slot.start(), slot.end())
            .await?
            .iter()
            .map(|a| a.absence)
            .collect();
        tx.commit().await?;
        Ok(match fits_working_hours(&hours, &absences, slot) {
            Ok(()) => Ok(()),
            Err(SchedulingError::DuringAbsence { absence }) => Err(SlotRefusal::Absent(absence)),
            Err(SchedulingError::OutsideWorkingHours) => Err(SlotRefusal::OutsideWorkingHours),
            Err(other) => return Err(invalid_input(&other)),
        })
    }

    /// The first active booking of the therapist overlapping `slot`, other than `except` (after
    /// an exclusion violation, to name the conflicting slot), read in the calendar context.
    async fn conflicting_slot(
        &self,
        tenant: TenantId,
        therapist: UserId,
        slot: &Slot,
        except: Option<Uuid>,
    ) -> Result<Option<Slot>> {
        let mut tx = store_postgres::begin(&self.db, &calendar_context(tenant)).await?;
        let busy = store::busy_slots(&mut tx, tenant, therapist, slot.start(), slot.end(), except).await?;
        tx.commit().await?;
        Ok(busy.first().map(|b| b.slot))
    }

    /// Runs `attempt` until it succeeds, fails for good, or has lost [`MAX_ATTEMPTS`] lock
    /// races; an overlap becomes the refusal naming the conflicting slot (as far as the caller
    /// may know it).
    async fn with_retries<T, F, Fut>(
        &self,
        caller: &Caller,
        therapist: UserId,
        slot: Slot,
        except: Option<Uuid>,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        for round in 1..=MAX_ATTEMPTS {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Attempt::Failed(error)) => return Err(error),
                Err(Attempt::Contention) if round < MAX_ATTEMPTS => {
                    tracing::debug!(round, "booking lost a lock race; retrying");
                }
                Err(Attempt::Contention) => {
                    return Err(Error::Unavailable("The calendar is busy with concurrent changes; try again.".into()));
                }
                Err(Attempt::Overlap) => {
                    let taken = self.conflicting_slot(caller.tenant, therapist, &slot, except).await?;
                    return Err(SlotRefusal::Taken(taken).to_error(Audience::of(caller)));
                }
            }
        }
        Err(Error::internal(anyhow::anyhow!("booking retry loop ended without an outcome")))
    }
}

/// How one transaction attempt of a booking write ended, short of success.
enum Attempt {
    Failed(Error),
    /// The exclusion constraint refused the slot: another booking holds it.
    Overlap,
    /// Lost a lock race; worth another try.
    Contention,
}

impl From<Error> for Attempt {
    fn from(error: Error) -> Self {
        Attempt::Failed(error)
    }
}

impl From<StoreError> for Attempt {
    fn from(error: StoreError) -> Self {
        Attempt::Failed(error.into())
    }
}

impl From<AuditStoreError> for Attempt {
    fn from(error: AuditStoreError) -> Self {
        Attempt::Failed(error.into())
    }
}

impl From<sqlx::Error> for Attempt {
    fn from(error: sqlx::Error) -> Self {
        Attempt::Failed(error.into())
    }
}

impl From<BookingWriteError> for Attempt {
    fn from(error: BookingWriteError) -> Self {
        match error {
            BookingWriteError::Overlap => Attempt::Overlap,
            BookingWriteError::Contention => Attempt::Contention,
            BookingWriteError::Store(store) => Attempt::Failed(store.into()),
        }
    }
}

/// How much a refused booking may tell the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// Staff and API keys: the absence or the conflicting booking, with its times.
    Staff,
    /// Patients: only that the time is taken. Absences and others' bookings look alike and carry
    /// no times (availability shows what is free).
    Patient,
}

impl Audience {
    fn of(caller: &Caller) -> Self {
        if is_patient(caller) { Audience::Patient } else { Audience::Staff }
    }
}

/// A slot that cannot be booked, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotRefusal {
    NoWorkingHours,
    OutsideWorkingHours,
    Absent(Absence),
    Taken(Option<Slot>),
}

impl SlotRefusal {
    /// The refusal as `audience` may learn it.
    fn to_error(self, audience: Audience) -> Error {
        let unavailable = |reason: &'static str, detail: &str, conflicting_slot: Option<Slot>| Error::SlotUnavailable {
            reason,
            detail: detail.to_owned(),
            conflicting_slot,
        };
        match (self, audience) {
            (SlotRefusal::NoWorkingHours, _) => unavailable(
                "no_working_hours",
                "The therapist has no working hours set, so nothing can be booked yet.",
                None,
            ),
            (SlotRefusal::OutsideWorkingHours, _) => unavailable(
                "outside_working_hours",
                "The slot is not within one stretch of the therapist's working hours.",
                None,
            ),
            (SlotRefusal::Absent(_) | SlotRefusal::Taken(_), Audience::Patient) => unavailable(
                "slot_taken",
                "The therapist is not available at this time; GET /api/v1/therapists/{id}/availability lists free slots.",
                None,
            ),
            (SlotRefusal::Absent(absence), Audience::Staff) => {
                unavailable("therapist_absent", "The therapist is away during the slot.", Some(absence.as_slot()))
            }
            (SlotRefusal::Taken(slot), Audience::Staff) => {
                unavailable("slot_taken", "The therapist already has an appointment overlapping this slot.", slot)
            }
        }
    }
}

fn is_patient(caller: &Caller) -> bool {
    matches!(caller.access, Access::Account { role: Role::Patient, .. })
}

/// A patient may cancel or move an appointment only before it starts: afterwards only the
/// practice records what happened (completed, no-show), and a patient's late cancellation must
/// not erase a no-show.
fn refuse_patient_after_start(caller: &Caller, row: &AppointmentRow, now: OffsetDateTime) -> Result<()> {
    if is_patient(caller) && now >= row.slot.start() {
        return Err(Error::Conflict("The appointment has started; please contact the practice to change it.".into()));
    }
    Ok(())
}

/// A final appointment (completed, cancelled, no-show) cannot be changed.
fn refuse_final(row: &AppointmentRow) -> Error {
    Error::Conflict(format!("A {} appointment cannot be changed.", row.status))
}

/// A refused status change, listing what is allowed from the current status at `now`.
fn transition_error(error: &SchedulingError, row: &AppointmentRow, now: OffsetDateTime) -> Error {
    match error {
        SchedulingError::IllegalTransition { from, to, allowed } => Error::IllegalTransition {
            detail: format!("An appointment cannot go from {from} to {to}."),
            allowed: allowed.iter().map(|s| s.as_str().to_owned()).collect(),
        },
        SchedulingError::OutcomeBeforeStart { to } => Error::IllegalTransition {
            detail: format!("An appointment cannot be marked {to} before it starts."),
            allowed: row
                .status
                .allowed_transitions()
                .iter()
                .filter(|s| row.status.transition_at(**s, row.slot.start(), now).is_ok())
                .map(|s| s.as_str().to_owned())
                .collect(),
        },
        other => invalid_input(other),
    }
}

/// An appointment kind, or a problem naming `kind`.
fn parse_kind(text: &str) -> Result<AppointmentKind> {
    text.parse().map_err(|_| {
        let all: Vec<&str> = AppointmentKind::ALL.iter().map(|k| k.as_str()).collect();
        Error::invalid("kind", format!("must be one of {}", all.join(", ")))
    })
}

/// A note as given: trimmed, empty means none, at most [`MAX_NOTE_CHARS`] characters, no
/// control characters but line breaks and tabs.
fn note_text(field: &str, note: Option<String>) -> Result<Option<String>> {
    let Some(note) = note else {
        return Ok(None);
    };
    let trimmed = note.trim();
    if trimmed.chars().count() > MAX_NOTE_CHARS {
        return Err(Error::invalid(field, format!("at most {MAX_NOTE_CHARS} characters")));
    }
    if trimmed.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

fn format_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A listing cursor: the last appointment's start in microseconds and its id.
fn parse_cursor(raw: &str) -> Result<AppointmentCursor> {
    let bad = || Error::invalid("cursor", "must be a next_cursor from a previous page");
    let (micros, id) = raw.split_once('_').ok_or_else(bad)?;
    let micros: i128 = micros.parse().map_err(|_| bad())?;
    let start =
        OffsetDateTime::from_unix_timestamp_nanos(micros.checked_mul(1000).ok_or_else(bad)?).map_err(|_| bad())?;
    let start = check_instant_range("cursor", start).map_err(|_| bad())?;
    Ok(AppointmentCursor { start, id: id.parse().map_err(|_| bad())? })
}

fn cursor_of(row: &AppointmentRow) -> String {
    format!("{}_{}", row.slot.start().unix_timestamp_nanos() / 1000, row.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn notes_are_trimmed_bounded_and_single_purpose() {
        assert_eq!(
            note_text("notes", Some("  Bring the referral \n".into())).unwrap().as_deref(),
            Some("Bring the referral")
        );
        assert_eq!(note_text("notes", Some("   ".into())).unwrap(), None);
        assert_eq!(note_text("notes", None).unwrap(), None);
        assert!(note_text("notes", Some("x".repeat(MAX_NOTE_CHARS + 1))).is_err());
        assert!(note_text("notes", Some("line one\nline two\ttab".into())).is_ok());
        assert!(note_text("notes", Some("escape \u{1b}[31m".into())).is_err());
    }

    #[test]
    fn patients_never_learn_absences_or_other_bookings() {
        let absence = Absence::new(datetime!(2026-05-04 00:00 UTC), datetime!(2026-05-05 00:00 UTC)).unwrap();
        let taken = Slot::new(datetime!(2026-05-04 09:00 UTC), datetime!(2026-05-04 10:00 UTC)).unwrap();
        for refusal in [SlotRefusal::Absent(absence), SlotRefusal::Taken(Some(taken))] {
            let Error::SlotUnavailable { reason, detail, conflicting_slot } = refusal.to_error(Audience::Patient)
            else {
                panic!("not a slot refusal");
            };
            assert_eq!(reason, "slot_taken");
            assert_eq!(conflicting_slot, None);
            assert!(!detail.contains("2026"), "{detail}");
            let Error::SlotUnavailable { conflicting_slot, .. } = refusal.to_error(Audience::Staff) else {
                panic!("not a slot refusal");
            };
            assert!(conflicting_slot.is_some());
        }
    }

    #[test]
    fn a_cursor_reads_back_what_it_was_made_of() {
        assert!(parse_cursor("nonsense").is_err());
        assert!(parse_cursor("99999999999999999999999_00000000-0000-0000-0000-000000000000").is_err());
        let cursor = parse_cursor("1777885200000000_0196a1c2-0000-7000-8000-000000000000").unwrap();
        assert_eq!(cursor.start, datetime!(2026-05-04 09:00 UTC));
    }
}
