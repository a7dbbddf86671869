//! The OpenAPI document: the committed `docs/openapi.json` is what the handlers' annotations
//! generate, the server serves exactly that at `GET /openapi.json`, and it describes every route.
//!
//! When the handlers change, regenerate the committed copy with
//! `UPDATE_OPENAPI=1 cargo xtask test -p api -- openapi`.

use crate::identity::{bearer, create_practice, fast_hashing, login};
use crate::support::{TestApp, assert_problem};
use serde_json::Value;
use std::path::PathBuf;

const UPDATE_HINT: &str = "run `UPDATE_OPENAPI=1 cargo xtask test -p api -- openapi` to rewrite docs/openapi.json, \
     then review and commit the diff";

/// Every route of the API (README's HTTP API table), as (method, path template).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/logout"),
    ("get", "/api/v1/me"),
    ("post", "/api/v1/me/password"),
    ("get", "/api/v1/users"),
    ("post", "/api/v1/users"),
    ("post", "/api/v1/users/{id}/disable"),
    ("get", "/api/v1/api-keys"),
    ("post", "/api/v1/api-keys"),
    ("delete", "/api/v1/api-keys/{id}"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/audit/verify"),
    ("post", "/api/v1/patients"),
    ("get", "/api/v1/patients"),
    ("get", "/api/v1/patients/{id}"),
    ("patch", "/api/v1/patients/{id}"),
    ("delete", "/api/v1/patients/{id}"),
    ("put", "/api/v1/patients/{id}/legal-hold"),
    ("get", "/api/v1/patients/{id}/export"),
    ("post", "/api/v1/patients/{id}/account"),
    ("get", "/api/v1/patients/{id}/consents"),
    ("post", "/api/v1/patients/{id}/consents"),
    ("get", "/api/v1/patients/{id}/consents/history"),
    ("post", "/webhooks/{provider}/{practice_id}"),
    ("post", "/webhooks/{provider}"),
    ("get", "/webhooks/{provider}/{practice_id}"),
    ("get", "/webhooks/{provider}"),
    ("post", "/api/v1/appointments"),
    ("get", "/api/v1/appointments"),
    ("get", "/api/v1/appointments/{id}"),
    ("patch", "/api/v1/appointments/{id}"),
    ("post", "/api/v1/appointments/{id}/cancel"),
    ("post", "/api/v1/appointments/{id}/status"),
    ("put", "/api/v1/therapists/{id}/working-hours"),
    ("get", "/api/v1/therapists/{id}/working-hours"),
    ("post", "/api/v1/therapists/{id}/absences"),
    ("get", "/api/v1/therapists/{id}/absences"),
    ("delete", "/api/v1/therapists/{id}/absences/{absence_id}"),
    ("get", "/api/v1/therapists/{id}/availability"),
    ("get", "/openapi.json"),
];

/// Routes anyone may call: no security requirement.
/// (Webhooks authenticate by the provider's signature, not by a security scheme.)
const PUBLIC: &[&str] = &[
    "/health/live",
    "/health/ready",
    "/api/v1/auth/login",
    "/webhooks/{provider}/{practice_id}",
    "/webhooks/{provider}",
    "/openapi.json",
];

const PROBLEM_REF: &str = "#/components/schemas/Problem";

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

fn updating() -> bool {
    std::env::var_os("UPDATE_OPENAPI").is_some_and(|value| value == "1")
}

#[test]
fn committed_openapi_document_is_current() {
    let generated = api::openapi_document::document().unwrap();
    let path = committed_path();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if generated == committed {
        return;
    }
    if updating() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    panic!("docs/openapi.json differs from the document the handlers generate: {UPDATE_HINT}");
}

#[actix_web::test]
async fn served_openapi_document_describes_every_route() {
    let app = TestApp::start().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff", "edge headers on /openapi.json");
    assert!(response.headers().get("x-request-id").is_some());
    let served = response.text().await.unwrap();
    assert_eq!(served, api::openapi_document::document().unwrap(), "served document is not the generated one");
    let doc: Value = serde_json::from_str(&served).unwrap();
    if !updating() {
        let committed: Value =
            serde_json::from_str(&std::fs::read_to_string(committed_path()).unwrap_or_default()).unwrap_or_default();
        assert!(doc == committed, "served /openapi.json differs from docs/openapi.json: {UPDATE_HINT}");
    }

    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    assert_eq!(
        doc["servers"],
        serde_json::json!([{ "url": "/", "description": "The Praxis instance that serves this document" }])
    );

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["session_cookie"]["type"], "apiKey");
    assert_eq!(schemes["session_cookie"]["in"], "cookie");
    assert_eq!(schemes["session_cookie"]["name"], "__Host-praxis_session");
    assert_eq!(schemes["csrf_token"]["in"], "header");
    assert_eq!(schemes["csrf_token"]["name"], "X-CSRF-Token");
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["type"], "apiKey");
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "X-Api-Key");

    // The Problem schema has error.rs's members.
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for member in ["type", "title", "status", "detail", "request_id", "errors"] {
        assert!(problem.get(member).is_some(), "Problem schema lacks `{member}`");
    }

    // Every route is documented, with its security and a problem+json client error.
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        let operation = &paths.get(*path).unwrap_or_else(|| panic!("{path} missing from paths"))[*method];
        assert!(operation.is_object(), "{method} {path} missing from the document");
        assert!(
            operation["summary"].as_str().is_some_and(|s| !s.is_empty() && s.len() <= 80 && !s.contains('\n')),
            "{method} {path} has no one-line summary: {}",
            operation["summary"]
        );
        // Public operations say so (`security: []`) rather than leaving it unsaid.
        let security =
            operation["security"].as_array().unwrap_or_else(|| panic!("{method} {path} has no `security`")).len();
        if PUBLIC.contains(path) {
            assert_eq!(security, 0, "{method} {path} is public");
        } else {
            assert!(security > 0, "{method} {path} has no security requirement");
        }
        let problem_4xx = operation["responses"].as_object().unwrap().iter().any(|(status, response)| {
            status.starts_with('4') && response["content"]["application/problem+json"]["schema"]["$ref"] == PROBLEM_REF
        });
        assert!(problem_4xx, "{method} {path} documents no 4xx problem+json response");
        for (status, response) in operation["responses"].as_object().unwrap() {
            let headers = &response["headers"];
            assert_eq!(
                headers["X-Request-Id"]["$ref"], "#/components/headers/X-Request-Id",
                "{method} {path} {status}"
            );
            if status == "429" || status == "503" {
                assert_eq!(
                    headers["Retry-After"]["$ref"], "#/components/headers/Retry-After",
                    "{method} {path} {status}"
                );
            }
        }
    }
    for (path, status) in [("/api/v1/auth/login", "200"), ("/api/v1/auth/logout", "204")] {
        let set_cookie = &paths[path]["post"]["responses"][status]["headers"]["Set-Cookie"];
        assert!(set_cookie["description"].as_str().is_some_and(|d| d.contains("__Host-praxis_session")), "{path}");
    }
    // ... and nothing else is.
    let documented = paths.values().flat_map(|item| item.as_object().unwrap().keys()).count();
    assert_eq!(documented, ROUTES.len(), "the document has operations that are not in ROUTES");

    // Every documented route is really registered: without credentials it answers anything but
    // "no such route" (401, 400, 415, 200, 503 …).
    let id = uuid::Uuid::new_v4().to_string();
    for (method, path) in ROUTES {
        // A webhook endpoint that no practice configures answers 404 by design; the webhooks
        // tests reach every one of them.
        if path.starts_with("/webhooks/") {
            continue;
        }
        let url = app.url(&path.replace("{id}", &id).replace("{absence_id}", &id));
        let request = match *method {
            "get" => app.client.get(url),
            "post" => app.client.post(url),
            "put" => app.client.put(url),
            "patch" => app.client.patch(url),
            "delete" => app.client.delete(url),
            other => panic!("no client for {other}"),
        };
        let status = request.send().await.unwrap().status().as_u16();
        assert!(status != 404 && status != 405, "{method} {path} answered {status}: not registered?");
    }
    app.stop().await;
}

/// Every operation that reads a typed JSON body documents 415 and answers a body of another media
/// type with it (before anything else is done), for a caller who may call it.
#[actix_web::test]
async fn json_body_operations_answer_other_media_types_with_415() {
    let app = TestApp::start_with(fast_hashing, api::server::no_extra_routes).await;
    let practice = create_practice(&app, "MediaTypes").await;
    let admin = login(&app, practice.tenant, &practice.admin_email).await;
    let doc: Value = serde_json::from_str(&api::openapi_document::document().unwrap()).unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let mut checked = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation["requestBody"]["content"]["application/json"]["schema"].get("$ref").is_none() {
                continue;
            }
            assert_eq!(
                operation["responses"]["415"]["content"]["application/problem+json"]["schema"]["$ref"], PROBLEM_REF,
                "{method} {path} does not document 415"
            );
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = app
                .client
                .request(method.clone(), app.url(&path.replace("{id}", &id)))
                .header("authorization", bearer(&admin))
                .header("content-type", "text/plain")
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 415, "{method} {path}");
            assert_problem(response, 415, "urn:praxis:problem:unsupported-media-type").await;
            checked.push(format!("{method} {path}"));
        }
    }
    assert!(checked.len() >= 15, "only {checked:?} read a JSON body?");
    app.stop().await;
}
