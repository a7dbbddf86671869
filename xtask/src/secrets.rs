//! `cargo xtask secrets`: secret scan of the tracked tree and of the git history since the last
//! release tag, with Yelp's detect-secrets (PyPI), installed by xtask into
//! `target/dev-services/secrets-venv`.
//!
//! - Tree: every file `git ls-files` names, as it is in the working tree.
//! - History: the lines each commit added (`git log -p --first-parent`, merges diffed against their
//!   first parent) since `git describe --tags --abbrev=0 --match 'v*'`, or in all history when there
//!   is no such tag. Each commit's added lines are written to a scratch directory under the same
//!   path, scanned, and each finding is mapped back to its commit, file and line.
//! - Findings listed in `.secrets.allowlist` (format below and in docs/operations.md) are accepted;
//!   any other finding fails the scan. The report names file, line, detector and the value's SHA-1
//!   fingerprint (what detect-secrets reports and what the allowlist pins); never the value itself.
//!
//! Allowlist lines: `path-glob | detector type | fingerprint | reason`, e.g.
//! `apps/api/tests/it/*.rs | Basic Auth Credentials | 5baa61e4… | test URL with a dummy password`.
//! `*` matches within one path segment, `**` across segments; the type and the fingerprint may be
//! `*` (any). The reason is required. `#` starts a comment line.

use crate::pyvenv::{Venv, tail};
use crate::workspace_root;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Pinned: the detectors and their heuristics change between releases.
pub const REQUIREMENTS: &[&str] = &["detect-secrets==1.5.0"];
pub const ALLOWLIST_FILE: &str = ".secrets.allowlist";

pub fn run() -> Result<(), String> {
    let venv = install()?;
    let report = scan(&workspace_root(), &venv)?;
    println!("{}", report.render());
    if report.passed() { Ok(()) } else { Err("secret scan failed".into()) }
}

pub fn install() -> Result<Venv, String> {
    Venv::ensure("secrets-venv", REQUIREMENTS, "detect-secrets")
}

/// One thing detect-secrets found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `None` for the working tree, else the commit that added the line.
    pub commit: Option<String>,
    pub path: String,
    pub line: u64,
    /// detect-secrets' detector name, e.g. "AWS Access Key".
    pub kind: String,
    /// SHA-1 of the value (detect-secrets' `hashed_secret`).
    pub fingerprint: String,
}

#[derive(Debug)]
pub struct Report {
    /// What the history scan covered, e.g. "v1.2.0..HEAD" or "all history".
    pub history_range: String,
    pub files_scanned: usize,
    pub commits_scanned: usize,
    pub failures: Vec<Finding>,
    pub allowed: usize,
    /// Allowlist entries (line numbers) that matched nothing: candidates for removal.
    pub unused_entries: Vec<usize>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Human-readable; contains no secret value.
    pub fn render(&self) -> String {
        let mut out = format!(
            "secret scan (detect-secrets): {} tracked files, {} commits ({}); {} allowlisted finding(s)",
            self.files_scanned, self.commits_scanned, self.history_range, self.allowed
        );
        for line in &self.unused_entries {
            let _ = write!(out, "\n  note: {ALLOWLIST_FILE}:{line} matched nothing; remove it if it is stale");
        }
        if self.failures.is_empty() {
            out.push_str("\nno secrets found outside the allowlist");
            return out;
        }
        let _ = write!(out, "\n{} finding(s) not in {ALLOWLIST_FILE}:", self.failures.len());
        for f in &self.failures {
            let place = match &f.commit {
                None => "working tree".to_owned(),
                Some(commit) => format!("added in commit {}", &commit[..commit.len().min(12)]),
            };
            let _ = write!(out, "\n  {}:{}  {}  ({place}; fingerprint {})", f.path, f.line, f.kind, f.fingerprint);
        }
        out.push_str(
            "\nA real secret: revoke it first, then remove it (from history too if it was pushed).\n\
             A test fixture or false positive: add `path-glob | type | fingerprint | reason` to ",
        );
        out.push_str(ALLOWLIST_FILE);
        out.push_str(" (see docs/operations.md).");
        out
    }
}

/// Scans the repository at `repo` (a git work tree) with the detect-secrets in `venv`.
pub fn scan(repo: &Path, venv: &Venv) -> Result<Report, String> {
    let allowlist = match std::fs::read_to_string(repo.join(ALLOWLIST_FILE)) {
        Ok(text) => Allowlist::parse(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Allowlist::default(),
        Err(e) => return Err(format!("cannot read {ALLOWLIST_FILE}: {e}")),
    };

    let files = tracked_files(repo)?;
    let mut findings = detect(venv, repo, &files)?;

    let (history_range, range) = match last_release_tag(repo)? {
        Some(tag) => (format!("{tag}..HEAD"), format!("{tag}..HEAD")),
        None => ("all history, no v* tag".to_owned(), "HEAD".to_owned()),
    };
    let (commits_scanned, history) = scan_history(repo, venv, &range)?;
    findings.extend(history);

    // The allowlist holds fingerprints, which look like secrets to the entropy detectors.
    findings.retain(|f| f.path != ALLOWLIST_FILE);
    let mut used = vec![false; allowlist.entries.len()];
    let mut failures = Vec::new();
    let mut allowed = 0;
    for finding in findings {
        match allowlist.matching(&finding) {
            Some(index) => {
                used[index] = true;
                allowed += 1;
            }
            None => failures.push(finding),
        }
    }
    let unused_entries =
        allowlist.entries.iter().zip(used).filter(|(_, used)| !used).map(|(entry, _)| entry.line).collect();
    Ok(Report { history_range, files_scanned: files.len(), commits_scanned, failures, allowed, unused_entries })
}

fn git(repo: &Path) -> Command {
    let mut command = Command::new("git");
    command.arg("-C").arg(repo).args(["-c", "core.quotePath=false"]).stdin(Stdio::null());
    command
}

fn git_output(repo: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let output = git(repo).args(args).output().map_err(|e| format!("cannot run git: {e}"))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(format!("git {} failed ({}):\n{}", args.join(" "), output.status, tail(&output.stderr, 10)))
    }
}

/// Tracked paths that are regular files in the working tree (a tracked file deleted in the work
/// tree, a symlink or a submodule is skipped).
fn tracked_files(repo: &Path) -> Result<Vec<String>, String> {
    let out = git_output(repo, &["ls-files", "-z"])?;
    Ok(out
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .filter(|p| std::fs::symlink_metadata(repo.join(p)).is_ok_and(|m| m.is_file()))
        .collect())
}

/// The newest `v*` tag reachable from HEAD, if any. An empty repository has none.
fn last_release_tag(repo: &Path) -> Result<Option<String>, String> {
    let output = git(repo)
        .args(["describe", "--tags", "--abbrev=0", "--match", "v*", "HEAD"])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if output.status.success() {
        let tag = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        return Ok(if tag.is_empty() { None } else { Some(tag) });
    }
    // "No names found" / "No tags can describe": no release yet, scan everything.
    Ok(None)
}

/// Runs detect-secrets on `files` (relative to `dir`) and returns its findings (tree findings,
/// `commit: None`).
fn detect(venv: &Venv, dir: &Path, files: &[String]) -> Result<Vec<Finding>, String> {
    let mut findings = Vec::new();
    // Bounded batches keep the command line short on large trees.
    for batch in files.chunks(500) {
        let output = Command::new(venv.bin("detect-secrets"))
            .arg("scan")
            .args(batch)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run detect-secrets: {e}"))?;
        if !output.status.success() {
            return Err(format!("detect-secrets scan failed ({}):\n{}", output.status, tail(&output.stderr, 15)));
        }
        findings.extend(parse_results(&output.stdout)?);
    }
    Ok(findings)
}

fn parse_results(json: &[u8]) -> Result<Vec<Finding>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("detect-secrets printed something other than JSON: {e}"))?;
    let results = value.get("results").and_then(|r| r.as_object()).ok_or("detect-secrets output has no results")?;
    let mut findings = Vec::new();
    for (path, items) in results {
        for item in items.as_array().into_iter().flatten() {
            findings.push(Finding {
                commit: None,
                path: path.trim_start_matches("./").to_owned(),
                line: item.get("line_number").and_then(|l| l.as_u64()).unwrap_or(0),
                kind: item.get("type").and_then(|t| t.as_str()).unwrap_or("unknown").to_owned(),
                fingerprint: item.get("hashed_secret").and_then(|h| h.as_str()).unwrap_or("").to_owned(),
            });
        }
    }
    Ok(findings)
}

/// Lines one commit added to one file, with their line numbers in the new file.
#[derive(Debug, Default, PartialEq, Eq)]
struct AddedLines {
    commit: String,
    path: String,
    lines: Vec<(u64, Vec<u8>)>,
}

/// Splits `git log -p --unified=0 --format=<MARK>%H` output into the lines each commit added.
fn parse_log(log: &[u8]) -> (usize, Vec<AddedLines>) {
    let mut commits = 0;
    let mut out: Vec<AddedLines> = Vec::new();
    let mut commit = String::new();
    let mut current: Option<AddedLines> = None;
    let mut next_line = 0u64;
    let flush = |current: &mut Option<AddedLines>, out: &mut Vec<AddedLines>| {
        if let Some(added) = current.take()
            && !added.lines.is_empty()
        {
            out.push(added);
        }
    };
    for raw in log.split(|b| *b == b'\n') {
        if let Some(hash) = raw.strip_prefix(COMMIT_MARK.as_bytes()) {
            flush(&mut current, &mut out);
            commit = String::from_utf8_lossy(hash).trim().to_owned();
            commits += 1;
        } else if raw.starts_with(b"diff --git ") {
            flush(&mut current, &mut out);
        } else if let Some(path) = raw.strip_prefix(b"+++ ") {
            flush(&mut current, &mut out);
            // "+++ b/path" for a file that exists afterwards; "+++ /dev/null" for a deletion.
            if let Some(path) = path.strip_prefix(b"b/") {
                let path = String::from_utf8_lossy(path).trim_end_matches('\t').to_owned();
                current = Some(AddedLines { commit: commit.clone(), path, lines: Vec::new() });
            }
        } else if raw.starts_with(b"@@ ") {
            next_line = hunk_new_start(raw).unwrap_or(0);
        } else if let (Some(line), Some(added)) = (raw.strip_prefix(b"+"), current.as_mut()) {
            added.lines.push((next_line, line.to_vec()));
            next_line += 1;
        }
    }
    flush(&mut current, &mut out);
    (commits, out)
}

const COMMIT_MARK: &str = "@@@praxis-commit ";

/// `@@ -12,3 +15,4 @@ fn …` → 15.
fn hunk_new_start(header: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(header);
    let plus = text.split_whitespace().find(|w| w.starts_with('+'))?;
    plus[1..].split(',').next()?.parse().ok()
}

fn scan_history(repo: &Path, venv: &Venv, range: &str) -> Result<(usize, Vec<Finding>), String> {
    let has_head =
        git(repo).args(["rev-parse", "--verify", "--quiet", "HEAD"]).output().is_ok_and(|o| o.status.success());
    if !has_head {
        return Ok((0, Vec::new()));
    }
    let format = format!("--format={COMMIT_MARK}%H");
    let log = git_output(
        repo,
        &[
            "log",
            "-p",
            "--first-parent",
            "--diff-merges=first-parent",
            "--no-renames",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--unified=0",
            &format,
            range,
        ],
    )?;
    let (commits, added) = parse_log(&log);
    if added.is_empty() {
        return Ok((commits, Vec::new()));
    }

    let scratch = scratch_dir()?;
    let result = (|| {
        let mut files = Vec::new();
        let mut origin: HashMap<String, &AddedLines> = HashMap::new();
        for (index, item) in added.iter().enumerate() {
            // Keep the file name (detect-secrets' filters look at it, e.g. lock files) under a
            // per-commit-and-file directory.
            let relative = format!("{index}/{}", item.path);
            let target = scratch.join(&relative);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            let mut body = Vec::new();
            for (_, line) in &item.lines {
                body.extend_from_slice(line);
                body.push(b'\n');
            }
            std::fs::write(&target, body).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
            files.push(relative.clone());
            origin.insert(relative, item);
        }
        let findings = detect(venv, &scratch, &files)?;
        Ok(findings
            .into_iter()
            .filter_map(|f| {
                let item = origin.get(&f.path)?;
                let line = usize::try_from(f.line).ok()?.checked_sub(1).and_then(|i| item.lines.get(i)).map(|l| l.0)?;
                Some(Finding { commit: Some(item.commit.clone()), path: item.path.clone(), line, ..f })
            })
            .collect())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result.map(|findings| (commits, findings))
}

/// A fresh private directory for the added lines (they may hold secrets: 0700, removed after).
fn scratch_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!("praxis-secret-scan-{}-{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err("cannot create a scratch directory for the history scan".into())
}

#[derive(Debug, Default)]
struct Allowlist {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    /// Line in the allowlist file, for messages.
    line: usize,
    path: String,
    kind: String,
    fingerprint: String,
}

impl Allowlist {
    fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = trimmed.splitn(4, '|').map(str::trim).collect();
            let [path, kind, fingerprint, reason] = fields[..] else {
                problems.push(format!("{ALLOWLIST_FILE}:{line}: expected `path-glob | type | fingerprint | reason`"));
                continue;
            };
            if path.is_empty() || kind.is_empty() || fingerprint.is_empty() {
                problems.push(format!("{ALLOWLIST_FILE}:{line}: empty field (use `*` for any)"));
            } else if reason.is_empty() {
                problems.push(format!("{ALLOWLIST_FILE}:{line}: every entry needs a reason"));
            } else if fingerprint != "*"
                && !(fingerprint.len() == 40 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                problems.push(format!("{ALLOWLIST_FILE}:{line}: the fingerprint is `*` or 40 hex digits (SHA-1)"));
            } else if fingerprint == "*" && path.trim_matches(|c| c == '*' || c == '/').is_empty() {
                problems.push(format!("{ALLOWLIST_FILE}:{line}: an entry for every path must pin a fingerprint"));
            } else {
                entries.push(Entry {
                    line,
                    path: path.to_owned(),
                    kind: kind.to_owned(),
                    fingerprint: fingerprint.to_ascii_lowercase(),
                });
            }
        }
        if problems.is_empty() { Ok(Allowlist { entries }) } else { Err(problems.join("\n")) }
    }

    /// The index of the first entry that accepts the finding.
    fn matching(&self, finding: &Finding) -> Option<usize> {
        self.entries.iter().position(|e| {
            glob_match(e.path.as_bytes(), finding.path.as_bytes())
                && (e.kind == "*" || e.kind.eq_ignore_ascii_case(&finding.kind))
                && (e.fingerprint == "*" || e.fingerprint.eq_ignore_ascii_case(&finding.fingerprint))
        })
    }
}

/// `*` matches any run of characters except `/`; `**` matches any run including `/`; `?` one
/// character except `/`. Everything else matches itself.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => {
            // `**/` also matches no directory at all.
            let rest_after_slash = rest.strip_prefix(b"/").unwrap_or(rest);
            (0..=text.len()).any(|i| glob_match(rest, &text[i..]) || glob_match(rest_after_slash, &text[i..]))
        }
        [b'*', rest @ ..] => {
            let segment = text.iter().position(|b| *b == b'/').unwrap_or(text.len());
            (0..=segment).any(|i| glob_match(rest, &text[i..]))
        }
        [b'?', rest @ ..] => matches!(text, [c, tail @ ..] if *c != b'/' && glob_match(rest, tail)),
        [p, rest @ ..] => matches!(text, [c, tail @ ..] if c == p && glob_match(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"apps/api/tests/it/*.rs", b"apps/api/tests/it/rls.rs"));
        assert!(!glob_match(b"apps/api/tests/*.rs", b"apps/api/tests/it/rls.rs"));
        assert!(glob_match(b"apps/**/*.rs", b"apps/api/tests/it/rls.rs"));
        assert!(glob_match(b"**/fixtures/**", b"crates/x/tests/fixtures/a/b.json"));
        assert!(glob_match(b"crates/**/x.rs", b"crates/x.rs"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"a/c"));
        assert!(glob_match(b"README.md", b"README.md"));
        assert!(!glob_match(b"README.md", b"README.mdx"));
    }

    #[test]
    fn allowlist_requires_reasons_and_well_formed_fingerprints() {
        let good = "# comment\n\na/*.rs | Secret Keyword | * | enum names, not secrets\n\
                    b.txt | * | 0123456789abcdef0123456789abcdef01234567 | fixture\n";
        assert_eq!(Allowlist::parse(good).unwrap().entries.len(), 2);
        for bad in [
            "a.rs | Secret Keyword | * |",
            "a.rs | Secret Keyword | *",
            "a.rs | Secret Keyword | abc | short fingerprint",
            "** | * | * | everything",
        ] {
            assert!(Allowlist::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn log_parsing_maps_added_lines_to_new_file_line_numbers() {
        let log = format!(
            "{COMMIT_MARK}aaaa\n\ndiff --git a/x.txt b/x.txt\n--- a/x.txt\n+++ b/x.txt\n@@ -3,0 +4,2 @@ ctx\n+four\n+five\n\
             @@ -9 +11 @@\n-old\n+eleven\ndiff --git a/gone.txt b/gone.txt\n--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n\
             {COMMIT_MARK}bbbb\n\ndiff --git a/n.txt b/n.txt\nnew file mode 100644\n--- /dev/null\n+++ b/n.txt\n@@ -0,0 +1 @@\n+one\n"
        );
        let (commits, added) = parse_log(log.as_bytes());
        assert_eq!(commits, 2);
        assert_eq!(added.len(), 2);
        assert_eq!(added[0].commit, "aaaa");
        assert_eq!(added[0].path, "x.txt");
        let numbers: Vec<u64> = added[0].lines.iter().map(|l| l.0).collect();
        assert_eq!(numbers, [4, 5, 11]);
        assert_eq!(added[1].commit, "bbbb");
        assert_eq!(added[1].lines, [(1, b"one".to_vec())]);
    }

    /// Random upper-case letters and digits from the OS, so no test secret is written in source.
    fn random_token(alphabet: &[u8], len: usize) -> String {
        use std::io::Read;
        let mut bytes = vec![0u8; len];
        std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut bytes).unwrap();
        bytes.iter().map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()])).collect()
    }

    fn git_in(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=xtask test", "-c", "user.email=xtask@test.invalid", "-c", "commit.gpgsign=false"])
            .args(["-c", "tag.gpgsign=false", "-c", "init.defaultBranch=main"])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?} failed");
    }

    /// End to end, with the real detect-secrets: a planted AWS key pair and private key fail the
    /// scan in the tree and in history; the allowlist accepts them; removing them leaves them in
    /// history until a release tag is cut after the removal.
    #[test]
    fn planted_secrets_fail_the_scan_until_allowlisted_or_released_past() {
        let venv = install().unwrap_or_else(|e| {
            panic!("the secret scanner (detect-secrets, from PyPI) could not be installed; this test needs it: {e}")
        });
        let repo = scratch_dir().unwrap();
        git_in(&repo, &["init", "--quiet"]);
        std::fs::write(repo.join("README.md"), "# demo\n").unwrap();
        git_in(&repo, &["add", "."]);
        git_in(&repo, &["commit", "--quiet", "-m", "clean"]);
        let clean = scan(&repo, &venv).unwrap();
        assert!(clean.passed(), "{}", clean.render());

        // Assembled at run time: the literal never appears in this repository.
        let upper: Vec<u8> = (b'A'..=b'Z').collect();
        let lower: Vec<u8> = (b'a'..=b'z').collect();
        let digits: Vec<u8> = (b'0'..=b'9').collect();
        let upper_digits = [&upper[..], b"234567"].concat();
        let base64 = [&upper[..], &lower, &digits, b"/+"].concat();
        let alphanumeric = [&upper[..], &lower, &digits].concat();
        let key_id = ["AK", "IA", &random_token(&upper_digits, 16)].concat();
        let secret_key = random_token(&base64, 40);
        let pem_header = ["-----BEGIN", "RSA", "PRIVATE", "KEY-----"].join(" ");
        let pem_body = random_token(&alphanumeric, 64);
        std::fs::create_dir_all(repo.join("config")).unwrap();
        std::fs::write(
            repo.join("config/prod.env"),
            format!("region = eu-central-1\naws_access_key_id = {key_id}\naws_secret_access_key = \"{secret_key}\"\n"),
        )
        .unwrap();
        std::fs::write(repo.join("deploy.pem"), format!("{pem_header}\n{pem_body}\n")).unwrap();
        git_in(&repo, &["add", "."]);
        git_in(&repo, &["commit", "--quiet", "-m", "oops"]);

        let report = scan(&repo, &venv).unwrap();
        let text = report.render();
        assert!(!report.passed(), "{text}");
        for secret in [&key_id, &secret_key, &pem_body] {
            assert!(!text.contains(secret.as_str()), "the report printed a secret value:\n{text}");
        }
        let kinds = |commit: bool| -> Vec<(String, u64, String)> {
            let mut v: Vec<_> = report
                .failures
                .iter()
                .filter(|f| f.commit.is_some() == commit)
                .map(|f| (f.path.clone(), f.line, f.kind.clone()))
                .collect();
            v.sort();
            v
        };
        let tree = kinds(false);
        assert!(tree.contains(&("config/prod.env".into(), 2, "AWS Access Key".into())), "{text}");
        assert!(tree.contains(&("deploy.pem".into(), 1, "Private Key".into())), "{text}");
        assert_eq!(kinds(true), tree, "history findings should mirror the tree's:\n{text}");
        assert!(text.contains("config/prod.env:2  AWS Access Key"), "{text}");

        // Allowlisted: one entry pinned by fingerprint, one by path and type.
        let key_fingerprint =
            report.failures.iter().find(|f| f.kind == "AWS Access Key").map(|f| f.fingerprint.clone()).unwrap();
        std::fs::write(
            repo.join(ALLOWLIST_FILE),
            format!(
                "# test fixtures\nconfig/*.env | AWS Access Key | {key_fingerprint} | fake key for the test\n\
                 config/prod.env | * | * | every other detector on this fixture\n\
                 *.pem | Private Key | * | generated test key\n"
            ),
        )
        .unwrap();
        let allowed = scan(&repo, &venv).unwrap();
        assert!(allowed.passed(), "{}", allowed.render());
        assert!(allowed.allowed >= 4, "{}", allowed.render());

        // Removed from the tree, but still in history (no release tag yet).
        std::fs::remove_file(repo.join(ALLOWLIST_FILE)).unwrap();
        git_in(&repo, &["rm", "--quiet", "config/prod.env", "deploy.pem"]);
        git_in(&repo, &["commit", "--quiet", "-m", "remove"]);
        let history_only = scan(&repo, &venv).unwrap();
        assert!(!history_only.passed(), "{}", history_only.render());
        assert!(history_only.failures.iter().all(|f| f.commit.is_some()), "{}", history_only.render());

        // A release tag after the removal: only history since the tag counts.
        git_in(&repo, &["tag", "v0.1.0"]);
        let released = scan(&repo, &venv).unwrap();
        assert!(released.passed(), "{}", released.render());
        assert_eq!(released.history_range, "v0.1.0..HEAD");

        // A new secret after the release is caught in history again.
        std::fs::write(repo.join("notes.txt"), format!("{pem_header}\n")).unwrap();
        git_in(&repo, &["add", "."]);
        git_in(&repo, &["commit", "--quiet", "-m", "again"]);
        let after = scan(&repo, &venv).unwrap();
        assert!(after.failures.iter().any(|f| f.commit.is_some() && f.path == "notes.txt"), "{}", after.render());
        let _ = std::fs::remove_dir_all(&repo);
    }
}
