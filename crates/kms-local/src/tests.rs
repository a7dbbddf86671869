use super::*;
use kernel::{PatientId, TenantId};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

fn ctx() -> KeyContext {
    KeyContext::patient_data(TenantId::new(), PatientId::new())
}

fn key_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("keys").join("local-kms.json")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn first_run_creates_a_private_key_file_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(&dir);
    let kms = LocalKms::open_or_create(&LocalKmsConfig::new(&path)).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(kms.key_info(), KekInfo { backend: BACKEND, key_id: "local".into(), version: "1".into() });

    let ctx = ctx();
    let (dek, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    assert_eq!((wrapped.kek_id.as_str(), wrapped.kek_version.as_str()), ("local", "1"));
    assert_eq!(kms.unwrap(&wrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());

    // A second process (here: instance) reads the same key from the file.
    let again = LocalKms::open_or_create(&LocalKmsConfig::new(&path)).unwrap();
    assert_eq!(again.unwrap(&wrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    kms.health_check().await.unwrap();
    // No temporary or lock files are left behind.
    assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
}

#[tokio::test]
async fn the_key_is_bound_to_its_context_and_key_id() {
    let dir = tempfile::tempdir().unwrap();
    let kms = LocalKms::open_or_create(&LocalKmsConfig::new(key_file(&dir))).unwrap();
    let ctx = ctx();
    let (_, wrapped) = kms.generate_data_key(&ctx).await.unwrap();

    let other_patient = KeyContext::patient_data(ctx.tenant, PatientId::new());
    assert_eq!(kms.unwrap(&wrapped, &other_patient).await.unwrap_err(), KmsError::InvalidCiphertext);
    let other_tenant = KeyContext::patient_data(TenantId::new(), ctx.patient);
    assert_eq!(kms.unwrap(&wrapped, &other_tenant).await.unwrap_err(), KmsError::InvalidCiphertext);

    let mut tampered = wrapped.clone();
    tampered.ciphertext[20] ^= 1;
    assert_eq!(kms.unwrap(&tampered, &ctx).await.unwrap_err(), KmsError::InvalidCiphertext);

    let mut foreign = wrapped.clone();
    foreign.kek_id = "aws".into();
    assert!(matches!(kms.unwrap(&foreign, &ctx).await, Err(KmsError::KeyNotFound(_))));
    let mut unknown_version = wrapped;
    unknown_version.kek_version = "9".into();
    assert!(matches!(kms.unwrap(&unknown_version, &ctx).await, Err(KmsError::KeyNotFound(_))));
}

#[tokio::test]
async fn group_or_world_accessible_key_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(&dir);
    let kms = LocalKms::open_or_create(&LocalKmsConfig::new(&path)).unwrap();
    for bad in [0o640, 0o604, 0o620, 0o660, 0o644] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad)).unwrap();
        let err = LocalKms::open_or_create(&LocalKmsConfig::new(&path)).unwrap_err();
        assert!(matches!(err, LocalKmsError::InsecurePermissions { mode, .. } if mode == bad), "{err}");
        let message = err.to_string();
        assert!(message.contains("chmod 600") && message.contains(&format!("{bad:04o}")), "{message}");
        assert!(LocalKms::open(&path).is_err());
        assert!(kms.health_check().await.is_err());
        assert!(kms.rotate().is_err());
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(LocalKms::open(&path).is_ok(), "owner-only read-only files are fine");
}

#[tokio::test]
async fn rotation_adds_a_primary_and_old_versions_still_unwrap() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(&dir);
    let kms = LocalKms::open_or_create(&LocalKmsConfig::new(&path)).unwrap();
    let ctx = ctx();
    let (dek, old) = kms.generate_data_key(&ctx).await.unwrap();

    let info = kms.rotate().unwrap();
    assert_eq!(info.version, "2");
    assert_eq!(kms.key_info().version, "2");
    assert_eq!(mode(&path), 0o600, "the rewritten file is private too");

    let (_, new) = kms.generate_data_key(&ctx).await.unwrap();
    assert_eq!(new.kek_version, "2");
    assert_eq!(kms.unwrap(&old, &ctx).await.unwrap().expose_secret(), dek.expose_secret());

    let rewrapped = kms.rewrap(&old, &ctx).await.unwrap();
    assert_eq!(rewrapped.kek_version, "2");
    assert_eq!(kms.unwrap(&rewrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());

    kms.rotate().unwrap();
    let reopened = LocalKms::open(&path).unwrap();
    assert_eq!(reopened.key_info().version, "3");
    assert_eq!(reopened.unwrap(&old, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary files left");
}

#[tokio::test]
async fn a_rotation_by_another_process_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(&dir);
    let server = LocalKms::open_or_create(&LocalKmsConfig::new(&path)).unwrap();
    let admin = LocalKms::open(&path).unwrap();
    admin.rotate().unwrap();

    let ctx = ctx();
    let (dek, wrapped_by_admin) = admin.generate_data_key(&ctx).await.unwrap();
    assert_eq!(wrapped_by_admin.kek_version, "2");
    // The server did not know version 2; unwrap re-reads the file.
    assert_eq!(server.unwrap(&wrapped_by_admin, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    assert_eq!(server.key_info().version, "2");

    // The server rotates on top of the admin's rotation instead of overwriting it.
    let stale = LocalKms::open(&path).unwrap();
    server.rotate().unwrap();
    stale.rotate().unwrap();
    assert_eq!(stale.key_info().version, "4");
    assert_eq!(LocalKms::open(&path).unwrap().keys().keks.len(), 4);
}

#[test]
fn concurrent_first_runs_agree_on_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = Arc::new(key_file(&dir));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let path = Arc::clone(&path);
            std::thread::spawn(move || {
                let kms = LocalKms::open_or_create(&LocalKmsConfig::new(path.as_path())).unwrap();
                let keys = kms.keys();
                keys.primary().unwrap().expose_secret().to_vec()
            })
        })
        .collect();
    let keys: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "every opener must use the same key");
}

#[test]
fn a_held_rotation_lock_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(&dir);
    let kms = LocalKms::open_or_create(&LocalKmsConfig::new(&path)).unwrap();
    let lock = keyfile::sibling(&path, "lock");
    std::fs::write(&lock, b"").unwrap();
    let err = kms.rotate().unwrap_err();
    assert!(matches!(err, LocalKmsError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("remove the lock file"));
    std::fs::remove_file(&lock).unwrap();
    assert_eq!(kms.rotate().unwrap().version, "2");
}

#[test]
fn a_file_for_another_key_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(&dir);
    LocalKms::open_or_create(&LocalKmsConfig { key_file: path.clone(), key_id: "dev-a".into() }).unwrap();
    let err = LocalKms::open_or_create(&LocalKmsConfig { key_file: path.clone(), key_id: "dev-b".into() }).unwrap_err();
    assert!(matches!(err, LocalKmsError::KeyIdMismatch { .. }), "{err}");
    assert_eq!(LocalKms::open(&path).unwrap().key_info().key_id, "dev-a");
}

fn write_private(path: &Path, content: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    file.write_all(content.as_bytes()).unwrap();
}

#[test]
fn malformed_files_are_refused_without_echoing_key_material() {
    let secret_hex = "ab".repeat(32);
    let cases = [
        ("", "empty"),
        ("{", "not a key file"),
        (r#"{"format":"other","key_id":"local","primary":"1","versions":[]}"#, "format"),
        (r#"{"format":"praxis-local-kms-v1","key_id":"local","primary":"1","versions":[]}"#, "no key versions"),
        (
            &format!(
                r#"{{"format":"praxis-local-kms-v1","key_id":"local","primary":"2","versions":[{{"version":"1","key_hex":"{secret_hex}"}}]}}"#
            ),
            "primary version",
        ),
        (
            &format!(
                r#"{{"format":"praxis-local-kms-v1","key_id":"local","primary":"1","versions":[{{"version":"1","key_hex":"{}"}}]}}"#,
                &secret_hex[..62]
            ),
            "not 32 bytes",
        ),
        (
            r#"{"format":"praxis-local-kms-v1","key_id":"local","primary":"1","versions":[{"version":"1","key_hex":"zz"}]}"#,
            "not hex",
        ),
        (
            &format!(
                r#"{{"format":"praxis-local-kms-v1","key_id":"local","primary":"01","versions":[{{"version":"01","key_hex":"{secret_hex}"}}]}}"#
            ),
            "positive decimal",
        ),
        (
            &format!(
                r#"{{"format":"praxis-local-kms-v1","key_id":"local","primary":"1","versions":[{{"version":"1","key_hex":"{secret_hex}"}},{{"version":"1","key_hex":"{secret_hex}"}}]}}"#
            ),
            "twice",
        ),
        (
            &format!(
                r#"{{"format":"praxis-local-kms-v1","key_id":"local","primary":"1","versions":[{{"version":"1","key_hex":"{secret_hex}","extra":1}}]}}"#
            ),
            "not a key file",
        ),
    ];
    for (i, (content, expected)) in cases.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("k{i}.json"));
        write_private(&path, content);
        let err = LocalKms::open(&path).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, LocalKmsError::Malformed { .. }), "case {i}: {message}");
        assert!(message.contains(expected), "case {i}: {message}");
        assert!(!message.contains(&secret_hex[..16]), "case {i} echoed key material: {message}");
    }
}

#[test]
fn a_hand_written_file_with_two_versions_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.json");
    let content = format!(
        r#"{{"format":"praxis-local-kms-v1","key_id":"dev","primary":"7","versions":[{{"version":"3","key_hex":"{}"}},{{"version":"7","key_hex":"{}"}}]}}"#,
        "01".repeat(32),
        "02".repeat(32)
    );
    write_private(&path, &content);
    let kms = LocalKms::open(&path).unwrap();
    assert_eq!(kms.key_info(), KekInfo { backend: BACKEND, key_id: "dev".into(), version: "7".into() });
    assert_eq!(kms.rotate().unwrap().version, "8");
}

#[test]
fn debug_and_errors_never_print_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(&dir);
    let kms = LocalKms::open_or_create(&LocalKmsConfig::new(&path)).unwrap();
    let key_hex = hex::encode(kms.keys().primary().unwrap().expose_secret());
    let printed = format!("{kms:?}");
    assert!(printed.contains("LocalKms") && !printed.contains(&key_hex[..16]), "{printed}");
    // The file does hold it, in hex (that is the point of the file).
    assert!(std::fs::read_to_string(&path).unwrap().contains(&key_hex));
}

#[test]
fn a_directory_is_not_a_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = LocalKms::open(dir.path()).unwrap_err();
    assert!(matches!(err, LocalKmsError::NotAFile { .. }), "{err}");
    let missing = LocalKms::open(dir.path().join("missing.json")).unwrap_err();
    assert!(matches!(missing, LocalKmsError::Io { .. }) && missing.to_string().contains("missing.json"), "{missing}");
}

#[test]
fn settings_problems_name_the_setting_and_refuse_production() {
    let place = SettingsPlace::section("kms.local", "kms.backend", "local", kernel::Environment::Development);
    assert_eq!(LocalKmsConfig::default().problems(&place), vec![]);
    let bad = LocalKmsConfig { key_file: PathBuf::new(), key_id: "x".repeat(256) };
    let found: Vec<String> = bad.problems(&place).iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        ["kms.local.key_file: required when kms.backend = \"local\"", "kms.local.key_id: must be 1 to 255 bytes",]
    );
    let production = SettingsPlace::section("kms.local", "kms.backend", "local", kernel::Environment::Production);
    let found = LocalKmsConfig::default().problems(&production);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].field, "kms.backend");
    assert!(found[0].message.starts_with("the local development KMS is not allowed in production"));
}

#[test]
fn an_older_key_file_must_exist_and_hold_the_configured_key_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(&dir);
    assert!(matches!(LocalKms::open_existing(&LocalKmsConfig::new(&path)), Err(LocalKmsError::Io { .. })));
    assert!(!path.exists());
    LocalKms::open_or_create(&LocalKmsConfig::new(&path)).unwrap();
    let other_id = LocalKmsConfig { key_file: path.clone(), key_id: "old".into() };
    assert!(matches!(LocalKms::open_existing(&other_id), Err(LocalKmsError::KeyIdMismatch { .. })));
    assert_eq!(LocalKms::open_existing(&LocalKmsConfig::new(&path)).unwrap().key_info().key_id, "local");
}
