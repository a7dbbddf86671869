//! Shared set-up: the endpoint, dummy credentials, and a fresh KMS key per test.

use kernel::{PatientId, TenantId};
use kms_aws::{AwsKms, AwsKmsConfig, Credentials};
use std::sync::Arc;

pub const ENDPOINT_VAR: &str = "PRAXIS_TEST_AWS_KMS_ENDPOINT";
pub const REGION: &str = "eu-central-1";

/// The KMS endpoint under test. Panics (fails the test) when it is not configured.
pub fn endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(endpoint) if !endpoint.trim().is_empty() => endpoint,
        _ => panic!(
            "{ENDPOINT_VAR} is not set: these tests need a KMS endpoint. Start moto and point the \
             variable at it, e.g.\n  python3 -m venv target/dev-services/moto-venv && \
             target/dev-services/moto-venv/bin/pip install 'moto[server]'\n  \
             target/dev-services/moto-venv/bin/moto_server -H 127.0.0.1 -p 5055 &\n  \
             {ENDPOINT_VAR}=http://127.0.0.1:5055 cargo test -p kms-aws"
        ),
    }
}

/// moto accepts any credentials; these are not secrets.
pub fn dummy_credentials() -> Credentials {
    Credentials::new("testing", "testing", None, None, "praxis-kms-aws-tests")
}

pub fn config(endpoint: &str, key_id: &str) -> AwsKmsConfig {
    AwsKmsConfig { key_id: key_id.to_owned(), region: REGION.to_owned(), endpoint: Some(endpoint.to_owned()) }
}

/// Creates a fresh symmetric KMS key and returns an adapter on its ARN.
pub async fn fresh_kms() -> Arc<AwsKms> {
    let endpoint = endpoint();
    let admin = AwsKms::connect_with_credentials(&config(&endpoint, "bootstrap"), dummy_credentials()).await.unwrap();
    let created = admin
        .client()
        .create_key()
        .description("praxis kms-aws integration test")
        .key_usage(aws_sdk_kms::types::KeyUsageType::EncryptDecrypt)
        .key_spec(aws_sdk_kms::types::KeySpec::SymmetricDefault)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!("CreateKey against {endpoint} failed: {}", aws_sdk_kms::error::DisplayErrorContext(&e))
        });
    let arn = created.key_metadata().and_then(|m| m.arn()).expect("CreateKey returns the key's ARN").to_owned();
    Arc::new(AwsKms::from_client(admin.client().clone(), arn).unwrap())
}

pub fn patient_ctx() -> crypto::KeyContext {
    crypto::KeyContext::patient_data(TenantId::new(), PatientId::new())
}
