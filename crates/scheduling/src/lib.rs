//! Scheduling: the rules of appointments, free of I/O.
//!
//! The database (an exclusion constraint over therapist and `tstzrange` for double booking), the
//! HTTP API and the reminder worker sit on top of these rules; nothing here reads a clock (callers
//! pass `now` from a `kernel::Clock`), touches storage, or knows HTTP. Every refusal is a
//! [`SchedulingError`] with a stable slug ([`SchedulingError::kind`]) and the input field it is
//! about ([`SchedulingError::field`]).
//!
//! # Rules
//!
//! **Time.** All instants are UTC, all spans half-open `[start, end)` like `tstzrange`'s default
//! bounds, so back-to-back appointments do not overlap. Booking times are whole minutes: times
//! with seconds are refused rather than truncated.
//!
//! **Status** ([`AppointmentStatus`]): `scheduled -> confirmed -> completed | cancelled | no_show`,
//! and `scheduled -> cancelled | completed | no_show` directly, because confirming is a fact about
//! the patient's answer, not a step the outcome depends on. Final statuses allow nothing; a
//! refused change lists the allowed ones ([`SchedulingError::IllegalTransition`], a 409). An
//! outcome cannot be recorded before the start ([`AppointmentStatus::transition_at`]). Only
//! `scheduled` and `confirmed` hold a slot ([`AppointmentStatus::is_active`]).
//!
//! **Payment** ([`PaymentState`]): changed only by verified Stripe events ([`PaymentEvent`]).
//! States are ranked `unpaid < failed < paid < refunded` and an event only ever moves the state
//! up, so the result is the same in any delivery order and with any repeats; a repeat is
//! `Unchanged`, a superseded event `Stale`, never an error ([`PaymentState::apply`]).
//!
//! **Booking** ([`BookingPolicy::validate_booking`]): whole minutes, end after start, duration
//! within the policy (default 5 minutes to 8 hours), start not before the current minute and at
//! most the policy's lead time ahead (default 365 days). [`AppointmentKind`] is a closed set.
//!
//! **Working hours** ([`WeeklyHours`]): per weekday up to [`MAX_RANGES_PER_DAY`] non-overlapping
//! local ranges in an IANA time zone from the bundled database, converted to UTC per date, so
//! DST changes move them correctly (rules for the skipped and repeated hour at [`WeeklyHours`]).
//! [`fits_working_hours`] refuses a slot overlapping an [`Absence`] or not inside one stretch of
//! working time.
//!
//! **Availability** ([`free_slots`]): slots on each working stretch's step grid that fit the
//! hours, miss absences and active bookings, lie in `[from, to)` and not before `now`; the range
//! is at most [`MAX_SEARCH_DAYS`] days and the answer at most [`MAX_FREE_SLOTS`] slots.
//!
//! **Reminders** ([`plan_reminders`]): offsets before the start (default one, 24 hours); a
//! reminder already due at booking time, or due within the hour after it, is dropped, not sent
//! at once: the booking confirmation has just told the patient. [`decide_reminder`] says, when a
//! reminder comes due, whether to send it and on which [`ReminderChannel`], or which
//! [`ReminderSkipReason`] to record.

#[macro_use]
mod macros;

mod availability;
mod booking;
mod error;
mod hours;
mod payment;
mod reminder;
mod status;

pub use availability::{FreeSlotQuery, MAX_FREE_SLOTS, MAX_SEARCH_DAYS, free_slots};
pub use booking::{AppointmentKind, BookingPolicy, Slot};
pub use error::SchedulingError;
pub use hours::{
    Absence, MAX_RANGES_PER_DAY, TimeRange, WeeklyHours, fits_working_hours, local_wall_time, time_zone_names,
};
pub use payment::{PaymentEvent, PaymentState, PaymentUpdate};
pub use reminder::{
    MAX_REMINDERS, PlannedReminder, ReminderChannel, ReminderCheck, ReminderDecision, ReminderPolicy,
    ReminderSkipReason, decide_reminder, plan_reminders,
};
pub use status::AppointmentStatus;
