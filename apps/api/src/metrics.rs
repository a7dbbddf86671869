//! The metrics door: installs the instruments from `[telemetry]`, registers the gauges read from
//! the running state, records every HTTP request, and serves the Prometheus page on its own
//! listener (`telemetry.metrics_bind`), never on the API's port: the page tells anyone who can
//! read it how busy each route is and how many logins fail, which is not for the public.
//!
//! What each metric means and which alerts use it: docs/operations.md, "Metrics".

use crate::config::Config;
use crate::state::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{App, HttpResponse, HttpServer, web};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use telemetry::metrics::MetricsExporter;

/// How often metrics are pushed when an OTLP endpoint is configured.
const OTLP_INTERVAL: Duration = Duration::from_secs(30);

/// Installs the process's instruments as `[telemetry]` says: the Prometheus page when
/// `metrics_bind` is set (and `prometheus` is true), OTLP when `otlp_endpoint` is set. `None`
/// when neither: every recording is then a no-op.
pub fn install(config: &Config, prometheus: bool) -> anyhow::Result<Option<Arc<MetricsExporter>>> {
    let metrics_config = telemetry::metrics::MetricsConfig {
        prometheus: prometheus && config.telemetry.metrics_bind().is_some(),
        otlp_endpoint: config.telemetry.otlp_endpoint.clone(),
        otlp_interval: OTLP_INTERVAL,
        service_name: "praxis".into(),
    };
    Ok(telemetry::metrics::install(&metrics_config)?.map(Arc::new))
}

/// Registers the gauges read from `state` at each collection: the Postgres pool, the DEK cache's
/// counters, and whether the rate limiter runs on its in-process fallback. Once per process.
pub fn observe(state: &AppState) {
    let pool = state.db.clone();
    let max = u64::from(pool.options().get_max_connections());
    telemetry::metrics::observe_db_pool(move || {
        let size = u64::from(pool.size());
        let idle = u64::try_from(pool.num_idle()).unwrap_or(u64::MAX);
        telemetry::metrics::PoolUsage { used: size.saturating_sub(idle), idle, max }
    });
    let cache = state.dek_cache.clone();
    telemetry::metrics::observe_dek_cache(move || {
        let stats = cache.stats();
        (stats.hits, stats.misses)
    });
    let limiter = state.limiter.clone();
    telemetry::metrics::observe_redis_fallback(move || !limiter.redis_healthy());
}

/// Middleware (outermost): records `http.server.request.duration` by route template, method and
/// status class for every answer, refusals of the edge and the guard included.
pub async fn record_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !telemetry::metrics::enabled() {
        return next.call(req).await;
    }
    let started = Instant::now();
    let response = next.call(req).await?;
    let request = response.request();
    telemetry::metrics::record_http_request(
        request.match_pattern().as_deref(),
        request.method().as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    Ok(response)
}

/// Serves `GET /metrics` (the Prometheus text format) on `listener`, with one worker: a scrape
/// every few seconds needs no more. Anything else is 404.
pub fn start_server(exporter: Arc<MetricsExporter>, listener: TcpListener) -> std::io::Result<Server> {
    let exporter = web::Data::from(exporter);
    let server =
        HttpServer::new(move || App::new().app_data(exporter.clone()).route("/metrics", web::get().to(scrape)))
            .workers(1)
            .listen(listener)?
            .run();
    Ok(server)
}

async fn scrape(exporter: web::Data<MetricsExporter>) -> HttpResponse {
    match exporter.render() {
        Ok(page) => HttpResponse::Ok().content_type(exporter.content_type()).body(page),
        Err(error) => {
            tracing::error!(%error, "could not render the metrics page");
            HttpResponse::InternalServerError().finish()
        }
    }
}
