//! Builds the actix-web server: the same function serves production and the integration tests.

use crate::error::ApiError;
use crate::middleware::{EdgeLimits, edge};
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
}

/// Starts serving on `listener`. The returned `Server` must be awaited (or spawned) to run.
pub fn start(state: AppState, listener: TcpListener, extra: ExtraRoutes) -> std::io::Result<Server> {
    let limits = EdgeLimits { body_limit_bytes: state.config.server.body_limit_bytes };
    let workers = match state.config.server.workers {
        0 => std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        n => n,
    };
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::Data::new(limits))
            .app_data(web::PayloadConfig::new(limits.body_limit_bytes))
            .app_data(web::JsonConfig::default().limit(limits.body_limit_bytes).error_handler(|error, _req| {
                use actix_web::error::JsonPayloadError;
                match error {
                    JsonPayloadError::Overflow { limit } | JsonPayloadError::OverflowKnownLength { limit, .. } => {
                        ApiError::PayloadTooLarge { limit_bytes: limit }.into()
                    }
                    JsonPayloadError::ContentType => ApiError::UnsupportedMediaType.into(),
                    other => {
                        ApiError::BadRequest { detail: format!("The JSON body could not be read: {other}") }.into()
                    }
                }
            }))
            .wrap(from_fn(edge))
            .configure(routes)
            .configure(extra)
            .default_service(web::to(|| async { Err::<actix_web::HttpResponse, _>(ApiError::NotFound) }))
    })
    .workers(workers)
    .listen(listener)?
    .run();
    Ok(server)
}
