//! Builds the actix-web server: the same function serves production and the integration tests.

use crate::error::ApiError;
use crate::middleware::{EdgeLimits, KnownRoutes, edge, guard};
use crate::state::AppState;
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use std::net::TcpListener;

/// Extra routes mounted beside the real ones (tests use it to reach failure paths such as a
/// handler that errors); production passes [`no_extra_routes`].
pub type ExtraRoutes = fn(&mut web::ServiceConfig);

pub fn no_extra_routes(_: &mut web::ServiceConfig) {}

/// All routes of the API.
pub fn routes(cfg: &mut web::ServiceConfig) {
    crate::health::configure(cfg);
    crate::routes::auth::configure(cfg);
    crate::routes::users::configure(cfg);
    crate::routes::audit::configure(cfg);
    crate::routes::patients::configure(cfg);
    crate::routes::consents::configure(cfg);
    crate::routes::webhooks::configure(cfg);
    crate::routes::appointments::configure(cfg);
    crate::routes::calendar::configure(cfg);
    crate::openapi_document::configure(cfg);
}

/// CORS: only listed origins get CORS headers, credentials only for them; methods and headers
/// are the API's. A request from another origin is not blocked here (non-browser clients send
/// no Origin, and a browser will not let a foreign page read the answer); state-changing
/// cookie-authenticated requests from foreign origins are refused by the CSRF check instead.
fn cors(allowed_origins: &[String]) -> actix_cors::Cors {
    use actix_web::http::{Method, header};
    let mut cors = actix_cors::Cors::default()
        .allowed_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allowed_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static("x-api-key"),
            header::HeaderName::from_static("x-csrf-token"),
        ])
        .expose_headers([
            header::HeaderName::from_static("x-request-id"),
            header::HeaderName::from_static("x-ratelimit-limit"),
            header::HeaderName::from_static("x-ratelimit-remaining"),
            header::HeaderName::from_static("x-ratelimit-reset"),
            header::RETRY_AFTER,
        ])
        .supports_credentials()
        .block_on_origin_mismatch(false)
        .max_age(600);
    // The production refusal of "*" lives in config validation; in development "*" is simply
    // not honoured as a wildcard (credentials with a wildcard are unsafe everywhere).
    for origin in allowed_origins.iter().filter(|o| o.as_str() != "*") {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// Starts serving on `listener`. The returned `Server` must be awaited (or spawned) to run.
pub fn start(state: AppState, listener: TcpListener, extra: ExtraRoutes) -> std::io::Result<Server> {
    let limits = EdgeLimits { body_limit_bytes: state.config.server.body_limit_bytes };
    let workers = match state.config.server.workers {
        0 => std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        n => n,
    };
    let allowed_origins = state.config.cors.allowed_origins.clone();
    let state = web::Data::new(state);
    let known_routes = web::Data::new(KnownRoutes::new(crate::openapi_document::routes()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(known_routes.clone())
            .app_data(web::Data::new(limits))
            .app_data(web::PayloadConfig::new(limits.body_limit_bytes))
            .app_data(web::JsonConfig::default().limit(limits.body_limit_bytes).error_handler(|error, _req| {
                use actix_web::error::JsonPayloadError;
                match error {
                    JsonPayloadError::Overflow { limit } | JsonPayloadError::OverflowKnownLength { limit, .. } => {
                        ApiError::PayloadTooLarge { limit_bytes: limit }.into()
                    }
                    JsonPayloadError::ContentType => ApiError::UnsupportedMediaType.into(),
                    // `JsonBody` reads the body as a raw JSON value first, so what fails here is
                    // the syntax: say where, not what the parser thought.
                    JsonPayloadError::Deserialize(error) if error.line() > 0 => ApiError::BadRequest {
                        detail: format!(
                            "The body is not well-formed JSON (line {}, column {}).",
                            error.line(),
                            error.column()
                        ),
                    }
                    .into(),
                    _ => ApiError::BadRequest { detail: "The body could not be read as JSON.".into() }.into(),
                }
            }))
            .wrap(from_fn(guard))
            .wrap(cors(&allowed_origins))
            .wrap(from_fn(edge))
            .wrap(from_fn(crate::metrics::record_request))
            .configure(routes)
            .configure(extra)
            .default_service(web::to(|| async { Err::<actix_web::HttpResponse, _>(ApiError::NotFound) }))
    })
    .workers(workers)
    .listen(listener)?
    .run();
    Ok(server)
}
