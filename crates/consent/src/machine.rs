//! The consent lifecycle of one patient and one purpose, as a table.
//!
//! ```text
//!            request            grant               withdraw / expiry (time)        archive
//!   none ───────────▶ requested ──────▶ granted ─────────────────────▶ withdrawn | expired ──────▶ archived
//! ```
//!
//! | from \ action | `request`   | `grant`            | `withdraw`            | `archive`  |
//! |---------------|-------------|--------------------|-----------------------|------------|
//! | `none`        | `requested` | `granted`          | –                     | –          |
//! | `requested`   | `requested` | `granted`          | `withdrawn` (refusal) | `archived` |
//! | `granted`     | –           | `granted` (renew)  | `withdrawn`           | –          |
//! | `expired`     | `requested` | `granted`          | –                     | `archived` |
//! | `withdrawn`   | `requested` | `granted`          | –                     | `archived` |
//! | `archived`    | `requested` | `granted`          | –                     | –          |
//!
//! `from` is the *effective* state at the time of the action (see
//! [`crate::ConsentRecord::effective_state`]): a grant whose `expires_at` has passed is `expired`
//! although nothing was written when it lapsed. Why each cell is what it is:
//!
//! * **`grant` from anywhere.** Consent must be as easy to give as to withdraw, and it is often
//!   given without a prior request in the system: a paper form signed at the desk, a box ticked on
//!   the booking page. Granting needs only the evidence, never a `request` first. From `granted` it
//!   is a *renewal*: the patient agrees to a new text version or a new expiry, recorded with its
//!   own evidence, and the new grant's expiry replaces the old one. From `withdrawn`, `expired` or
//!   `archived` it starts a new cycle; the history keeps the old one.
//! * **`request` from `requested`** records asking again (a reminder, another channel, a newer
//!   text). **Not from `granted`:** asking for a consent the patient has already given would put
//!   it back to `requested` and silently stop every message sent on it; a new text is agreed to
//!   with a renewal `grant` instead. From a closed state (`expired`, `withdrawn`, `archived`) it
//!   starts a new cycle.
//! * **`withdraw` from `requested` is a refusal**: the patient says no to the request; recording it
//!   keeps the answer and its evidence (an unanswered request is merely archived). From `granted` it
//!   is the GDPR Art. 7(3) withdrawal. **Not from `expired`, `withdrawn`, `none` or `archived`:**
//!   nothing is in force, so there is nothing to withdraw, and a 409 tells the caller so (a "STOP"
//!   handler checks [`allowed_actions`] first and does nothing when `withdraw` is not among them;
//!   the patient is not contacted either way).
//! * **`archive` closes a finished cycle**: a refused or withdrawn consent, an expired one, or an
//!   unanswered request. **Not from `granted`:** an active consent ends by withdrawal (with the
//!   patient's evidence) or by expiry, never by a clerk filing it away, so the history can always
//!   say why contact stopped. Not from `none` or `archived`: there is nothing to close.
//!
//! Expiry is not an action: nothing and nobody has to run for a consent to expire.

use crate::error::ConsentError;
pub use crate::lifecycle::{ConsentAction, ConsentState};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The state `action` leads to from the effective state `from`, or `None` when the table above
/// forbids it.
pub const fn next_state(from: ConsentState, action: ConsentAction) -> Option<ConsentState> {
    use ConsentAction as A;
    use ConsentState as S;
    match (from, action) {
        (S::None | S::Requested | S::Expired | S::Withdrawn | S::Archived, A::Request) => Some(S::Requested),
        (_, A::Grant) => Some(S::Granted),
        (S::Requested | S::Granted, A::Withdraw) => Some(S::Withdrawn),
        (S::Requested | S::Expired | S::Withdrawn, A::Archive) => Some(S::Archived),
        (S::Granted, A::Request)
        | (S::None | S::Expired | S::Withdrawn | S::Archived, A::Withdraw)
        | (S::None | S::Granted | S::Archived, A::Archive) => None,
    }
}

/// The actions allowed from the effective state `from`, in [`ConsentAction::ALL`] order. This is
/// what a 409 for an illegal transition lists.
pub fn allowed_actions(from: ConsentState) -> Vec<ConsentAction> {
    ConsentAction::ALL.iter().copied().filter(|&action| next_state(from, action).is_some()).collect()
}

/// One requested change: an action with what only that action carries. An expiry exists only on
/// a grant, so it cannot be attached to anything else.
///
/// In JSON: `{"action": "grant", "expires_at": "2027-03-01T00:00:00Z"}` (`expires_at` optional),
/// `{"action": "withdraw"}`, ... Unknown fields, and an `expires_at` on anything but a grant, are
/// refused rather than silently dropped: a client that thinks it set an expiry must learn it did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CommandBody", into = "CommandBody")]
pub enum ConsentCommand {
    Request,
    /// Grant (or renew). `expires_at`, if any, must be after the time of the grant; `None` means
    /// the grant stands until withdrawn.
    Grant {
        expires_at: Option<OffsetDateTime>,
    },
    Withdraw,
    Archive,
}

/// The JSON shape of a [`ConsentCommand`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    action: ConsentAction,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

impl TryFrom<CommandBody> for ConsentCommand {
    type Error = ConsentError;
    fn try_from(body: CommandBody) -> Result<Self, Self::Error> {
        let command = match body.action {
            ConsentAction::Request => ConsentCommand::Request,
            ConsentAction::Grant => return Ok(ConsentCommand::Grant { expires_at: body.expires_at }),
            ConsentAction::Withdraw => ConsentCommand::Withdraw,
            ConsentAction::Archive => ConsentCommand::Archive,
        };
        if body.expires_at.is_some() {
            return Err(ConsentError::InvalidField { field: "expires_at", reason: "only a grant carries an expiry" });
        }
        Ok(command)
    }
}

impl From<ConsentCommand> for CommandBody {
    fn from(command: ConsentCommand) -> Self {
        Self { action: command.action(), expires_at: command.expires_at() }
    }
}

impl ConsentCommand {
    pub const fn action(self) -> ConsentAction {
        match self {
            ConsentCommand::Request => ConsentAction::Request,
            ConsentCommand::Grant { .. } => ConsentAction::Grant,
            ConsentCommand::Withdraw => ConsentAction::Withdraw,
            ConsentCommand::Archive => ConsentAction::Archive,
        }
    }

    pub const fn expires_at(self) -> Option<OffsetDateTime> {
        match self {
            ConsentCommand::Grant { expires_at } => expires_at,
            ConsentCommand::Request | ConsentCommand::Withdraw | ConsentCommand::Archive => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConsentAction as A;
    use ConsentState as S;

    /// The table of the module documentation, written out cell by cell, so a change to
    /// [`next_state`] has to change this test (and, one hopes, the documentation) too.
    const TABLE: [(ConsentState, [Option<ConsentState>; 4]); 6] = [
        //            request             grant              withdraw             archive
        (S::None, [Some(S::Requested), Some(S::Granted), None, None]),
        (S::Requested, [Some(S::Requested), Some(S::Granted), Some(S::Withdrawn), Some(S::Archived)]),
        (S::Granted, [None, Some(S::Granted), Some(S::Withdrawn), None]),
        (S::Expired, [Some(S::Requested), Some(S::Granted), None, Some(S::Archived)]),
        (S::Withdrawn, [Some(S::Requested), Some(S::Granted), None, Some(S::Archived)]),
        (S::Archived, [Some(S::Requested), Some(S::Granted), None, None]),
    ];

    #[test]
    fn next_state_is_the_documented_table() {
        assert_eq!(ConsentAction::ALL, [A::Request, A::Grant, A::Withdraw, A::Archive]);
        assert_eq!(TABLE.len(), ConsentState::ALL.len());
        for (from, row) in TABLE {
            for (action, expected) in ConsentAction::ALL.iter().zip(row) {
                assert_eq!(next_state(from, *action), expected, "{from} --{action}-->");
            }
        }
    }

    #[test]
    fn no_action_leads_to_none_or_expired() {
        for &from in ConsentState::ALL {
            for &action in ConsentAction::ALL {
                if let Some(to) = next_state(from, action) {
                    assert!(to.is_stored() && to != S::None, "{from} --{action}--> {to}");
                }
            }
        }
    }

    #[test]
    fn allowed_actions_list_the_legal_cells_in_order() {
        assert_eq!(allowed_actions(S::None), [A::Request, A::Grant]);
        assert_eq!(allowed_actions(S::Requested), [A::Request, A::Grant, A::Withdraw, A::Archive]);
        assert_eq!(allowed_actions(S::Granted), [A::Grant, A::Withdraw]);
        assert_eq!(allowed_actions(S::Expired), [A::Request, A::Grant, A::Archive]);
        assert_eq!(allowed_actions(S::Withdrawn), [A::Request, A::Grant, A::Archive]);
        assert_eq!(allowed_actions(S::Archived), [A::Request, A::Grant]);
    }

    #[test]
    fn only_granted_is_active() {
        let active: Vec<_> = ConsentState::ALL.iter().filter(|s| s.is_active()).collect();
        assert_eq!(active, [&S::Granted]);
    }

    #[test]
    fn commands_carry_an_expiry_only_on_grant_and_parse_from_json() {
        let at = time::macros::datetime!(2027-01-01 00:00 UTC);
        let grant: ConsentCommand =
            serde_json::from_str(r#"{"action":"grant","expires_at":"2027-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(grant, ConsentCommand::Grant { expires_at: Some(at) });
        assert_eq!(grant.action(), A::Grant);
        assert_eq!(grant.expires_at(), Some(at));
        let open: ConsentCommand = serde_json::from_str(r#"{"action":"grant"}"#).unwrap();
        assert_eq!(open.expires_at(), None);
        let withdraw: ConsentCommand = serde_json::from_str(r#"{"action":"withdraw"}"#).unwrap();
        assert_eq!(withdraw.action(), A::Withdraw);
        assert!(serde_json::from_str::<ConsentCommand>(r#"{"action":"expire"}"#).is_err());
        let misplaced = r#"{"action":"withdraw","expires_at":"2027-01-01T00:00:00Z"}"#;
        assert!(serde_json::from_str::<ConsentCommand>(misplaced).is_err());
        assert!(serde_json::from_str::<ConsentCommand>(r#"{"action":"grant","expiry":null}"#).is_err());
        for command in [ConsentCommand::Request, ConsentCommand::Withdraw, ConsentCommand::Archive, grant, open] {
            let json = serde_json::to_string(&command).unwrap();
            assert_eq!(serde_json::from_str::<ConsentCommand>(&json).unwrap(), command, "{json}");
        }
        assert_eq!(serde_json::to_string(&withdraw).unwrap(), r#"{"action":"withdraw"}"#);
    }
}
