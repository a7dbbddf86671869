//! `[audit]`: the sealer that links recorded audit entries into each practice's hash chain
//! (docs/architecture.md, "The audit trail: record now, seal shortly after").

use super::Problem;
use app::group_commit::GroupCommit;
use serde::{Deserialize, Serialize};

/// `audit.*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Run the sealer in this instance. Every instance may (a practice being sealed by one is
    /// skipped by the others); at least one must, or entries stay unsealed (verification and
    /// checkpoints still seal the practice they look at).
    pub sealer_enabled: bool,
    /// Pause between sealing rounds, in milliseconds. The lag from commit to sealed is about
    /// this plus one round's work.
    pub seal_interval_ms: u64,
    /// Most practices sealed per round, the longest-waiting first.
    pub seal_max_practices: u32,
    /// How the audit entries of reads (`patient.read`) share commits: reads that arrive together
    /// are recorded in one transaction, and each is answered once that has committed
    /// (docs/architecture.md, "Reads are recorded by group commit").
    pub read_group_commit: ReadGroupCommitConfig,
}

/// `[audit.read_group_commit]`: reads that arrive together record their entries in one
/// transaction, taken by one runner; a spare runner starts for reads that waited
/// `spare_runner_after_ms` (a stalled commit), up to `runners` at once. A field left out keeps
/// its default ([`GroupCommit::READS`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadGroupCommitConfig {
    /// Most reads in one shared transaction (1 to 256; 1 gives every read its own).
    pub max_batch: usize,
    /// Most shared transactions at once, spares included, each holding a connection (1 to 64).
    pub runners: usize,
    /// How long a read waits for its commit before it starts a spare runner, in milliseconds
    /// (0 to 10000; 0 starts up to `runners` at once, without waiting).
    pub spare_runner_after_ms: u64,
}

impl Default for ReadGroupCommitConfig {
    fn default() -> Self {
        let defaults = GroupCommit::READS;
        Self {
            max_batch: defaults.max_batch,
            runners: defaults.runners,
            spare_runner_after_ms: u64::try_from(defaults.spare_runner_after.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            sealer_enabled: true,
            seal_interval_ms: 100,
            seal_max_practices: 1000,
            read_group_commit: ReadGroupCommitConfig::default(),
        }
    }
}

impl AuditConfig {
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if !(10..=60_000).contains(&self.seal_interval_ms) {
            problems.push(Problem {
                field: "audit.seal_interval_ms",
                message: "must be between 10 and 60000 (sealing lag is about this long)".into(),
            });
        }
        if !(1..=store_postgres::MAX_PRACTICES_PER_SCAN).contains(&self.seal_max_practices) {
            problems.push(Problem {
                field: "audit.seal_max_practices",
                message: format!("must be between 1 and {}", store_postgres::MAX_PRACTICES_PER_SCAN),
            });
        }
        if !(1..=GroupCommit::MAX_BATCH_LIMIT).contains(&self.read_group_commit.max_batch) {
            problems.push(Problem {
                field: "audit.read_group_commit.max_batch",
                message: format!("must be between 1 and {}", GroupCommit::MAX_BATCH_LIMIT),
            });
        }
        if !(1..=GroupCommit::RUNNERS_LIMIT).contains(&self.read_group_commit.runners) {
            problems.push(Problem {
                field: "audit.read_group_commit.runners",
                message: format!("must be between 1 and {}", GroupCommit::RUNNERS_LIMIT),
            });
        }
        if self.read_group_commit.spare_runner_after_ms > GroupCommit::SPARE_RUNNER_AFTER_MS_LIMIT {
            problems.push(Problem {
                field: "audit.read_group_commit.spare_runner_after_ms",
                message: format!("must be between 0 and {}", GroupCommit::SPARE_RUNNER_AFTER_MS_LIMIT),
            });
        }
        problems
    }

    /// How reads share commits.
    pub fn read_group_commit(&self) -> GroupCommit {
        GroupCommit {
            max_batch: self.read_group_commit.max_batch,
            runners: self.read_group_commit.runners,
            spare_runner_after: std::time::Duration::from_millis(self.read_group_commit.spare_runner_after_ms),
        }
    }

    pub fn seal_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.seal_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_bounds_are_named() {
        assert!(AuditConfig::default().problems().is_empty());
        let bad = AuditConfig { seal_interval_ms: 0, seal_max_practices: 0, ..AuditConfig::default() };
        let fields: Vec<_> = bad.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["audit.seal_interval_ms", "audit.seal_max_practices"]);
        let too_many = AuditConfig { seal_max_practices: 1001, ..AuditConfig::default() };
        assert_eq!(too_many.problems().len(), 1);
        assert_eq!(AuditConfig::default().read_group_commit(), GroupCommit::READS);
        let no_runner = AuditConfig {
            read_group_commit: ReadGroupCommitConfig { max_batch: 257, runners: 0, spare_runner_after_ms: 10_001 },
            ..AuditConfig::default()
        };
        let fields: Vec<_> = no_runner.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "audit.read_group_commit.max_batch",
                "audit.read_group_commit.runners",
                "audit.read_group_commit.spare_runner_after_ms"
            ]
        );
    }

    #[test]
    fn a_read_group_commit_table_keeps_the_read_defaults_for_what_it_leaves_out() {
        let config: AuditConfig = toml::from_str("[read_group_commit]\nmax_batch = 32\n").unwrap();
        assert_eq!(
            config.read_group_commit(),
            GroupCommit { max_batch: 32, ..GroupCommit::READS },
            "runners and the spare delay are the read defaults, not the webhook ones"
        );
    }
}
