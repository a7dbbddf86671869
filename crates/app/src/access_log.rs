//! The record of reads: audit entries of work that changed nothing (`patient.read`), written by
//! group commit.
//!
//! A change is recorded in its own transaction, with its audit entry. A read changes nothing,
//! so there is nothing its entry must commit with; what matters is that no read reaches the
//! caller before its entry is durable. So a read's use case reads in a transaction of its own
//! that writes nothing (a listing: one that Postgres keeps from writing,
//! `store_postgres::begin_read_only`, ended without waiting for a COMMIT; one patient: one
//! statement that is its own transaction, `store_postgres::patients::get_in_one_statement`),
//! then hands its entries (with the `key.unwrap` of a patient key it had to unwrap) to
//! [`Services::record_reads`] and returns the data only once they have committed. Reads that
//! arrive together share that commit ([`crate::group_commit`]: one runner, and a spare one only
//! for reads its commit kept waiting): one statement, its own transaction, records the entries
//! of many reads, of many practices, each practice's under its own RLS context
//! (`store_postgres::audit::record_unsealed`), and commits them all before it returns.
//! When it fails, every read in it fails (503 when the database is down) and no data is
//! returned: a read is never answered without its entry.
//!
//! Measured in docs/architecture.md ("Reads are recorded by group commit").

use crate::group_commit::{GroupCommit, GroupCommitQueue, Waiting, answer_all};
use crate::{Error, Result, Services};
use audit::AuditEvent;
use sqlx::PgPool;
use std::sync::Arc;

/// What a read's caller is told when its entry could not be recorded because another's failed.
const RETRY: &str = "The read could not be recorded in the audit trail now; try again.";

/// The queue of reads whose entries wait for a shared commit.
#[derive(Debug)]
pub(crate) struct ReadRecorder {
    queue: Arc<GroupCommitQueue<Vec<AuditEvent>, ()>>,
}

impl ReadRecorder {
    pub fn new(settings: GroupCommit) -> Self {
        Self { queue: Arc::new(GroupCommitQueue::new(settings)) }
    }
}

impl Services {
    /// Records the audit entries of a read durably, sharing the commit with the reads that
    /// arrive together, and returns once they are committed. The caller returns what it read
    /// only after this succeeded. Every event is checked before anything is queued.
    pub(crate) async fn record_reads(&self, events: Vec<AuditEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        for event in &events {
            event.validate().map_err(|e| Error::internal(anyhow::anyhow!("an invalid read audit event: {e}")))?;
        }
        let db = self.db.clone();
        let runner = move || {
            let db = db.clone();
            move |batch: Vec<Waiting<Vec<AuditEvent>, ()>>| record_batch(db.clone(), batch)
        };
        self.read_recorder
            .queue
            .submit(events, runner, "The server stopped before the read was recorded; try again.")
            .await
    }
}

/// Records every read of `batch` in one transaction and answers each. When that fails for a
/// reason other than the database being unavailable, each read is tried in a transaction of
/// its own, so one bad entry fails its read alone.
async fn record_batch(db: PgPool, batch: Vec<Waiting<Vec<AuditEvent>, ()>>) {
    let (reads, replies): (Vec<Vec<AuditEvent>>, Vec<_>) = batch.into_iter().map(|w| (w.item, w.reply)).unzip();
    match record(&db, &reads).await {
        Ok(()) => {
            for reply in replies {
                // A caller that is gone (the client hung up) has nobody to answer.
                let _ = reply.send(Ok(()));
            }
        }
        Err(error) if reads.len() == 1 || matches!(error, Error::Unavailable(_)) => answer_all(replies, error, RETRY),
        Err(error) => {
            tracing::warn!(reads = reads.len(), error = %error, "a shared read-audit transaction failed; recording its reads one by one");
            for (read, reply) in reads.iter().zip(replies) {
                let _ = reply.send(record(&db, std::slice::from_ref(read)).await);
            }
        }
    }
}

/// One statement, its own transaction, committed when it returns: each practice's entries in
/// order of arrival, under that practice's own RLS context
/// (`store_postgres::audit::record_unsealed`).
async fn record(db: &PgPool, reads: &[Vec<AuditEvent>]) -> Result<()> {
    let events: Vec<AuditEvent> = reads.iter().flatten().cloned().collect();
    store_postgres::audit::record_unsealed(db, events).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::Caller;
    use audit::Action;
    use kernel::{Role, SystemClock, TenantId, UserId};
    use store_postgres::{DbContext, begin};

    fn read_event(tenant: TenantId, resource: &str) -> AuditEvent {
        let caller = Caller::account(tenant, UserId::new(), Role::Admin);
        caller.audit_event(Action::PatientRead, "patient", &SystemClock).with_resource_id(resource.to_owned())
    }

    async fn reads_recorded(db: &testkit::TestDb, tenant: TenantId) -> Vec<String> {
        let mut tx = begin(&db.app_pool, &DbContext::tenant(tenant)).await.unwrap();
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT resource_id FROM audit_entries WHERE tenant_id = $1 AND action = 'patient.read' ORDER BY id",
        )
        .bind(tenant.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        ids
    }

    /// The transactions that wrote `tenant`'s entries.
    async fn writing_transactions(db: &testkit::TestDb, tenant: TenantId) -> std::collections::BTreeSet<i64> {
        let mut tx = begin(&db.app_pool, &DbContext::tenant(tenant)).await.unwrap();
        let xids: Vec<i64> = sqlx::query_scalar("SELECT xmin::text::bigint FROM audit_entries WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        xids.into_iter().collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_of_many_practices_arriving_together_are_each_recorded_once_in_their_practice() {
        let db = testkit::TestDb::new().await;
        let services = crate::test_services::on(db.app_pool.clone(), None)
            .with_read_group_commit(GroupCommit { runners: 1, ..GroupCommit::READS });
        let practices = [
            crate::test_services::practice(&db.app_pool, "A").await,
            crate::test_services::practice(&db.app_pool, "B").await,
            crate::test_services::practice(&db.app_pool, "C").await,
        ];
        let calls = (0..90).map(|i| {
            let services = services.clone();
            let tenant = practices[i % 3];
            async move { services.record_reads(vec![read_event(tenant, &format!("read-{i}"))]).await }
        });
        for result in futures_util::future::join_all(calls).await {
            result.unwrap();
        }
        for (p, tenant) in practices.into_iter().enumerate() {
            let recorded = reads_recorded(&db, tenant).await;
            let mut expected: Vec<String> = (0..90).filter(|i| i % 3 == p).map(|i| format!("read-{i}")).collect();
            let mut got = recorded;
            got.sort();
            expected.sort();
            assert_eq!(got, expected, "practice {p} has exactly its own reads, each once");
        }
        // They shared commits: one transaction wrote entries of every practice.
        let [a, b, c] = [
            writing_transactions(&db, practices[0]).await,
            writing_transactions(&db, practices[1]).await,
            writing_transactions(&db, practices[2]).await,
        ];
        assert!(a.iter().any(|xid| b.contains(xid) && c.contains(xid)), "{a:?} {b:?} {c:?}");
        assert!(a.len() < 30, "30 reads of a practice were recorded in fewer transactions: {a:?}");
    }

    #[tokio::test]
    async fn a_read_of_an_unknown_practice_fails_alone() {
        let db = testkit::TestDb::new().await;
        let known = crate::test_services::practice(&db.app_pool, "Known").await;
        let unknown = TenantId::new();
        // Both in one batch, as a runner would take them.
        let (ok_reply, ok_answer) = tokio::sync::oneshot::channel();
        let (bad_reply, bad_answer) = tokio::sync::oneshot::channel();
        record_batch(
            db.app_pool.clone(),
            vec![
                Waiting { item: vec![read_event(known, "fine")], reply: ok_reply },
                Waiting { item: vec![read_event(unknown, "orphan")], reply: bad_reply },
            ],
        )
        .await;
        assert!(ok_answer.await.unwrap().is_ok());
        assert!(bad_answer.await.unwrap().is_err());
        assert_eq!(reads_recorded(&db, known).await, ["fine"]);
    }

    #[tokio::test]
    async fn without_a_database_a_read_is_unavailable_and_nothing_is_answered_early() {
        // Port 1 on loopback: nothing listens there.
        let options = store_postgres::PoolOptions {
            acquire_timeout: std::time::Duration::from_millis(300),
            ..store_postgres::PoolOptions::default()
        };
        let pool = store_postgres::connect_lazy("postgres://praxis@127.0.0.1:1/praxis", &options).unwrap();
        let services = crate::test_services::on(pool, None);
        let result = services.record_reads(vec![read_event(TenantId::new(), "x")]).await;
        assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
    }
}
