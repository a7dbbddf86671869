//! The current consent of one patient for one purpose ([`ConsentRecord`]), the append-only
//! history it is folded from ([`ConsentEvent`]), and the rule every sender asks ([`may_contact`]).
//!
//! # How the adapter uses this
//!
//! 1. Load the record (or [`ConsentRecord::replay`] the history; both give the same record).
//! 2. [`ConsentRecord::apply`] the command with its evidence at `clock.now()`. On error nothing
//!    changed; on success it returns the [`ConsentEvent`] and the record has moved on.
//! 3. In one transaction, INSERT the event into the history table with a unique
//!    `(tenant, patient, purpose, seq)` and UPSERT the current-state row. Two concurrent changes
//!    of the same consent both compute the same `seq`; the unique key makes the second one fail
//!    instead of silently overwriting the first (optimistic concurrency: reload and retry).
//!
//! The history table is never updated or deleted from; [`ConsentEvent`] has no setters either.
//!
//! # Time
//!
//! Every stored time is normalised to UTC and truncated to whole microseconds (what Postgres
//! `timestamptz` keeps), so a record rebuilt from stored rows equals the one computed before the
//! insert. A grant with `expires_at` is *effectively* `expired` from that instant on (exactly at
//! `expires_at` counts as expired), with no job writing anything: ask
//! [`ConsentRecord::effective_state`]. In SQL the same rule is
//! `state = 'granted' AND (expires_at IS NULL OR expires_at > now())`.

use crate::error::ConsentError;
use crate::evidence::{ConsentText, Evidence};
use crate::machine::{ConsentAction, ConsentCommand, ConsentState, allowed_actions, next_state};
use crate::purpose::{Channel, Purpose};
use kernel::PatientId;
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, UtcOffset};

/// One change of one patient's consent for one purpose, as appended to the history.
///
/// Built only by [`ConsentRecord::apply`] / [`ConsentRecord::decide`], or rebuilt from a stored
/// row through [`ConsentEventParts`] (which checks the row is a transition the state machine
/// allows). Read-only: there is no way to edit an event once made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ConsentEventParts", into = "ConsentEventParts")]
pub struct ConsentEvent {
    patient: PatientId,
    purpose: Purpose,
    seq: u64,
    action: ConsentAction,
    from: ConsentState,
    to: ConsentState,
    occurred_at: OffsetDateTime,
    expires_at: Option<OffsetDateTime>,
    evidence: Evidence,
}

/// The fields of a [`ConsentEvent`], public, for the adapter to write and read rows with.
/// `ConsentEvent::try_from(parts)` validates them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEventParts {
    pub patient: PatientId,
    pub purpose: Purpose,
    /// 1-based position in this patient's history for this purpose.
    pub seq: u64,
    pub action: ConsentAction,
    /// The *effective* state the action was applied to (so `expired` can appear here).
    pub from: ConsentState,
    /// The state the action led to (never `expired` or `none`).
    pub to: ConsentState,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// Only on a grant: when it lapses.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub evidence: Evidence,
}

impl ConsentEvent {
    pub fn patient(&self) -> PatientId {
        self.patient
    }
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }
    /// 1-based position in this patient's history for this purpose.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    pub fn action(&self) -> ConsentAction {
        self.action
    }
    /// The effective state the action was applied to (`expired` possible).
    pub fn from_state(&self) -> ConsentState {
        self.from
    }
    /// The state the action led to.
    pub fn to_state(&self) -> ConsentState {
        self.to
    }
    /// When the change was recorded (UTC, microseconds).
    pub fn occurred_at(&self) -> OffsetDateTime {
        self.occurred_at
    }
    /// For a grant, when it lapses; `None` otherwise.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        self.expires_at
    }
    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }

    /// The fields, for writing the row.
    pub fn to_parts(&self) -> ConsentEventParts {
        self.clone().into()
    }
}

impl TryFrom<ConsentEventParts> for ConsentEvent {
    type Error = ConsentError;

    /// Checks what one event says about itself; whether it fits *after* the events before it is
    /// checked by [`ConsentRecord::apply_event`].
    fn try_from(parts: ConsentEventParts) -> Result<Self, Self::Error> {
        let seq = parts.seq;
        let broken = |reason| ConsentError::InconsistentHistory { seq, reason };
        if seq == 0 {
            return Err(broken("sequence numbers start at 1"));
        }
        if next_state(parts.from, parts.action) != Some(parts.to) {
            return Err(broken("the stored transition is not one the state machine allows"));
        }
        let occurred_at = normalize(parts.occurred_at, "occurred_at")?;
        let expires_at = parts.expires_at.map(|t| normalize(t, "expires_at")).transpose()?;
        match expires_at {
            Some(_) if parts.action != ConsentAction::Grant => {
                return Err(broken("only a grant carries an expiry"));
            }
            Some(expires_at) if expires_at <= occurred_at => {
                return Err(broken("the grant's expiry is not after the grant"));
            }
            _ => {}
        }
        Ok(Self {
            patient: parts.patient,
            purpose: parts.purpose,
            seq,
            action: parts.action,
            from: parts.from,
            to: parts.to,
            occurred_at,
            expires_at,
            evidence: parts.evidence,
        })
    }
}

impl From<ConsentEvent> for ConsentEventParts {
    fn from(event: ConsentEvent) -> Self {
        Self {
            patient: event.patient,
            purpose: event.purpose,
            seq: event.seq,
            action: event.action,
            from: event.from,
            to: event.to,
            occurred_at: event.occurred_at,
            expires_at: event.expires_at,
            evidence: event.evidence,
        }
    }
}

/// Where one patient's consent for one purpose stands: the fold of its history.
///
/// A record that nothing was recorded for is a real value ([`ConsentRecord::new`], state `none`,
/// version 0), so "never asked" needs no special case anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ConsentRecordParts", into = "ConsentRecordParts")]
pub struct ConsentRecord {
    patient: PatientId,
    purpose: Purpose,
    version: u64,
    state: ConsentState,
    changed_at: Option<OffsetDateTime>,
    expires_at: Option<OffsetDateTime>,
    text: Option<ConsentText>,
    channel: Option<Channel>,
}

/// The fields of a [`ConsentRecord`], public, for the adapter's current-state row.
/// `ConsentRecord::try_from(parts)` checks they are consistent with each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecordParts {
    pub patient: PatientId,
    pub purpose: Purpose,
    /// The `seq` of the last event folded in; 0 when nothing was recorded.
    pub version: u64,
    /// The stored state (never `expired`; see [`ConsentRecord::effective_state`]).
    pub state: ConsentState,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub changed_at: Option<OffsetDateTime>,
    /// Set only while `state` is `granted` and the grant has an expiry.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// The consent text of the last change.
    pub text: Option<ConsentText>,
    /// The channel of the last change.
    pub channel: Option<Channel>,
}

impl ConsentRecord {
    /// Nothing recorded yet for this patient and purpose.
    pub fn new(patient: PatientId, purpose: Purpose) -> Self {
        Self {
            patient,
            purpose,
            version: 0,
            state: ConsentState::None,
            changed_at: None,
            expires_at: None,
            text: None,
            channel: None,
        }
    }

    /// The record the history folds into: [`ConsentRecord::new`], then every event in `seq`
    /// order through [`ConsentRecord::apply_event`]. Equal to the record the same changes
    /// produced when they were applied one by one. Fails on the first event that does not fit
    /// (wrong patient or purpose, a gap in `seq`, time going backwards, an action that was not
    /// legal at its time): stored history that does not replay is corrupt, not something to skip.
    pub fn replay<'a>(
        patient: PatientId,
        purpose: Purpose,
        events: impl IntoIterator<Item = &'a ConsentEvent>,
    ) -> Result<Self, ConsentError> {
        let mut record = Self::new(patient, purpose);
        for event in events {
            record.apply_event(event)?;
        }
        Ok(record)
    }

    pub fn patient(&self) -> PatientId {
        self.patient
    }
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }
    /// How many events the record has folded in (the `seq` of the last one).
    pub fn version(&self) -> u64 {
        self.version
    }
    /// The stored state, ignoring time: a lapsed grant still says `granted` here. Senders want
    /// [`ConsentRecord::effective_state`].
    pub fn recorded_state(&self) -> ConsentState {
        self.state
    }
    /// When the last change was recorded.
    pub fn changed_at(&self) -> Option<OffsetDateTime> {
        self.changed_at
    }
    /// When the grant in force started (the last grant or renewal), while the stored state is
    /// `granted` (also after it lapsed).
    pub fn granted_at(&self) -> Option<OffsetDateTime> {
        if self.state == ConsentState::Granted { self.changed_at } else { None }
    }
    /// When the grant lapses, if it has an expiry.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        self.expires_at
    }
    /// The consent text of the last change (for a withdrawal: the text being withdrawn).
    pub fn text(&self) -> Option<&ConsentText> {
        self.text.as_ref()
    }
    /// The channel of the last change.
    pub fn channel(&self) -> Option<Channel> {
        self.channel
    }

    /// The state at `now`: the stored state, except that a grant whose expiry is at or before
    /// `now` is `expired`. Exactly at `expires_at` counts as expired: an expiry is the first
    /// instant the consent no longer holds, so "valid until 1 March" stores 1 March 00:00.
    pub fn effective_state(&self, now: OffsetDateTime) -> ConsentState {
        match (self.state, self.expires_at) {
            (ConsentState::Granted, Some(expires_at)) if now >= expires_at => ConsentState::Expired,
            (state, _) => state,
        }
    }

    /// True when the consent for this purpose is in force at `now`. (This record alone: see
    /// [`may_contact`] for the rule senders use, which also checks prerequisites.)
    pub fn is_active_at(&self, now: OffsetDateTime) -> bool {
        self.effective_state(now).is_active()
    }

    /// The actions that are legal at `now`.
    pub fn allowed_actions(&self, now: OffsetDateTime) -> Vec<ConsentAction> {
        allowed_actions(self.effective_state(now))
    }

    /// The event `command` would append at `now`, without changing the record.
    ///
    /// Refuses a `now` before the last change ([`ConsentError::TimeBeforeLastChange`]), an action
    /// the table forbids from the effective state at `now` ([`ConsentError::IllegalTransition`],
    /// listing the allowed ones), and a grant whose expiry is not after `now`
    /// ([`ConsentError::ExpiryNotAfterGrant`]). Times are normalised to UTC microseconds first.
    pub fn decide(
        &self,
        command: ConsentCommand,
        evidence: Evidence,
        now: OffsetDateTime,
    ) -> Result<ConsentEvent, ConsentError> {
        let now = normalize(now, "now")?;
        if let Some(previous) = self.changed_at
            && now < previous
        {
            return Err(ConsentError::TimeBeforeLastChange { previous, at: now });
        }
        let from = self.effective_state(now);
        let action = command.action();
        let to = next_state(from, action).ok_or_else(|| ConsentError::IllegalTransition {
            from,
            action,
            allowed: allowed_actions(from),
        })?;
        let expires_at = command.expires_at().map(|t| normalize(t, "expires_at")).transpose()?;
        if let Some(expires_at) = expires_at
            && expires_at <= now
        {
            return Err(ConsentError::ExpiryNotAfterGrant { granted_at: now, expires_at });
        }
        let seq = self
            .version
            .checked_add(1)
            .ok_or(ConsentError::InconsistentRecord { reason: "the version cannot grow any further" })?;
        Ok(ConsentEvent {
            patient: self.patient,
            purpose: self.purpose,
            seq,
            action,
            from,
            to,
            occurred_at: now,
            expires_at,
            evidence,
        })
    }

    /// Applies `command` at `now`: on success the record has moved on and the returned event is
    /// what to append to the history; on error the record is unchanged.
    pub fn apply(
        &mut self,
        command: ConsentCommand,
        evidence: Evidence,
        now: OffsetDateTime,
    ) -> Result<ConsentEvent, ConsentError> {
        let event = self.decide(command, evidence, now)?;
        self.apply_event(&event)?;
        Ok(event)
    }

    /// Folds one stored event into the record, checking it is the next one: same patient and
    /// purpose, `seq` one past [`ConsentRecord::version`], not dated before the previous change,
    /// and legal from the effective state at its own time. On error the record is unchanged.
    pub fn apply_event(&mut self, event: &ConsentEvent) -> Result<(), ConsentError> {
        let broken = |reason| ConsentError::InconsistentHistory { seq: event.seq, reason };
        if event.patient != self.patient {
            return Err(broken("the event belongs to another patient"));
        }
        if event.purpose != self.purpose {
            return Err(broken("the event belongs to another purpose"));
        }
        if Some(event.seq) != self.version.checked_add(1) {
            return Err(broken("sequence numbers must follow each other without gaps"));
        }
        if self.changed_at.is_some_and(|previous| event.occurred_at < previous) {
            return Err(broken("the event is dated before the previous one"));
        }
        let from = self.effective_state(event.occurred_at);
        if event.from != from {
            return Err(broken("the stored starting state differs from the replayed one"));
        }
        if next_state(from, event.action) != Some(event.to) {
            return Err(broken("the action was not legal at its time"));
        }
        self.version = event.seq;
        self.state = event.to;
        self.changed_at = Some(event.occurred_at);
        self.expires_at = if event.to == ConsentState::Granted { event.expires_at } else { None };
        self.text = Some(event.evidence.text.clone());
        self.channel = Some(event.evidence.channel);
        Ok(())
    }

    /// The fields, for writing the current-state row.
    pub fn to_parts(&self) -> ConsentRecordParts {
        self.clone().into()
    }
}

impl TryFrom<ConsentRecordParts> for ConsentRecord {
    type Error = ConsentError;

    fn try_from(parts: ConsentRecordParts) -> Result<Self, Self::Error> {
        let broken = |reason| ConsentError::InconsistentRecord { reason };
        if !parts.state.is_stored() {
            return Err(broken("`expired` is computed from the time, never stored"));
        }
        let nothing_recorded = parts.state == ConsentState::None;
        if nothing_recorded != (parts.version == 0)
            || nothing_recorded != parts.changed_at.is_none()
            || nothing_recorded != parts.text.is_none()
            || nothing_recorded != parts.channel.is_none()
        {
            return Err(broken("state `none` goes with version 0 and no change, and only with those"));
        }
        let changed_at = parts.changed_at.map(|t| normalize(t, "changed_at")).transpose()?;
        let expires_at = parts.expires_at.map(|t| normalize(t, "expires_at")).transpose()?;
        if let Some(expires_at) = expires_at {
            if parts.state != ConsentState::Granted {
                return Err(broken("only a granted consent has an expiry"));
            }
            if changed_at.is_some_and(|granted_at| expires_at <= granted_at) {
                return Err(broken("the expiry is not after the grant"));
            }
        }
        Ok(Self {
            patient: parts.patient,
            purpose: parts.purpose,
            version: parts.version,
            state: parts.state,
            changed_at,
            expires_at,
            text: parts.text,
            channel: parts.channel,
        })
    }
}

impl From<ConsentRecord> for ConsentRecordParts {
    fn from(record: ConsentRecord) -> Self {
        Self {
            patient: record.patient,
            purpose: record.purpose,
            version: record.version,
            state: record.state,
            changed_at: record.changed_at,
            expires_at: record.expires_at,
            text: record.text,
            channel: record.channel,
        }
    }
}

/// May a sender contact (or otherwise act on) the patient for `purpose` at `now`?
///
/// `records` are one patient's records (any subset, any order). True only if
/// * the effective state of `purpose` at `now` is `granted`, and
/// * so is that of each of its [`Purpose::prerequisites`] (marketing also needs
///   `data_processing`; see there why).
///
/// Fails closed: no record for the purpose (never asked), or records of more than one patient
/// (a caller bug that must not turn into a message to the wrong person), or two records for the
/// same purpose that disagree, all answer `false`.
pub fn may_contact(records: &[ConsentRecord], purpose: Purpose, now: OffsetDateTime) -> bool {
    let Some(first) = records.first() else {
        return false;
    };
    if records.iter().any(|record| record.patient != first.patient) {
        return false;
    }
    let granted = |wanted: Purpose| {
        let mut matching = records.iter().filter(|record| record.purpose == wanted).peekable();
        matching.peek().is_some() && matching.all(|record| record.is_active_at(now))
    };
    granted(purpose) && purpose.prerequisites().iter().all(|&prerequisite| granted(prerequisite))
}

/// `t` in UTC with its sub-microsecond part dropped: what `timestamptz` stores.
fn normalize(t: OffsetDateTime, field: &'static str) -> Result<OffsetDateTime, ConsentError> {
    let out_of_range = || ConsentError::TimestampOutOfRange { field };
    let utc = t.checked_to_offset(UtcOffset::UTC).ok_or_else(out_of_range)?;
    utc.replace_nanosecond(utc.nanosecond() / 1_000 * 1_000).map_err(|_| out_of_range())
}
