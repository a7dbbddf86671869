//! Group commit for webhook deliveries.
//!
//! Each verified delivery joins a queue, and up to [`GroupCommit::runners`] runners take
//! everything waiting (at most [`GroupCommit::max_batch`] deliveries) and process it in one
//! transaction per practice (`handlers::process_batch`): one inbox insert, one audit insert, one
//! commit for many deliveries. A delivery's call waits for that commit before it returns, so an
//! acknowledged event is durably processed.
//!
//! The queue and its runners are [`crate::group_commit`]'s: nothing waits for a batch to fill,
//! batches grow only under load, and with `max_batch = 1` every delivery has a transaction of
//! its own (at most `runners` at once).
//!
//! A shared transaction that fails is rolled back whole; its deliveries are then processed one
//! transaction each, so one delivery's failing handler (or a lost race with another batch) fails
//! that delivery alone.
//!
//! A runner is a task of its own: a client that hangs up (its call dropped) does not cancel a
//! transaction other deliveries share (its event is still processed; the provider's retry finds
//! it recorded).

use super::handlers::{BatchError, Delivery, process_batch};
use super::{Outcome, WebhookIngest};
use crate::group_commit::{GroupCommitQueue, Waiting, answer_all};
use crate::{Error, Result, Services};
use kernel::TenantId;
use std::sync::Arc;

pub use crate::group_commit::GroupCommit;

/// What a failed delivery's caller is told to do when its failure was another's.
const RETRY: &str = "The webhook could not be processed now; retry the delivery.";

/// The queue of deliveries waiting for a shared transaction.
#[derive(Debug)]
pub struct IngestBatcher {
    queue: Arc<GroupCommitQueue<Delivery, Outcome>>,
}

impl IngestBatcher {
    pub fn new(settings: GroupCommit) -> Self {
        Self { queue: Arc::new(GroupCommitQueue::new(settings)) }
    }

    /// Processes `delivery` in the next shared transaction of its practice and returns its
    /// outcome once that transaction has committed (or its error). `services` is the one whose
    /// batcher this is.
    pub(super) async fn process(
        &self,
        services: &Services,
        ingest: &WebhookIngest,
        delivery: Delivery,
    ) -> Result<Outcome> {
        let runner = || {
            let (services, ingest) = (services.clone(), ingest.clone());
            move |batch: Vec<Waiting<Delivery, Outcome>>| {
                let (services, ingest) = (services.clone(), ingest.clone());
                async move {
                    for (tenant, group) in by_tenant(batch) {
                        process_group(&services, &ingest, tenant, group).await;
                    }
                }
            }
        };
        self.queue
            .submit(delivery, runner, "The server stopped before the webhook was processed; retry the delivery.")
            .await
    }

    #[cfg(test)]
    fn runners(&self) -> usize {
        self.queue.runners()
    }
}

/// The batch split by practice (one transaction each), in order of arrival.
fn by_tenant(batch: Vec<Waiting<Delivery, Outcome>>) -> Vec<(TenantId, Vec<Waiting<Delivery, Outcome>>)> {
    let mut groups: Vec<(TenantId, Vec<Waiting<Delivery, Outcome>>)> = Vec::new();
    for waiting in batch {
        let tenant = waiting.item.caller.tenant;
        match groups.iter_mut().find(|(t, _)| *t == tenant) {
            Some((_, group)) => group.push(waiting),
            None => groups.push((tenant, vec![waiting])),
        }
    }
    groups
}

async fn process_group(
    services: &Services,
    ingest: &WebhookIngest,
    tenant: TenantId,
    group: Vec<Waiting<Delivery, Outcome>>,
) {
    let (deliveries, replies): (Vec<Delivery>, Vec<_>) = group.into_iter().map(|w| (w.item, w.reply)).unzip();
    match process_batch(services, ingest, tenant, &deliveries).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A call that is gone (the client hung up) has nobody to answer.
                let _ = reply.send(Ok(outcome));
            }
        }
        // Nothing of any delivery ran (no database connection): trying each alone would only
        // wait out the same failure once per delivery.
        Err(BatchError::NotStarted(error)) => answer_all(replies, error, RETRY),
        Err(BatchError::Failed(error)) if deliveries.len() == 1 => answer_all(replies, error, RETRY),
        Err(BatchError::Failed(error)) => {
            tracing::warn!(
                deliveries = deliveries.len(),
                error = %error,
                "a shared webhook transaction failed; processing its deliveries one by one"
            );
            let mut pending = deliveries.iter().zip(replies);
            while let Some((delivery, reply)) = pending.next() {
                match process_batch(services, ingest, tenant, std::slice::from_ref(delivery)).await {
                    Ok(mut outcomes) => {
                        let outcome = outcomes
                            .pop()
                            .ok_or_else(|| Error::internal(anyhow::anyhow!("a batch of one had no outcome")));
                        let _ = reply.send(outcome);
                    }
                    Err(BatchError::Failed(error)) => {
                        let _ = reply.send(Err(error));
                    }
                    Err(BatchError::NotStarted(error)) => {
                        // The database went away meanwhile: the rest would fail the same way.
                        answer_all(std::iter::once(reply).chain(pending.map(|(_, reply)| reply)), error, RETRY);
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::Caller;
    use crate::webhook_ingest::{Endpoints, PaymentEvents, ProviderBudgets};
    use cache_redis::{
        FallbackLimiter, IdempotencyClaims, IpBlockList, Limit, RateLimiter, RedisStore, ResilientLimiter,
    };
    use kernel::{Actor, Clock, SystemClock};
    use sqlx::PgPool;
    use std::sync::Arc;
    use std::time::Duration;
    use store_postgres::{DbContext, PgAuditLog, begin};
    use tokio::sync::oneshot;
    use webhooks::{StandardEvent, WebhookEvent};

    /// The use cases on `db`, with a Redis of their own for the ingest's claims and budgets.
    fn services(db: PgPool) -> (Services, WebhookIngest) {
        let redis = testkit::TestRedis::new();
        let store = RedisStore::new(&redis.url, &redis.prefix, Duration::from_secs(2)).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let limit = Limit::new(10_000, Duration::from_secs(60));
        let ingest = WebhookIngest {
            endpoints: Arc::new(Endpoints::new(None)),
            budgets: ProviderBudgets { stripe: limit, whatsapp: limit, twilio: limit, vapi: limit, standard: limit },
            rejection_audits_per_ip: limit,
            payment_events: PaymentEvents::LiveOnly,
            limiter: Arc::new(ResilientLimiter::new(
                RateLimiter::new(store.clone()),
                FallbackLimiter::new(clock.clone(), FallbackLimiter::DEFAULT_MAX_SUBJECTS),
            )),
            blocklist: IpBlockList::new(store.clone()),
            claims: IdempotencyClaims::new(store),
            group_commit: GroupCommit::default(),
        };
        let services = crate::test_services::on(db, Some(ingest.clone()));
        (services, ingest)
    }

    async fn services_with_practice() -> (testkit::TestDb, Services, WebhookIngest, TenantId) {
        let db = testkit::TestDb::new().await;
        let (services, ingest) = services(db.app_pool.clone());
        let tenant = crate::test_services::practice(&db.app_pool, "Batch").await;
        (db, services, ingest, tenant)
    }

    /// A Standard Webhooks delivery built past the parser, so a test can hand the database a key
    /// the parser would never let through.
    fn delivery(tenant: TenantId, webhook_id: &str) -> Delivery {
        let event = StandardEvent {
            webhook_id: webhook_id.to_owned(),
            timestamp: SystemClock.now(),
            event_type: Some("invoice.paid".to_owned()),
            payload: serde_json::json!({}),
        };
        Delivery {
            caller: Caller::system(tenant, Actor::Webhook { provider: "standard".to_owned() }),
            event: WebhookEvent::Standard(event),
            held: vec![webhook_id.to_owned()],
            body_sha256: [7; 32],
            index_key: None,
        }
    }

    /// Runs `deliveries` as one group, as a runner would, and returns their answers in order.
    async fn run_as_one_group(
        services: &Services,
        ingest: &WebhookIngest,
        tenant: TenantId,
        deliveries: Vec<Delivery>,
    ) -> Vec<Result<Outcome>> {
        let mut answers = Vec::new();
        let mut group = Vec::new();
        for delivery in deliveries {
            let (reply, answer) = oneshot::channel();
            group.push(Waiting { item: delivery, reply });
            answers.push(answer);
        }
        process_group(services, ingest, tenant, group).await;
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.expect("every delivery is answered"));
        }
        results
    }

    async fn count(db: &testkit::TestDb, tenant: TenantId, sql: &str) -> i64 {
        let mut tx = begin(&db.app_pool, &DbContext::service(tenant)).await.unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .unwrap()
    }

    async fn chain_is_intact(db: &testkit::TestDb, tenant: TenantId) -> bool {
        PgAuditLog::new(db.app_pool.clone()).verify_chain(tenant).await.unwrap().is_intact()
    }

    #[tokio::test]
    async fn deliveries_sharing_a_transaction_are_each_processed_once_and_audited_once() {
        let (db, services, ingest, tenant) = services_with_practice().await;
        let results = run_as_one_group(
            &services,
            &ingest,
            tenant,
            vec![
                delivery(tenant, "msg_1"),
                delivery(tenant, "msg_2"),
                delivery(tenant, "msg_1"),
                delivery(tenant, "msg_3"),
            ],
        )
        .await;
        let outcomes: Vec<Outcome> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Processed { events: 1 },
                Outcome::Processed { events: 1 },
                Outcome::Duplicate, // the second copy of msg_1 in the same batch
                Outcome::Processed { events: 1 },
            ]
        );
        assert_eq!(count(&db, tenant, "SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1").await, 3);
        let received = "SELECT count(*) FROM audit_entries WHERE tenant_id = $1 AND action = 'webhook.received'";
        assert_eq!(count(&db, tenant, received).await, 3);
        // The entries appended together chain like any others.
        assert!(chain_is_intact(&db, tenant).await);

        // A later batch finds them recorded.
        let again = vec![delivery(tenant, "msg_2"), delivery(tenant, "msg_4")];
        let again: Vec<Outcome> =
            run_as_one_group(&services, &ingest, tenant, again).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(again, [Outcome::Duplicate, Outcome::Processed { events: 1 }]);
        assert!(chain_is_intact(&db, tenant).await);
    }

    #[tokio::test]
    async fn entries_written_in_a_shared_transaction_carry_their_own_request_id() {
        let (db, services, ingest, tenant) = services_with_practice().await;
        let ids = [kernel::RequestId::generate(), kernel::RequestId::generate()];
        let deliveries = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let mut delivery = delivery(tenant, &format!("evt_{i}"));
                delivery.caller = delivery.caller.with_request_id(Some(id.clone()));
                delivery
            })
            .collect();
        for result in run_as_one_group(&services, &ingest, tenant, deliveries).await {
            assert_eq!(result.unwrap(), Outcome::Processed { events: 1 });
        }
        for (i, id) in ids.iter().enumerate() {
            let sql = format!(
                "SELECT count(*) FROM audit_entries WHERE tenant_id = $1 AND action = 'webhook.received' \
                  AND resource_id = 'evt_{i}' AND request_id = '{id}'"
            );
            assert_eq!(count(&db, tenant, &sql).await, 1, "evt_{i} carries its own request's id");
        }
    }

    #[tokio::test]
    async fn a_delivery_that_fails_in_a_shared_transaction_fails_alone() {
        let (db, services, ingest, tenant) = services_with_practice().await;
        // An event key longer than the inbox accepts (the parser caps ids far below): its insert
        // fails, and with it the shared transaction.
        let too_long = "k".repeat(700);
        let results = run_as_one_group(
            &services,
            &ingest,
            tenant,
            vec![delivery(tenant, "msg_a"), delivery(tenant, &too_long), delivery(tenant, "msg_b")],
        )
        .await;
        assert_eq!(results[0].as_ref().unwrap(), &Outcome::Processed { events: 1 });
        assert!(results[1].is_err(), "the failing delivery is refused");
        assert_eq!(results[2].as_ref().unwrap(), &Outcome::Processed { events: 1 });
        // Nothing of the failed one was written; the others were written once.
        assert_eq!(count(&db, tenant, "SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1").await, 2);
        let received = "SELECT count(*) FROM audit_entries WHERE tenant_id = $1 AND action = 'webhook.received'";
        assert_eq!(count(&db, tenant, received).await, 2);
        assert!(chain_is_intact(&db, tenant).await);
    }

    #[tokio::test]
    async fn without_a_database_every_delivery_of_a_batch_is_unavailable_at_once() {
        // Port 1 on loopback: nothing listens there.
        let options = store_postgres::PoolOptions {
            acquire_timeout: Duration::from_millis(300),
            ..store_postgres::PoolOptions::default()
        };
        let pool = store_postgres::connect_lazy("postgres://praxis@127.0.0.1:1/praxis", &options).unwrap();
        let (services, ingest) = services(pool);
        let tenant = TenantId::new();
        let deliveries = (0..5).map(|i| delivery(tenant, &format!("evt_{i}"))).collect();
        // One failed start answers all five (they are not tried one by one, each waiting out the
        // same unavailable database).
        for result in run_as_one_group(&services, &ingest, tenant, deliveries).await {
            assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
        }
    }

    #[tokio::test]
    async fn deliveries_queued_at_once_are_all_answered() {
        let (db, services, ingest, tenant) = services_with_practice().await;
        // More than a batch holds and more than the runners take at once.
        let max_batch = GroupCommit::default().max_batch;
        let calls =
            (0..3 * max_batch).map(|i| {
                let (services, ingest) = (services.clone(), ingest.clone());
                async move {
                    services.webhook_batcher.process(&services, &ingest, delivery(tenant, &format!("evt_{i}"))).await
                }
            });
        let outcomes = futures_util::future::join_all(calls).await;
        assert!(outcomes.iter().all(|o| matches!(o, Ok(Outcome::Processed { events: 1 }))));
        assert_eq!(
            count(&db, tenant, "SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1").await,
            i64::try_from(3 * max_batch).unwrap()
        );
        assert_eq!(services.webhook_batcher.runners(), 0, "every runner is counted out once the queue is empty");
        assert!(chain_is_intact(&db, tenant).await);
    }
}
