//! GDPR consent per purpose: the rules, without storage.
//!
//! * [`Purpose`] and [`Channel`]: closed sets with stable snake_case spellings.
//! * The lifecycle ([`machine`]): `none → requested → granted → withdrawn | expired → archived`,
//!   driven by the actions `request`, `grant`, `withdraw`, `archive`; expiry happens by time.
//!   The module documentation holds the full table and the reason for every cell.
//! * [`Evidence`] on every change: the consent text's version and SHA-256, the channel, who
//!   recorded it, and an optional reference to the proof (e.g. the id of an inbound "STOP").
//! * [`ConsentRecord`]: where one patient's consent for one purpose stands; [`ConsentEvent`]: one
//!   change, appended to a history that is never edited. Replaying the history gives the record.
//! * [`may_contact`]: the one question every sender (reminders, marketing) asks before sending;
//!   [`marketing_purpose_for_channel`]: which purpose an inbound "STOP" withdraws.
//!
//! Pure: no I/O, no clock reads (every operation takes `now`), no async.
//!
//! ```
//! use consent::{Channel, ConsentCommand, ConsentRecord, ConsentText, Evidence, Purpose, may_contact};
//! use kernel::{Actor, PatientId, Role, TenantId, UserId};
//! use time::macros::datetime;
//!
//! let desk = Actor::User { tenant: TenantId::new(), user: UserId::new(), role: Role::Receptionist };
//! let text = ConsentText::from_text("reminders-v1", "I agree to appointment reminders by SMS.")?;
//! let mut reminders = ConsentRecord::new(PatientId::new(), Purpose::AppointmentReminders);
//!
//! // A paper form signed at the desk: granted directly, valid for a year.
//! let signed_at = datetime!(2026-03-01 09:30 UTC);
//! let event = reminders.apply(
//!     ConsentCommand::Grant { expires_at: Some(datetime!(2027-03-01 00:00 UTC)) },
//!     Evidence::new(text, Channel::Paper, desk),
//!     signed_at,
//! )?;
//! assert_eq!(event.seq(), 1); // append `event` to the history, upsert `reminders`
//!
//! let records = [reminders];
//! assert!(may_contact(&records, Purpose::AppointmentReminders, datetime!(2026-06-01 08:00 UTC)));
//! assert!(!may_contact(&records, Purpose::AppointmentReminders, datetime!(2027-03-01 00:00 UTC)));
//! # Ok::<(), consent::ConsentError>(())
//! ```

mod closed_set;
pub mod error;
pub mod evidence;
pub mod lifecycle;
pub mod machine;
pub mod purpose;
pub mod record;

pub use error::ConsentError;
pub use evidence::{ConsentText, Evidence, NoteRef, TextDigest, TextVersion};
pub use lifecycle::{ConsentAction, ConsentState};
pub use machine::{ConsentCommand, allowed_actions, next_state};
pub use purpose::{Channel, InboundChannel, Purpose, marketing_purpose_for_channel};
pub use record::{ConsentEvent, ConsentEventParts, ConsentRecord, ConsentRecordParts, may_contact};
