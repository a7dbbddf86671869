//! Mapping of AWS SDK errors to `KmsError`.
//!
//! The mapping decides what the API tells the client: `Unavailable` becomes 503 (retry later),
//! everything else 500. So only conditions that can clear by themselves are `Unavailable`; a
//! missing permission or a disabled key would fail the same way on every retry.

use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use crypto::KmsError;

/// Maps the error of one KMS operation (`operation` names it in the message, for logs).
///
/// Messages carry AWS's error code and message (key ARNs, never key material: KMS does not echo
/// plaintext or ciphertext) so an operator can tell a missing IAM grant from a disabled key.
pub(crate) fn map_sdk_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status();
            map_service_error(operation, err.code(), err.message(), status.is_server_error())
        }
        // The SDK's timeouts (connect, per attempt, whole operation) fired: the service may be
        // down or slow, so the caller may retry later.
        SdkError::TimeoutError(_) => KmsError::Unavailable(format!("{operation}: timed out")),
        // A bad endpoint URL or the like: configuration, not the network.
        SdkError::DispatchFailure(failure) if failure.is_user() => {
            KmsError::Other(format!("{operation}: {}", DisplayErrorContext(&err)))
        }
        // Connection refused or reset, DNS, TLS, and credentials that could not be loaded (the
        // SDK reports those as dispatch failures too; with IMDS or STS they are often transient).
        SdkError::DispatchFailure(_) => KmsError::Unavailable(format!("{operation}: {}", DisplayErrorContext(&err))),
        // A response that is not a KMS answer (e.g. a proxy's HTML error page, a cut body).
        SdkError::ResponseError(_) => KmsError::Unavailable(format!("{operation}: {}", DisplayErrorContext(&err))),
        // The request could not be built (a missing required field): a bug here, not retryable.
        _ => KmsError::Other(format!("{operation}: {}", DisplayErrorContext(&err))),
    }
}

/// Maps a KMS error response by its error code (`__type`), the same for every operation.
pub(crate) fn map_service_error(
    operation: &'static str,
    code: Option<&str>,
    message: Option<&str>,
    server_error: bool,
) -> KmsError {
    let code = code.unwrap_or("UnknownError");
    let detail = match message {
        Some(message) => format!("{operation}: {code}: {message}"),
        None => format!("{operation}: {code}"),
    };
    match code {
        // Throttling and KMS-side trouble: retryable. KeyUnavailableException and
        // DependencyTimeoutException are KMS's own "try again" answers (custom key stores).
        "ThrottlingException"
        | "LimitExceededException"
        | "KMSInternalException"
        | "KeyUnavailableException"
        | "DependencyTimeoutException"
        | "RequestLimitExceeded"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "InternalFailure" => KmsError::Unavailable(detail),
        // Denied by IAM or a key policy (including a condition on the encryption context), or
        // credentials the service does not accept.
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "InvalidClientTokenId"
        | "ExpiredTokenException"
        | "MissingAuthenticationToken" => KmsError::AccessDenied(detail),
        // The key does not exist, is disabled, pending deletion or import, or the id is not
        // even well-formed.
        "NotFoundException" | "DisabledException" | "KMSInvalidStateException" | "InvalidArnException" => {
            KmsError::KeyNotFound(detail)
        }
        // Wrong encryption context, modified bytes, or a ciphertext of another key. Deliberately
        // carries no detail, like every other InvalidCiphertext in Praxis.
        "InvalidCiphertextException" | "IncorrectKeyException" => KmsError::InvalidCiphertext,
        _ if server_error => KmsError::Unavailable(detail),
        _ => KmsError::Other(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(code: &str) -> KmsError {
        map_service_error("Decrypt", Some(code), Some("detail"), false)
    }

    #[test]
    fn service_codes_map_to_the_port_errors() {
        for code in ["ThrottlingException", "LimitExceededException", "KMSInternalException", "KeyUnavailableException"]
        {
            assert!(map(code).is_retryable(), "{code}");
        }
        assert!(matches!(map("AccessDeniedException"), KmsError::AccessDenied(m) if m.contains("detail")));
        assert!(matches!(map("UnrecognizedClientException"), KmsError::AccessDenied(_)));
        for code in ["NotFoundException", "DisabledException", "KMSInvalidStateException"] {
            assert!(matches!(map(code), KmsError::KeyNotFound(m) if m.contains(code)), "{code}");
        }
        assert_eq!(map("InvalidCiphertextException"), KmsError::InvalidCiphertext);
        assert_eq!(map("IncorrectKeyException"), KmsError::InvalidCiphertext);
        assert!(matches!(map("ValidationException"), KmsError::Other(_)));
        assert!(map_service_error("Decrypt", Some("SomethingNew"), None, true).is_retryable());
        assert!(
            matches!(map_service_error("Decrypt", None, None, false), KmsError::Other(m) if m.contains("UnknownError"))
        );
    }
}
