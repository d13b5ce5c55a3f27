use std::net::SocketAddr;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{Error, Metrics, Readiness, Shutdown};

const TEXT: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone)]
struct AppState {
    readiness: Readiness,
    metrics: Metrics,
}

/// The `/healthz`, `/readyz` and `/metrics` routes.
pub fn router(readiness: Readiness, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState { readiness, metrics })
}

/// Binds `addr` now (so a taken port fails start-up) and serves `router` until `shutdown`.
///
/// Returns the bound address, which differs from `addr` when its port is 0.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: Shutdown,
) -> Result<(SocketAddr, JoinHandle<std::io::Result<()>>), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
    });
    Ok((bound, task))
}

async fn healthz() -> impl IntoResponse {
    // Alive means the runtime answers; nothing about the API server belongs here, or a
    // flaky API server would get every FerroLB pod restarted at once.
    (StatusCode::OK, [(header::CONTENT_TYPE, TEXT)], "ok\n")
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.readiness.status() {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, TEXT)],
            "ok\n".to_owned(),
        ),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, TEXT)],
            format!("not ready: {reasons}\n"),
        ),
    }
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], body),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, TEXT)],
            "encoding metrics failed\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    }

    #[tokio::test]
    async fn endpoints_follow_readiness_and_stop_on_shutdown() {
        let readiness = Readiness::new();
        let gate = readiness.gate("services", "waiting for initial list");
        let shutdown = Shutdown::new();
        let app = router(readiness, Metrics::new("test"));
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), app, shutdown.clone())
            .await
            .unwrap();

        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_owned()));
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(body, "not ready: services: waiting for initial list\n");
        gate.mark_ready();
        assert_eq!(get(addr, "/readyz").await, (200, "ok\n".to_owned()));
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("ferrolb_build_info{"), "{body}");
        assert_eq!(get(addr, "/nope").await.0, 404);

        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn taken_port_is_a_bind_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve(
            addr,
            router(Readiness::new(), Metrics::new("test")),
            Shutdown::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.metric_label(), "bind");
    }
}
