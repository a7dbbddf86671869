//! The real `praxis` binary refuses to start in production on insecure configuration, naming
//! every problem; one test per refusal, plus one showing they are all listed at once.

use std::process::Command;

/// A production configuration with nothing wrong but the one thing each test breaks.
fn production(extra: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_praxis"));
    command.arg("serve").env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    let base = [
        ("PRAXIS__ENVIRONMENT", "production"),
        ("PRAXIS__DATABASE__URL", "postgres://app:pw@db.internal:5432/praxis?sslmode=verify-full"),
        ("PRAXIS__REDIS__URL", "rediss://cache.internal:6380"),
        ("PRAXIS__CORS__ALLOWED_ORIGINS", "[\"https://app.example.org\"]"),
    ];
    for (key, value) in base {
        command.env(key, value);
    }
    for (key, value) in extra {
        if value.is_empty() {
            command.env_remove(key);
        } else {
            command.env(key, value);
        }
    }
    let output = command.output().unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn refuses_the_local_development_kms() {
    let (ok, stderr) = production(&[("PRAXIS__KMS__BACKEND", "local")]);
    assert!(!ok);
    assert!(stderr.contains("kms.backend") && stderr.contains("local development KMS"), "{stderr}");
}

#[test]
fn refuses_a_cors_wildcard() {
    let (ok, stderr) = production(&[("PRAXIS__CORS__ALLOWED_ORIGINS", "[\"*\"]")]);
    assert!(!ok);
    assert!(stderr.contains("cors.allowed_origins") && stderr.contains("wildcard"), "{stderr}");
}

#[test]
fn refuses_a_missing_database_secret() {
    let (ok, stderr) = production(&[("PRAXIS__DATABASE__URL", "")]);
    assert!(!ok);
    assert!(stderr.contains("database.url: required secret is missing"), "{stderr}");
}

#[test]
fn refuses_a_missing_redis_secret() {
    let (ok, stderr) = production(&[("PRAXIS__REDIS__URL", "")]);
    assert!(!ok);
    assert!(stderr.contains("redis.url: required secret is missing"), "{stderr}");
}

#[test]
fn refuses_a_database_url_without_tls() {
    let (ok, stderr) =
        production(&[("PRAXIS__DATABASE__URL", "postgres://app:pw@db.internal:5432/praxis?sslmode=prefer")]);
    assert!(!ok);
    assert!(stderr.contains("database.url") && stderr.contains("TLS"), "{stderr}");
    assert!(!stderr.contains("app:pw"), "the refusal printed the secret: {stderr}");
}

#[test]
fn lists_every_problem_at_once() {
    let (ok, stderr) = production(&[
        ("PRAXIS__CORS__ALLOWED_ORIGINS", "[\"*\"]"),
        ("PRAXIS__DATABASE__URL", "postgres://app@db/praxis"),
        ("PRAXIS__REDIS__URL", ""),
    ]);
    assert!(!ok);
    for field in ["kms.backend", "cors.allowed_origins", "database.url", "redis.url"] {
        assert!(stderr.contains(field), "{field} missing from:\n{stderr}");
    }
    assert!(stderr.contains("4 problem(s)"), "{stderr}");
}

#[test]
fn unknown_and_mistyped_settings_name_the_field() {
    let (ok, stderr) = production(&[("PRAXIS__SERVER__BODY_LIMIT_BYTES", "lots")]);
    assert!(!ok);
    assert!(stderr.contains("server.body_limit_bytes"), "{stderr}");

    let (ok, stderr) = production(&[("PRAXIS__DATABSE__URL", "postgres://typo")]);
    assert!(!ok);
    assert!(stderr.contains("databse"), "{stderr}");
}

#[test]
fn config_check_masks_secrets_and_lists_problems() {
    let output = Command::new(env!("CARGO_BIN_EXE_praxis"))
        .args(["config", "check"])
        .env_clear()
        .env("PRAXIS__ENVIRONMENT", "production")
        .env("PRAXIS__DATABASE__URL", "postgres://app:topsecretpw@db/praxis")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(!stdout.contains("topsecretpw") && !stderr.contains("topsecretpw"), "{stdout}{stderr}");
    assert!(stdout.contains("# secret database.url: configured"), "{stdout}");
    assert!(stdout.contains("# secret redis.url: missing"), "{stdout}");
    assert!(stderr.contains("kms.backend") && stderr.contains("database.url"), "{stderr}");
}

#[test]
fn refuses_vault_over_plain_http_and_never_prints_its_token() {
    let token = format!("dummy-{}", uuid::Uuid::new_v4().simple());
    let (ok, stderr) = production(&[
        ("PRAXIS__KMS__BACKEND", "vault"),
        ("PRAXIS__KMS__VAULT__ADDRESS", "http://vault.internal:8200"),
        ("PRAXIS__KMS__VAULT__KEY_NAME", "praxis"),
        ("PRAXIS__KMS__VAULT__TOKEN", &token),
    ]);
    assert!(!ok);
    assert!(stderr.contains("kms.vault.address: must be https:// in production"), "{stderr}");
    assert!(!stderr.contains(&token), "{stderr}");
    // Over https the same configuration passes validation (and fails only at the self-test,
    // since nothing listens there). A plain Redis URL: this build's Redis client has no TLS.
    let (ok, stderr) = production(&[
        ("PRAXIS__REDIS__URL", "redis://127.0.0.1:1"),
        ("PRAXIS__KMS__BACKEND", "vault"),
        ("PRAXIS__KMS__VAULT__ADDRESS", "https://127.0.0.1:1"),
        ("PRAXIS__KMS__VAULT__KEY_NAME", "praxis"),
        ("PRAXIS__KMS__VAULT__TOKEN", &token),
    ]);
    assert!(!ok);
    assert!(stderr.contains("KMS self-test failed") && !stderr.contains("kms.vault.address"), "{stderr}");
    assert!(!stderr.contains(&token), "{stderr}");
}

#[test]
fn refuses_azure_without_the_settings_its_credential_needs() {
    let (ok, stderr) = production(&[
        ("PRAXIS__KMS__BACKEND", "azure"),
        ("PRAXIS__KMS__AZURE__VAULT_URL", "https://praxis-kv.vault.azure.net"),
        ("PRAXIS__KMS__AZURE__CREDENTIAL", "client_secret"),
    ]);
    assert!(!ok);
    for expected in [
        "kms.azure.key_name: required when kms.backend = \"azure\"",
        "kms.azure.client_secret: required when kms.azure.credential = \"client_secret\"",
        "kms.azure.tenant_id: tenant_id and client_id are required with a client secret",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }
}
