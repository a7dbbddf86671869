//! Payment state, changed only by verified Stripe events.

use serde::{Deserialize, Serialize};

/// Whether the practice has the patient's money for an appointment.
///
/// The declaration order is the rank used by [`PaymentState::apply`]: the derived `Ord` is the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PaymentState {
    /// Nothing received yet (also the state while an asynchronous payment is pending).
    Unpaid,
    /// The last attempt failed; the patient may try again.
    Failed,
    /// The money arrived.
    Paid,
    /// The payment was refunded in full. Final for this payment.
    Refunded,
}

string_enum!(PaymentState, "payment_state", {
    Unpaid => "unpaid",
    Failed => "failed",
    Paid => "paid",
    Refunded => "refunded",
});

/// A verified Stripe event about an appointment's payment, already mapped by the webhook adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PaymentEvent {
    /// `checkout.session.completed`. `paid` is whether the session's `payment_status` was `paid`:
    /// card payments are, but asynchronous methods (SEPA Direct Debit, common in Germany) complete
    /// the checkout with the money still pending and report the result later as
    /// [`PaymentEvent::PaymentSucceeded`] or [`PaymentEvent::PaymentFailed`]. Treating every
    /// completed checkout as paid would make that later failure look stale and lose it.
    CheckoutCompleted { paid: bool },
    /// `payment_intent.succeeded` or `checkout.session.async_payment_succeeded`.
    PaymentSucceeded,
    /// `payment_intent.payment_failed` or `checkout.session.async_payment_failed`.
    PaymentFailed,
    /// `charge.refunded` for a full refund. Partial refunds are not a payment state here.
    Refunded,
}

impl PaymentEvent {
    /// The stable snake_case name of the event (for logs and the audit trail).
    pub const fn as_str(self) -> &'static str {
        match self {
            PaymentEvent::CheckoutCompleted { .. } => "checkout_completed",
            PaymentEvent::PaymentSucceeded => "payment_succeeded",
            PaymentEvent::PaymentFailed => "payment_failed",
            PaymentEvent::Refunded => "refunded",
        }
    }

    /// The state this event is evidence of, if any. A checkout completed without payment says
    /// nothing about the money yet.
    pub const fn implied_state(self) -> Option<PaymentState> {
        match self {
            PaymentEvent::CheckoutCompleted { paid: true } | PaymentEvent::PaymentSucceeded => Some(PaymentState::Paid),
            PaymentEvent::CheckoutCompleted { paid: false } => None,
            PaymentEvent::PaymentFailed => Some(PaymentState::Failed),
            PaymentEvent::Refunded => Some(PaymentState::Refunded),
        }
    }
}

/// What to do with the stored state after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentUpdate {
    /// Store this new state.
    Changed(PaymentState),
    /// Nothing to store: the state already says what the event says (a redelivery, or a second
    /// event with the same meaning), or the event carries no payment result.
    Unchanged,
    /// Nothing to store: a later fact already superseded this event, which arrived out of order.
    Stale,
}

impl PaymentUpdate {
    /// The state after the update, given the state before it.
    pub const fn state_after(self, before: PaymentState) -> PaymentState {
        match self {
            PaymentUpdate::Changed(state) => state,
            PaymentUpdate::Unchanged | PaymentUpdate::Stale => before,
        }
    }
}

impl PaymentState {
    /// Applies a verified event.
    ///
    /// Stripe delivers events at least once and in no guaranteed order, so the rule is built to give
    /// the same answer whatever the order and however often an event repeats. The states are ranked
    ///
    /// ```text
    ///   unpaid < failed < paid < refunded
    /// ```
    ///
    /// and an event moves the state to what it implies only when that ranks **higher** than the
    /// current state (the new state is the maximum of the two). Each rank encodes what later facts
    /// supersede:
    ///
    /// - `failed` beats `unpaid`: an attempt was made and failed.
    /// - `paid` beats `failed`: the patient retried and the money arrived. A failure that arrives after
    ///   a success is a stale report about an earlier attempt (a succeeded PaymentIntent cannot fail).
    /// - `refunded` beats everything: a refund proves an earlier payment, so a `payment_succeeded`
    ///   delivered after the refund is stale, and a refund delivered before its payment event lands
    ///   directly on `refunded`. A refunded payment is over; charging again is a new payment.
    ///
    /// Because "maximum" is commutative, associative and idempotent, any permutation of any
    /// multiset of events, with any repeats, ends in the same state (property-tested). Nothing
    /// here is an error: a verified event that changes nothing is acknowledged, not refused, because
    /// refusing it would only make Stripe deliver it again.
    pub fn apply(self, event: PaymentEvent) -> PaymentUpdate {
        let Some(implied) = event.implied_state() else {
            return PaymentUpdate::Unchanged;
        };
        match implied.cmp(&self) {
            std::cmp::Ordering::Greater => PaymentUpdate::Changed(implied),
            std::cmp::Ordering::Equal => PaymentUpdate::Unchanged,
            std::cmp::Ordering::Less => PaymentUpdate::Stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PaymentEvent::{self, CheckoutCompleted, PaymentFailed, PaymentSucceeded, Refunded};
    use super::PaymentState::{self, Failed, Paid, Unpaid};
    use super::PaymentUpdate::{Changed, Stale, Unchanged};
    use crate::SchedulingError;
    use proptest::prelude::*;

    fn run(events: &[PaymentEvent]) -> PaymentState {
        events.iter().fold(Unpaid, |state, &event| state.apply(event).state_after(state))
    }

    #[test]
    fn the_happy_paths() {
        assert_eq!(Unpaid.apply(CheckoutCompleted { paid: true }), Changed(Paid));
        assert_eq!(Unpaid.apply(PaymentSucceeded), Changed(Paid));
        assert_eq!(Paid.apply(Refunded), Changed(PaymentState::Refunded));
        assert_eq!(Unpaid.apply(PaymentFailed), Changed(Failed));
    }

    #[test]
    fn a_retry_after_a_failure_is_paid() {
        assert_eq!(Failed.apply(PaymentSucceeded), Changed(Paid));
        assert_eq!(Failed.apply(CheckoutCompleted { paid: true }), Changed(Paid));
        assert_eq!(run(&[PaymentFailed, PaymentFailed, PaymentSucceeded]), Paid);
    }

    #[test]
    fn repeats_change_nothing() {
        assert_eq!(Paid.apply(PaymentSucceeded), Unchanged);
        assert_eq!(Paid.apply(CheckoutCompleted { paid: true }), Unchanged);
        assert_eq!(Failed.apply(PaymentFailed), Unchanged);
        assert_eq!(PaymentState::Refunded.apply(Refunded), Unchanged);
    }

    #[test]
    fn a_checkout_without_payment_changes_nothing_and_the_async_result_decides() {
        for state in [Unpaid, Failed, Paid, PaymentState::Refunded] {
            assert_eq!(state.apply(CheckoutCompleted { paid: false }), Unchanged);
        }
        assert_eq!(run(&[CheckoutCompleted { paid: false }, PaymentFailed]), Failed);
        assert_eq!(run(&[CheckoutCompleted { paid: false }, PaymentSucceeded]), Paid);
    }

    #[test]
    fn late_reports_of_superseded_facts_are_stale() {
        // A failure of an earlier attempt delivered after the success.
        assert_eq!(Paid.apply(PaymentFailed), Stale);
        // The payment event delivered after its refund.
        assert_eq!(PaymentState::Refunded.apply(PaymentSucceeded), Stale);
        assert_eq!(PaymentState::Refunded.apply(CheckoutCompleted { paid: true }), Stale);
        assert_eq!(PaymentState::Refunded.apply(PaymentFailed), Stale);
    }

    #[test]
    fn a_refund_delivered_before_its_payment_still_ends_refunded() {
        assert_eq!(Unpaid.apply(Refunded), Changed(PaymentState::Refunded));
        assert_eq!(Failed.apply(Refunded), Changed(PaymentState::Refunded));
        assert_eq!(run(&[Refunded, PaymentSucceeded]), PaymentState::Refunded);
    }

    #[test]
    fn state_after_keeps_the_old_state_unless_changed() {
        assert_eq!(Changed(Paid).state_after(Unpaid), Paid);
        assert_eq!(Unchanged.state_after(Failed), Failed);
        assert_eq!(Stale.state_after(Paid), Paid);
    }

    #[test]
    fn string_forms_are_stable() {
        let forms: Vec<_> = PaymentState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(forms, ["unpaid", "failed", "paid", "refunded"]);
        for &state in PaymentState::ALL {
            assert_eq!(state.as_str().parse::<PaymentState>(), Ok(state));
            assert_eq!(serde_json::to_value(state).unwrap(), serde_json::json!(state.as_str()));
        }
        let err = "settled".parse::<PaymentState>().unwrap_err();
        assert_eq!((err.kind(), err.field()), ("unknown_value", "payment_state"));
        assert!(matches!(err, SchedulingError::UnknownValue { .. }));

        let names: Vec<_> = [CheckoutCompleted { paid: false }, PaymentSucceeded, PaymentFailed, Refunded]
            .iter()
            .map(|e| e.as_str())
            .collect();
        assert_eq!(names, ["checkout_completed", "payment_succeeded", "payment_failed", "refunded"]);
        assert_eq!(
            serde_json::to_value(CheckoutCompleted { paid: true }).unwrap(),
            serde_json::json!({"type": "checkout_completed", "paid": true})
        );
        assert_eq!(serde_json::to_value(Refunded).unwrap(), serde_json::json!({"type": "refunded"}));
    }

    fn any_event() -> impl Strategy<Value = PaymentEvent> {
        prop_oneof![
            any::<bool>().prop_map(|paid| CheckoutCompleted { paid }),
            Just(PaymentSucceeded),
            Just(PaymentFailed),
            Just(Refunded),
        ]
    }

    fn events_and_a_shuffle() -> impl Strategy<Value = (Vec<PaymentEvent>, Vec<PaymentEvent>)> {
        prop::collection::vec(any_event(), 0..12)
            .prop_flat_map(|events| (Just(events.clone()), Just(events).prop_shuffle()))
    }

    proptest! {
        /// Delivery order does not matter.
        #[test]
        fn any_delivery_order_ends_in_the_same_state((events, shuffled) in events_and_a_shuffle()) {
            prop_assert_eq!(run(&events), run(&shuffled));
        }

        /// Redelivering every event (each one right away, or the whole batch again) changes nothing.
        #[test]
        fn redelivery_is_idempotent(events in prop::collection::vec(any_event(), 0..12)) {
            let doubled: Vec<_> = events.iter().flat_map(|&e| [e, e]).collect();
            let twice: Vec<_> = events.iter().chain(events.iter()).copied().collect();
            prop_assert_eq!(run(&doubled), run(&events));
            prop_assert_eq!(run(&twice), run(&events));
        }

        /// The end state is the most advanced fact any event carried (an independent model), and
        /// every single step is consistent with its reported update.
        #[test]
        fn the_end_state_is_the_strongest_fact(events in prop::collection::vec(any_event(), 0..12)) {
            let rank = |s: PaymentState| PaymentState::ALL.iter().position(|&x| x == s).unwrap();
            let expected = events.iter().filter_map(|e| e.implied_state()).max_by_key(|&s| rank(s)).unwrap_or(Unpaid);
            let mut state = Unpaid;
            for event in &events {
                let update = state.apply(*event);
                match update {
                    Changed(next) => prop_assert!(rank(next) > rank(state)),
                    Unchanged => prop_assert!(event.implied_state().is_none_or(|s| s == state)),
                    Stale => prop_assert!(rank(event.implied_state().unwrap()) < rank(state)),
                }
                state = update.state_after(state);
            }
            prop_assert_eq!(state, expected);
        }
    }
}
