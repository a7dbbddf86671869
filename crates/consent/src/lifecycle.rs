//! The words of the consent lifecycle: where a consent stands ([`ConsentState`]) and what can be
//! done to it ([`ConsentAction`]). The table that connects them is [`crate::machine`].
//!
//! These sit apart from the machine so that [`crate::error`] can name them (an illegal transition
//! says from where and what) without the machine and the error depending on each other: parsing
//! one of these fails with the standalone [`UnknownValue`], which converts into
//! [`crate::ConsentError`].

use crate::closed_set::{UnknownValue, closed_set};

closed_set! {
    /// Where a consent stands.
    pub enum ConsentState (field: "state", error: UnknownValue) {
        /// Nothing was ever recorded for this patient and purpose.
        None => "none",
        /// The practice asked; the patient has not answered.
        Requested => "requested",
        /// The patient agreed and the grant is in force (active).
        Granted => "granted",
        /// A grant whose `expires_at` has passed. Only ever an *effective* state, computed from
        /// the time; never stored, never the result of an action.
        Expired => "expired",
        /// The patient withdrew the consent, or refused the request.
        Withdrawn => "withdrawn",
        /// A finished cycle, filed away.
        Archived => "archived",
    }
}

closed_set! {
    /// What can be done to a consent. Expiry is not among them: it happens by time.
    pub enum ConsentAction (field: "action", error: UnknownValue) {
        Request => "request",
        Grant => "grant",
        Withdraw => "withdraw",
        Archive => "archive",
    }
}

impl ConsentState {
    /// True while the consent is in force: the only state in which a sender may contact.
    pub const fn is_active(self) -> bool {
        matches!(self, ConsentState::Granted)
    }

    /// True for the states that are written to storage as a record's state. `expired` is not: it
    /// is derived from `granted` and the time.
    pub const fn is_stored(self) -> bool {
        !matches!(self, ConsentState::Expired)
    }
}
