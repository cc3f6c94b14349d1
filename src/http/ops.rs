//! The endpoints for machines rather than people: `GET /healthz` (liveness and readiness:
//! storage open, job workers alive) and `GET /metrics` (Prometheus text format).

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};

use super::error::ApiError;
use super::{Body, full};
use crate::device::Device;
use crate::engineio::Engine;
use crate::metrics::{Metrics, Snapshot};
use crate::store::Store;

pub struct Ops {
    pub device: Arc<Device>,
    pub metrics: Arc<Metrics>,
    pub store: Store,
}

impl Ops {
    /// Answers `path` if it is one of these endpoints.
    pub fn handle<'a>(
        &self,
        method: &Method,
        path: &str,
        engines: impl Iterator<Item = &'a Arc<Engine>>,
    ) -> Option<Response<Body>> {
        let response = match path {
            "/healthz" | "/metrics" if method != Method::GET && method != Method::HEAD => {
                ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "read-only").into_response()
            }
            "/healthz" => self.health(),
            "/metrics" => self.metrics(engines),
            _ => return None,
        };
        Some(response)
    }

    fn health(&self) -> Response<Body> {
        let health = self.device.health();
        let status = if health.ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        let mut body = serde_json::json!({
            "status": if health.ok() { "ok" } else { "unhealthy" },
            "storage": health.storage,
            "workers": health.workers,
        });
        if let Some(error) = &health.storage_error {
            body["storageError"] = serde_json::json!(error);
        }
        respond(status, "application/json", body.to_string())
    }

    fn metrics<'a>(&self, engines: impl Iterator<Item = &'a Arc<Engine>>) -> Response<Body> {
        let mut snapshot = Snapshot { healthy: self.device.health().ok(), ..Snapshot::default() };
        for engine in engines {
            let (polling, websocket) = engine.transport_counts();
            snapshot.polling += polling;
            snapshot.websocket += websocket;
        }
        (snapshot.jobs_queued, snapshot.jobs_running) = self.store.job_counts();
        (snapshot.durable_writes, snapshot.flushes) = self.store.durability_stats();
        snapshot.disk_free_bytes = self.store.files().available_space().unwrap_or(0);
        snapshot.disk_total_bytes = self.store.files().total_space().unwrap_or(0);
        let text = self.metrics.render(&snapshot);
        respond(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", text)
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
