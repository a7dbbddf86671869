//! Appointments, their reminder outbox, therapists' working hours and absences (migration
//! `20261122000009_appointments.sql`).
//!
//! Every function runs inside the caller's transaction, whose RLS context decides which rows
//! exist for it (a therapist sees the appointments they conduct, a patient their own), and names
//! the tenant explicitly as well. Notes are ciphertexts here: this module never sees them in
//! clear. Closed sets are stored as the `scheduling` crate spells them.
//!
//! Double booking is refused by the database's exclusion constraint; [`insert`] and
//! [`reschedule`] report it as [`BookingWriteError::Overlap`], and a lock conflict between racing
//! bookings (a deadlock Postgres broke, a serialization failure) as
//! [`BookingWriteError::Contention`], which the caller retries in a new transaction.

use crate::StoreError;
use kernel::{PatientId, TenantId, UserId};
use scheduling::{
    Absence, AppointmentKind, AppointmentStatus, PaymentEvent, PaymentState, PaymentUpdate, PlannedReminder,
    ReminderChannel, ReminderSkipReason, Slot, TimeRange, WeeklyHours,
};
use sqlx::{PgConnection, Row, postgres::PgRow};
use std::collections::HashMap;
use time::{OffsetDateTime, Time, Weekday};
use uuid::Uuid;

/// The name of the exclusion constraint that refuses double bookings.
pub const NO_DOUBLE_BOOKING: &str = "appointments_no_double_booking";

/// Why a cancelled appointment was cancelled: a closed set of codes, so no personal free text is
/// stored in clear (a note, if any, is encrypted under the patient's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelReason {
    PatientRequest,
    TherapistUnavailable,
    PracticeClosed,
    NoLongerNeeded,
    Rescheduled,
    /// Set by erasure for the patient's future appointments.
    PatientErased,
    Other,
}

impl CancelReason {
    /// Every reason, in a fixed order.
    pub const ALL: [CancelReason; 7] = [
        CancelReason::PatientRequest,
        CancelReason::TherapistUnavailable,
        CancelReason::PracticeClosed,
        CancelReason::NoLongerNeeded,
        CancelReason::Rescheduled,
        CancelReason::PatientErased,
        CancelReason::Other,
    ];

    /// The stable snake_case code (stored, and used in the API).
    pub const fn as_str(self) -> &'static str {
        match self {
            CancelReason::PatientRequest => "patient_request",
            CancelReason::TherapistUnavailable => "therapist_unavailable",
            CancelReason::PracticeClosed => "practice_closed",
            CancelReason::NoLongerNeeded => "no_longer_needed",
            CancelReason::Rescheduled => "rescheduled",
            CancelReason::PatientErased => "patient_erased",
            CancelReason::Other => "other",
        }
    }

    /// The reason with this code, if any.
    pub fn parse(code: &str) -> Option<CancelReason> {
        CancelReason::ALL.into_iter().find(|reason| reason.as_str() == code)
    }
}

/// An appointment as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct AppointmentRow {
    pub id: Uuid,
    pub tenant: TenantId,
    pub patient: PatientId,
    pub therapist: UserId,
    pub slot: Slot,
    pub kind: AppointmentKind,
    pub status: AppointmentStatus,
    pub payment_state: PaymentState,
    /// Ciphertext under the patient's DEK (AAD column `notes`).
    pub notes_enc: Option<Vec<u8>>,
    pub cancel_reason: Option<CancelReason>,
    /// Ciphertext under the patient's DEK (AAD column `cancel_note`).
    pub cancel_note_enc: Option<Vec<u8>>,
    pub cancelled_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl std::fmt::Debug for AppointmentRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppointmentRow")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("therapist", &self.therapist)
            .field("slot", &self.slot)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// A new appointment, notes already sealed.
#[derive(Clone)]
pub struct NewAppointment {
    pub id: Uuid,
    pub tenant: TenantId,
    pub patient: PatientId,
    pub therapist: UserId,
    pub slot: Slot,
    pub kind: AppointmentKind,
    pub notes_enc: Option<Vec<u8>>,
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for NewAppointment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAppointment").field("id", &self.id).field("slot", &self.slot).finish_non_exhaustive()
    }
}

/// A change to an active appointment: the new time, therapist, kind and notes (the whole new
/// state; unchanged parts are passed as they are).
#[derive(Clone)]
pub struct AppointmentChange {
    pub therapist: UserId,
    pub slot: Slot,
    pub kind: AppointmentKind,
    pub notes_enc: Option<Vec<u8>>,
}

impl std::fmt::Debug for AppointmentChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppointmentChange").field("slot", &self.slot).finish_non_exhaustive()
    }
}

/// Why writing a booking failed.
#[derive(Debug, thiserror::Error)]
pub enum BookingWriteError {
    /// The therapist has an active appointment overlapping the slot (the exclusion constraint).
    #[error("the therapist already has an active appointment overlapping this slot")]
    Overlap,
    /// The transaction lost a race for locks (deadlock broken by Postgres, serialization
    /// failure); retrying it in a new transaction is safe.
    #[error("the booking raced another one for the same slot; retry")]
    Contention,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BookingWriteError {
    fn classify(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error {
            match db.code().as_deref() {
                Some("23P01") if db.constraint() == Some(NO_DOUBLE_BOOKING) => return BookingWriteError::Overlap,
                Some("40P01" | "40001") => return BookingWriteError::Contention,
                _ => {}
            }
        }
        BookingWriteError::Store(StoreError::classify(error))
    }
}

const COLUMNS: &str = "id, tenant_id, patient_id, therapist_id, starts_at, ends_at, kind, status, payment_state, \
     notes_enc, cancel_reason, cancel_note_enc, cancelled_at, created_at, updated_at";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("appointments: {what}"))
}

fn row_of(row: &PgRow) -> Result<AppointmentRow, StoreError> {
    let reason: Option<String> = row.try_get("cancel_reason")?;
    Ok(AppointmentRow {
        id: row.try_get("id")?,
        tenant: TenantId::from_uuid(row.try_get("tenant_id")?),
        patient: PatientId::from_uuid(row.try_get("patient_id")?),
        therapist: UserId::from_uuid(row.try_get("therapist_id")?),
        slot: Slot::new(row.try_get("starts_at")?, row.try_get("ends_at")?).map_err(|_| corrupt("slot"))?,
        kind: row.try_get::<String, _>("kind")?.parse().map_err(|_| corrupt("kind"))?,
        status: row.try_get::<String, _>("status")?.parse().map_err(|_| corrupt("status"))?,
        payment_state: row.try_get::<String, _>("payment_state")?.parse().map_err(|_| corrupt("payment_state"))?,
        notes_enc: row.try_get("notes_enc")?,
        cancel_reason: reason.map(|r| CancelReason::parse(&r).ok_or_else(|| corrupt("cancel_reason"))).transpose()?,
        cancel_note_enc: row.try_get("cancel_note_enc")?,
        cancelled_at: row.try_get("cancelled_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The calendar lock every booking write takes first, in the same statement (the placeholders
/// name the statement's practice and therapist parameters): a transaction-level
/// advisory lock per (practice, therapist). Bookings of one therapist then queue here instead of
/// waiting on each other's uncommitted rows inside the exclusion constraint's check, which under
/// a race of many writers for one slot ends in deadlocks and retries (measured: p99 9 s with 16
/// clients racing for one slot without it). Different therapists, and different practices, never
/// share a key. (Before audit entries were sealed apart, the practice's chain-head lock did this,
/// for the whole practice.)
fn calendar_lock(tenant_param: &str, therapist_param: &str) -> String {
    format!(
        "(SELECT pg_advisory_xact_lock(hashtextextended('praxis.calendar:' || {tenant_param}::text || ':' || \
         {therapist_param}::text, 0))) AS calendar_lock"
    )
}

/// Stores a new `scheduled` appointment. [`BookingWriteError::Overlap`] when the therapist is
/// booked at that time; the transaction is then aborted and must be rolled back.
pub async fn insert(conn: &mut PgConnection, appointment: &NewAppointment) -> Result<(), BookingWriteError> {
    crate::sql::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO appointments (id, tenant_id, patient_id, therapist_id, starts_at, ends_at, kind, status, \
            notes_enc, created_at, updated_at) \
         SELECT $1, $2, $3, $4, $5, $6, $7, 'scheduled', $8, $9, $9 FROM {}",
        calendar_lock("$2", "$4")
    )))
    .bind(appointment.id)
    .bind(appointment.tenant.as_uuid())
    .bind(appointment.patient.as_uuid())
    .bind(appointment.therapist.as_uuid())
    .bind(appointment.slot.start())
    .bind(appointment.slot.end())
    .bind(appointment.kind.as_str())
    .bind(appointment.notes_enc.as_deref())
    .bind(appointment.created_at)
    .execute(&mut *conn)
    .await
    .map_err(BookingWriteError::classify)?;
    Ok(())
}

/// One appointment, if the caller's context may see it. `for_update` locks it until the
/// transaction ends.
pub async fn get(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    for_update: bool,
) -> Result<Option<AppointmentRow>, StoreError> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {COLUMNS} FROM appointments WHERE tenant_id = $1 AND id = $2{lock}");
    let row = crate::sql::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_uuid())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    row.as_ref().map(row_of).transpose()
}

/// Which appointments a listing wants (all filters are "and"; row-level security narrows further).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppointmentQuery {
    pub therapist: Option<UserId>,
    pub patient: Option<PatientId>,
    /// Only appointments ending after this instant.
    pub from: Option<OffsetDateTime>,
    /// Only appointments starting before this instant.
    pub to: Option<OffsetDateTime>,
    pub status: Option<AppointmentStatus>,
}

/// Where a listing continues: after this (start, id), in (start, id) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppointmentCursor {
    pub start: OffsetDateTime,
    pub id: Uuid,
}

/// Up to `limit` visible appointments matching `query` after `after`, in (start, id) order.
pub async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    query: &AppointmentQuery,
    after: Option<AppointmentCursor>,
    limit: u32,
) -> Result<Vec<AppointmentRow>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM appointments WHERE tenant_id = $1 \
           AND ($2::uuid IS NULL OR therapist_id = $2) \
           AND ($3::uuid IS NULL OR patient_id = $3) \
           AND ($4::timestamptz IS NULL OR ends_at > $4) \
           AND ($5::timestamptz IS NULL OR starts_at < $5) \
           AND ($6::text IS NULL OR status = $6) \
           AND ($7::timestamptz IS NULL OR (starts_at, id) > ($7, $8)) \
         ORDER BY starts_at, id LIMIT $9"
    );
    let rows = crate::sql::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_uuid())
        .bind(query.therapist.map(|t| *t.as_uuid()))
        .bind(query.patient.map(|p| *p.as_uuid()))
        .bind(query.from)
        .bind(query.to)
        .bind(query.status.map(AppointmentStatus::as_str))
        .bind(after.map(|a| a.start))
        .bind(after.map(|a| a.id))
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    rows.iter().map(row_of).collect()
}

/// Moves an active appointment and/or changes its therapist, kind or notes. `Ok(false)` when no
/// visible active appointment matched.
pub async fn reschedule(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    change: &AppointmentChange,
    now: OffsetDateTime,
) -> Result<bool, BookingWriteError> {
    // The calendar lock of the therapist the appointment moves to.
    let result = crate::sql::query(sqlx::AssertSqlSafe(format!(
        "UPDATE appointments SET therapist_id = $3, starts_at = $4, ends_at = $5, kind = $6, notes_enc = $7, \
            updated_at = $8 \
         FROM {} \
         WHERE tenant_id = $1 AND id = $2 AND status IN ('scheduled', 'confirmed')",
        calendar_lock("$1", "$3")
    )))
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(change.therapist.as_uuid())
    .bind(change.slot.start())
    .bind(change.slot.end())
    .bind(change.kind.as_str())
    .bind(change.notes_enc.as_deref())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(BookingWriteError::classify)?;
    Ok(result.rows_affected() == 1)
}

/// Records a status change decided by the caller (`confirmed`, `completed`, `no_show`; a
/// cancellation goes through [`cancel`]). Only from `from`, so a concurrent change is not
/// overwritten: `Ok(false)` when the row is not (or no longer) in `from`.
pub async fn set_status(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    from: AppointmentStatus,
    to: AppointmentStatus,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let result = crate::sql::query(
        "UPDATE appointments SET status = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2 AND status = $3",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(result.rows_affected() == 1)
}

/// Cancels an appointment that is in `from`, recording the reason and the sealed note.
pub async fn cancel(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    from: AppointmentStatus,
    reason: CancelReason,
    note_enc: Option<&[u8]>,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let result = crate::sql::query(
        "UPDATE appointments SET status = 'cancelled', cancel_reason = $4, cancel_note_enc = $5, cancelled_at = $6, \
            updated_at = $6 \
         WHERE tenant_id = $1 AND id = $2 AND status = $3",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(from.as_str())
    .bind(reason.as_str())
    .bind(note_enc)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(result.rows_affected() == 1)
}

/// Applies a verified Stripe event to an appointment's payment state (for the webhook handler,
/// in a transaction with the practice's service context, `DbContext::service`).
///
/// Returns `None` when no such appointment is visible, else `(state before the event, what the
/// event did)`; the state after is `update.state_after(before)`. The row is locked while the
/// rule ([`PaymentState::apply`]) runs, so concurrent deliveries are applied one after the other
/// and the order-independent rule gives the same result whatever their order. Only this module
/// ([`apply_locked_payment_event`]) marks its transaction so that the database's guard lets the
/// payment state change: no API handler can set it.
pub async fn apply_payment_event(
    conn: &mut PgConnection,
    tenant: TenantId,
    appointment_id: Uuid,
    event: PaymentEvent,
) -> Result<Option<(PaymentState, PaymentUpdate)>, StoreError> {
    let mut states = lock_payment_states(conn, tenant, &[appointment_id]).await?;
    apply_locked_payment_event(conn, tenant, &mut states, appointment_id, event).await
}

/// The payment states of a practice's appointments among `ids`, locked (`FOR UPDATE`) until the
/// transaction ends; ids the practice does not have are absent. Rows are locked in id order, so
/// two transactions locking overlapping sets queue instead of deadlocking. For many payment
/// events in one transaction: one round trip for all of them, then
/// [`apply_locked_payment_event`] for each.
pub async fn lock_payment_states(
    conn: &mut PgConnection,
    tenant: TenantId,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, PaymentState>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, String)> = crate::sql::query_as(
        "SELECT id, payment_state FROM appointments WHERE tenant_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
    )
    .bind(tenant.as_uuid())
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    rows.into_iter().map(|(id, state)| Ok((id, state.parse().map_err(|_| corrupt("payment_state"))?))).collect()
}

/// Applies `event` to an appointment whose state [`lock_payment_states`] locked into `states`,
/// writing the row (and `states`) only when the state changes. `None` when the appointment is
/// not among them.
pub async fn apply_locked_payment_event(
    conn: &mut PgConnection,
    tenant: TenantId,
    states: &mut HashMap<Uuid, PaymentState>,
    appointment_id: Uuid,
    event: PaymentEvent,
) -> Result<Option<(PaymentState, PaymentUpdate)>, StoreError> {
    let Some(before) = states.get(&appointment_id).copied() else {
        return Ok(None);
    };
    let update = before.apply(event);
    if let PaymentUpdate::Changed(next) = update {
        crate::sql::query("SELECT set_config('app.payment_event', 'on', true)")
            .execute(&mut *conn)
            .await
            .map_err(StoreError::classify)?;
        crate::sql::query("UPDATE appointments SET payment_state = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_uuid())
            .bind(appointment_id)
            .bind(next.as_str())
            .execute(&mut *conn)
            .await
            .map_err(StoreError::classify)?;
        crate::sql::query("SELECT set_config('app.payment_event', '', true)")
            .execute(&mut *conn)
            .await
            .map_err(StoreError::classify)?;
        states.insert(appointment_id, next);
    }
    Ok(Some((before, update)))
}

/// A span of a therapist's time that is taken by an active appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusySlot {
    pub appointment: Uuid,
    pub slot: Slot,
}

/// The therapist's active appointments overlapping `[from, to)`, by start (`except` left out,
/// for a move). Times only: for booking checks and availability.
pub async fn busy_slots(
    conn: &mut PgConnection,
    tenant: TenantId,
    therapist: UserId,
    from: OffsetDateTime,
    to: OffsetDateTime,
    except: Option<Uuid>,
) -> Result<Vec<BusySlot>, StoreError> {
    let rows = crate::sql::query(
        "SELECT id, starts_at, ends_at FROM appointments \
         WHERE tenant_id = $1 AND therapist_id = $2 AND status IN ('scheduled', 'confirmed') \
           AND tstzrange(starts_at, ends_at, '[)') && tstzrange($3, $4, '[)') \
           AND ($5::uuid IS NULL OR id <> $5) \
         ORDER BY starts_at",
    )
    .bind(tenant.as_uuid())
    .bind(therapist.as_uuid())
    .bind(from)
    .bind(to)
    .bind(except)
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    rows.iter()
        .map(|row| {
            Ok(BusySlot {
                appointment: row.try_get("id")?,
                slot: Slot::new(row.try_get("starts_at")?, row.try_get("ends_at")?).map_err(|_| corrupt("slot"))?,
            })
        })
        .collect()
}

/// Replaces the note ciphertexts of an appointment with the same notes sealed under another key
/// (`praxis keys reencrypt`); the notes' content, and so `updated_at`, do not change.
pub async fn replace_note_ciphertexts(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    notes_enc: Option<&[u8]>,
    cancel_note_enc: Option<&[u8]>,
) -> Result<bool, StoreError> {
    let result = crate::sql::query(
        "UPDATE appointments SET notes_enc = $3, cancel_note_enc = $4 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(notes_enc)
    .bind(cancel_note_enc)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(result.rows_affected() == 1)
}

/// Every appointment of a patient visible to the caller, by start (the GDPR export).
pub async fn of_patient(
    conn: &mut PgConnection,
    tenant: TenantId,
    patient: PatientId,
) -> Result<Vec<AppointmentRow>, StoreError> {
    let sql =
        format!("SELECT {COLUMNS} FROM appointments WHERE tenant_id = $1 AND patient_id = $2 ORDER BY starts_at, id");
    let rows = crate::sql::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_uuid())
        .bind(patient.as_uuid())
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    rows.iter().map(row_of).collect()
}

/// On erasure of a patient: their future active appointments are cancelled (`patient_erased`),
/// freeing the therapist's time, their pending reminders are skipped, and every note ciphertext
/// is removed (the destroyed DEK already makes them unreadable; this leaves nothing to hold).
/// Returns how many appointments were cancelled.
pub async fn erase_patient_data(
    conn: &mut PgConnection,
    tenant: TenantId,
    patient: PatientId,
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    crate::sql::query(
        "UPDATE appointment_reminders SET status = 'skipped', skip_reason = 'patient_erased', decided_at = $3, \
            locked_until = NULL \
         WHERE tenant_id = $1 AND status = 'pending' \
           AND appointment_id IN (SELECT id FROM appointments WHERE tenant_id = $1 AND patient_id = $2)",
    )
    .bind(tenant.as_uuid())
    .bind(patient.as_uuid())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    let cancelled = crate::sql::query(
        "UPDATE appointments SET status = 'cancelled', cancel_reason = 'patient_erased', cancelled_at = $3, \
            updated_at = $3 \
         WHERE tenant_id = $1 AND patient_id = $2 AND status IN ('scheduled', 'confirmed') AND starts_at > $3",
    )
    .bind(tenant.as_uuid())
    .bind(patient.as_uuid())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    crate::sql::query(
        "UPDATE appointments SET notes_enc = NULL, cancel_note_enc = NULL, updated_at = $3 \
         WHERE tenant_id = $1 AND patient_id = $2 AND (notes_enc IS NOT NULL OR cancel_note_enc IS NOT NULL)",
    )
    .bind(tenant.as_uuid())
    .bind(patient.as_uuid())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(cancelled.rows_affected())
}

// --- reminders ---------------------------------------------------------------------------------

/// Where a reminder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReminderStatus {
    /// Waiting to come due (or to be retried).
    Pending,
    Sent,
    /// Decided against, with a [`ReminderSkipReason`].
    Skipped,
    /// Delivery failed too often; given up.
    Failed,
}

impl ReminderStatus {
    /// Every status, in a fixed order.
    pub const ALL: [ReminderStatus; 4] =
        [ReminderStatus::Pending, ReminderStatus::Sent, ReminderStatus::Skipped, ReminderStatus::Failed];

    pub const fn as_str(self) -> &'static str {
        match self {
            ReminderStatus::Pending => "pending",
            ReminderStatus::Sent => "sent",
            ReminderStatus::Skipped => "skipped",
            ReminderStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<ReminderStatus> {
        ReminderStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A reminder as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderRow {
    pub id: Uuid,
    pub tenant: TenantId,
    pub appointment: Uuid,
    pub due_at: OffsetDateTime,
    pub planned_start: OffsetDateTime,
    pub offset_minutes: i32,
    pub status: ReminderStatus,
    pub skip_reason: Option<ReminderSkipReason>,
    pub channel: Option<ReminderChannel>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub decided_at: Option<OffsetDateTime>,
}

const REMINDER_COLUMNS: &str = "id, tenant_id, appointment_id, due_at, planned_start, offset_minutes, status, \
     skip_reason, channel, attempts, last_error, decided_at";

fn reminder_of(row: &PgRow) -> Result<ReminderRow, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("appointment_reminders: {what}"));
    let reason: Option<String> = row.try_get("skip_reason")?;
    let channel: Option<String> = row.try_get("channel")?;
    Ok(ReminderRow {
        id: row.try_get("id")?,
        tenant: TenantId::from_uuid(row.try_get("tenant_id")?),
        appointment: row.try_get("appointment_id")?,
        due_at: row.try_get("due_at")?,
        planned_start: row.try_get("planned_start")?,
        offset_minutes: row.try_get("offset_minutes")?,
        status: ReminderStatus::parse(&row.try_get::<String, _>("status")?).ok_or_else(|| bad("status"))?,
        skip_reason: reason.map(|r| r.parse().map_err(|_| bad("skip_reason"))).transpose()?,
        channel: channel.map(|c| c.parse().map_err(|_| bad("channel"))).transpose()?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        decided_at: row.try_get("decided_at")?,
    })
}

/// Plans reminders for an appointment starting at `planned_start` (the output of
/// `scheduling::plan_reminders`).
pub async fn insert_reminders(
    conn: &mut PgConnection,
    tenant: TenantId,
    appointment: Uuid,
    planned_start: OffsetDateTime,
    reminders: &[PlannedReminder],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    for reminder in reminders {
        let minutes = i32::try_from(reminder.offset.whole_minutes())
            .map_err(|_| StoreError::Corrupt("reminder offset out of range".into()))?;
        crate::sql::query(
            "INSERT INTO appointment_reminders (id, tenant_id, appointment_id, due_at, planned_start, offset_minutes, \
                created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(Uuid::now_v7())
        .bind(tenant.as_uuid())
        .bind(appointment)
        .bind(reminder.due_at)
        .bind(planned_start)
        .bind(minutes)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    }
    Ok(())
}

/// Marks the appointment's pending reminders skipped for `reason` (a cancellation, a move).
/// Returns how many.
pub async fn skip_pending_reminders(
    conn: &mut PgConnection,
    tenant: TenantId,
    appointment: Uuid,
    reason: ReminderSkipReason,
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    let result = crate::sql::query(
        "UPDATE appointment_reminders SET status = 'skipped', skip_reason = $3, decided_at = $4, locked_until = NULL \
         WHERE tenant_id = $1 AND appointment_id = $2 AND status = 'pending'",
    )
    .bind(tenant.as_uuid())
    .bind(appointment)
    .bind(reason.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(result.rows_affected())
}

/// The reminders of one appointment, by due time.
pub async fn reminders_of(
    conn: &mut PgConnection,
    tenant: TenantId,
    appointment: Uuid,
) -> Result<Vec<ReminderRow>, StoreError> {
    let sql = format!(
        "SELECT {REMINDER_COLUMNS} FROM appointment_reminders WHERE tenant_id = $1 AND appointment_id = $2 \
         ORDER BY due_at, id"
    );
    let rows = crate::sql::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_uuid())
        .bind(appointment)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    rows.iter().map(reminder_of).collect()
}

/// Practices with reminders due by `now` that no worker holds, most overdue first (through the
/// `reminders_due_practices` function: the only cross-practice read the runtime role can make).
pub async fn practices_with_due_reminders(
    conn: &mut PgConnection,
    now: OffsetDateTime,
    max_practices: u32,
) -> Result<Vec<TenantId>, StoreError> {
    let ids: Vec<Uuid> = crate::sql::query_scalar("SELECT reminders_due_practices($1, $2)")
        .bind(now)
        .bind(i32::try_from(max_practices).unwrap_or(i32::MAX))
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    Ok(ids.into_iter().map(TenantId::from_uuid).collect())
}

/// Claims up to `batch` due reminders of the practice for one worker: rows another worker is
/// claiming right now are skipped (`FOR UPDATE SKIP LOCKED`), and the claimed ones are leased
/// until `lease_until`, so no other worker takes them after this transaction commits either.
/// Each claim counts as an attempt.
pub async fn claim_due_reminders(
    conn: &mut PgConnection,
    tenant: TenantId,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    batch: u32,
) -> Result<Vec<ReminderRow>, StoreError> {
    let sql = format!(
        "UPDATE appointment_reminders SET locked_until = $3, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM appointment_reminders \
                      WHERE tenant_id = $1 AND status = 'pending' AND due_at <= $2 \
                        AND (locked_until IS NULL OR locked_until <= $2) \
                      ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING {REMINDER_COLUMNS}"
    );
    let rows = crate::sql::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_uuid())
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(batch))
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    let mut claimed: Vec<ReminderRow> = rows.iter().map(reminder_of).collect::<Result<_, _>>()?;
    claimed.sort_by_key(|r| (r.due_at, r.id));
    Ok(claimed)
}

/// Records a delivered reminder. `Ok(false)` when it was no longer pending (decided meanwhile).
pub async fn mark_reminder_sent(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    channel: ReminderChannel,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let result = crate::sql::query(
        "UPDATE appointment_reminders SET status = 'sent', channel = $3, decided_at = $4, locked_until = NULL, \
            last_error = NULL \
         WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(channel.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(result.rows_affected() == 1)
}

/// Records a reminder decided against. `Ok(false)` when it was no longer pending.
pub async fn mark_reminder_skipped(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    reason: ReminderSkipReason,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let result = crate::sql::query(
        "UPDATE appointment_reminders SET status = 'skipped', skip_reason = $3, decided_at = $4, locked_until = NULL \
         WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(reason.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(result.rows_affected() == 1)
}

/// Records a failed delivery attempt: retried after `retry_at` (the lease moves there), or, when
/// `retry_at` is `None`, given up as `failed`. `error` is a short code, never provider text.
pub async fn mark_reminder_attempt_failed(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    error: &str,
    retry_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let code: String = error.chars().take(64).collect();
    let code = if code.is_empty() { "error".to_owned() } else { code };
    let result = match retry_at {
        Some(at) => crate::sql::query(
            "UPDATE appointment_reminders SET last_error = $3, locked_until = $4 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(tenant.as_uuid())
        .bind(id)
        .bind(&code)
        .bind(at),
        None => crate::sql::query(
            "UPDATE appointment_reminders SET status = 'failed', last_error = $3, decided_at = $4, \
                locked_until = NULL \
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(tenant.as_uuid())
        .bind(id)
        .bind(&code)
        .bind(now),
    }
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(result.rows_affected() == 1)
}

// --- working hours and absences -----------------------------------------------------------------

/// The lower-case English name of a weekday (the stored and API form).
pub fn weekday_name(weekday: Weekday) -> &'static str {
    match weekday {
        Weekday::Monday => "monday",
        Weekday::Tuesday => "tuesday",
        Weekday::Wednesday => "wednesday",
        Weekday::Thursday => "thursday",
        Weekday::Friday => "friday",
        Weekday::Saturday => "saturday",
        Weekday::Sunday => "sunday",
    }
}

/// The weekday with this lower-case English name.
pub fn parse_weekday(name: &str) -> Option<Weekday> {
    WEEK.into_iter().find(|d| weekday_name(*d) == name)
}

/// Monday first.
pub const WEEK: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

/// A time of day as `HH:MM`.
pub fn hh_mm(t: Time) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// `HH:MM` (24 hours) as a time of day.
pub fn parse_hh_mm(text: &str) -> Option<Time> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    Time::from_hms(hours.parse().ok()?, minutes.parse().ok()?, 0).ok()
}

/// The stored JSON form of weekly hours' ranges.
pub fn ranges_json(hours: &WeeklyHours) -> serde_json::Value {
    let ranges: Vec<serde_json::Value> = WEEK
        .into_iter()
        .flat_map(|day| {
            hours.ranges(day).iter().map(move |r| {
                serde_json::json!({ "weekday": weekday_name(day), "start": hh_mm(r.start), "end": hh_mm(r.end) })
            })
        })
        .collect();
    serde_json::Value::Array(ranges)
}

fn hours_of(time_zone: &str, ranges: &serde_json::Value) -> Result<WeeklyHours, StoreError> {
    let bad = || StoreError::Corrupt("working_hours: ranges".into());
    let mut parsed = Vec::new();
    for range in ranges.as_array().ok_or_else(bad)? {
        let text = |key: &str| range.get(key).and_then(serde_json::Value::as_str).ok_or_else(bad);
        let weekday = parse_weekday(text("weekday")?).ok_or_else(bad)?;
        let start = parse_hh_mm(text("start")?).ok_or_else(bad)?;
        let end = parse_hh_mm(text("end")?).ok_or_else(bad)?;
        parsed.push((weekday, TimeRange { start, end }));
    }
    WeeklyHours::new(time_zone, parsed).map_err(|e| StoreError::Corrupt(format!("working_hours: {e}")))
}

/// A therapist's working hours, if set (and visible).
pub async fn working_hours(
    conn: &mut PgConnection,
    tenant: TenantId,
    therapist: UserId,
) -> Result<Option<(WeeklyHours, OffsetDateTime)>, StoreError> {
    let row = crate::sql::query(
        "SELECT time_zone, ranges, updated_at FROM working_hours WHERE tenant_id = $1 AND therapist_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(therapist.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    row.map(|row| {
        let zone: String = row.try_get("time_zone")?;
        let ranges: serde_json::Value = row.try_get("ranges")?;
        Ok((hours_of(&zone, &ranges)?, row.try_get("updated_at")?))
    })
    .transpose()
}

/// Replaces a therapist's working hours.
pub async fn put_working_hours(
    conn: &mut PgConnection,
    tenant: TenantId,
    therapist: UserId,
    hours: &WeeklyHours,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    crate::sql::query(
        "INSERT INTO working_hours (tenant_id, therapist_id, time_zone, ranges, updated_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id, therapist_id) DO UPDATE \
         SET time_zone = EXCLUDED.time_zone, ranges = EXCLUDED.ranges, updated_at = EXCLUDED.updated_at",
    )
    .bind(tenant.as_uuid())
    .bind(therapist.as_uuid())
    .bind(hours.time_zone())
    .bind(ranges_json(hours))
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(())
}

/// A stored absence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsenceRow {
    pub id: Uuid,
    pub therapist: UserId,
    pub absence: Absence,
    pub created_at: OffsetDateTime,
}

/// Stores an absence.
pub async fn insert_absence(conn: &mut PgConnection, tenant: TenantId, row: &AbsenceRow) -> Result<(), StoreError> {
    crate::sql::query(
        "INSERT INTO therapist_absences (id, tenant_id, therapist_id, starts_at, ends_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(row.id)
    .bind(tenant.as_uuid())
    .bind(row.therapist.as_uuid())
    .bind(row.absence.start())
    .bind(row.absence.end())
    .bind(row.created_at)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(())
}

/// Removes one absence of the therapist. `Ok(false)` when none matched (or not visible).
pub async fn delete_absence(
    conn: &mut PgConnection,
    tenant: TenantId,
    therapist: UserId,
    id: Uuid,
) -> Result<bool, StoreError> {
    let result =
        crate::sql::query("DELETE FROM therapist_absences WHERE tenant_id = $1 AND therapist_id = $2 AND id = $3")
            .bind(tenant.as_uuid())
            .bind(therapist.as_uuid())
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::classify)?;
    Ok(result.rows_affected() == 1)
}

/// The therapist's absences overlapping `[from, to)`, by start.
pub async fn absences(
    conn: &mut PgConnection,
    tenant: TenantId,
    therapist: UserId,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<AbsenceRow>, StoreError> {
    let rows = crate::sql::query(
        "SELECT id, therapist_id, starts_at, ends_at, created_at FROM therapist_absences \
         WHERE tenant_id = $1 AND therapist_id = $2 AND starts_at < $4 AND ends_at > $3 ORDER BY starts_at, id",
    )
    .bind(tenant.as_uuid())
    .bind(therapist.as_uuid())
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    rows.iter()
        .map(|row| {
            Ok(AbsenceRow {
                id: row.try_get("id")?,
                therapist: UserId::from_uuid(row.try_get("therapist_id")?),
                absence: Absence::new(row.try_get("starts_at")?, row.try_get("ends_at")?)
                    .map_err(|_| StoreError::Corrupt("therapist_absences: span".into()))?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect()
}

/// The patient's newest DEK generation that is not destroyed, to seal new notes with (read from
/// `patient_keys`, which every role of the practice may read, so a caller who may not see the
/// patient record can still seal a note on an appointment it may change).
pub async fn latest_live_patient_key(
    conn: &mut PgConnection,
    tenant: TenantId,
    patient: PatientId,
) -> Result<Option<crate::keys::PatientKeyRecord>, StoreError> {
    let generation: Option<i32> = crate::sql::query_scalar(
        "SELECT max(generation) FROM patient_keys WHERE tenant_id = $1 AND patient_id = $2 AND destroyed_at IS NULL",
    )
    .bind(tenant.as_uuid())
    .bind(patient.as_uuid())
    .fetch_one(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    match generation {
        None => Ok(None),
        Some(generation) => {
            let generation = u32::try_from(generation).map_err(|_| corrupt("patient key generation"))?;
            crate::keys::get(conn, tenant, patient, generation).await
        }
    }
}
