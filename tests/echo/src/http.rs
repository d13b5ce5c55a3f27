//! HTTP echo: HTTP/1.1 and h2c on the same port, answering like Gateway API's `echo-basic`.
//!
//! Routes (as echo-basic): `/health` (and `/healthz`) → 200 `OK`; `/status/NNN` → status NNN,
//! empty body; anything else → 200 with the JSON [`RequestAssertions`]. `?delay=<go duration>`
//! holds the answer; `X-Echo-Set-Header: Name: value, Other: v` sets response headers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, info, trace, warn};

use crate::duration::parse_go_duration;
use crate::headers::{echo_headers, echo_set_headers};
use crate::identity::Identity;
use crate::net::canonical_addr;

/// Largest request body read (and discarded) before answering.
const MAX_BODY: usize = 16 << 20;

/// How the HTTP echo behaves.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Who this backend is.
    pub identity: Identity,
    /// Delay added to every echo answer (not to health checks).
    pub delay: Duration,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub grace: Duration,
}

/// The JSON answer: echo-basic's `RequestAssertions` (without TLS) plus FerroLB extras.
#[derive(Debug, Clone, Serialize)]
pub struct RequestAssertions {
    pub path: String,
    pub host: String,
    pub method: String,
    pub proto: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    pub pod: String,
    pub sni: String,
    /// FerroLB: the node the pod runs on (`NODE_NAME`).
    pub node: String,
    /// FerroLB: the pod IP (`POD_IP`).
    #[serde(rename = "podIP")]
    pub pod_ip: String,
    /// FerroLB: the client `ip:port` this server saw (IPv6 as `[ip]:port`).
    #[serde(rename = "remoteAddr")]
    pub remote_addr: String,
    /// FerroLB: the local `ip:port` the connection arrived on.
    #[serde(rename = "localAddr")]
    pub local_addr: String,
}

#[derive(Debug, Clone, Copy)]
struct ConnInfo {
    remote: SocketAddr,
    local: SocketAddr,
}

/// Serves the HTTP echo on `listeners` until `shutdown` completes; then closes the listeners,
/// lets in-flight requests finish for up to `opts.grace` and returns.
pub async fn serve(
    listeners: Vec<TcpListener>,
    opts: HttpOptions,
    shutdown: impl Future<Output = ()>,
) {
    let opts = Arc::new(opts);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, _) = tokio::sync::watch::channel(false);
    let mut accepters = JoinSet::new();
    for listener in listeners {
        if let Ok(addr) = listener.local_addr() {
            info!(proto = "http", addr = %addr, "listening");
        }
        let mut stop = stop_tx.subscribe();
        let builder = builder.clone();
        let opts = opts.clone();
        let graceful = graceful.clone();
        accepters.spawn(async move {
            loop {
                let (stream, remote) = tokio::select! {
                    _ = stop.changed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let info = ConnInfo {
                    remote: canonical_addr(remote),
                    local: stream.local_addr().map(canonical_addr).unwrap_or(remote),
                };
                debug!(remote = %info.remote, local = %info.local, "http connection");
                let opts = opts.clone();
                let svc = service_fn(move |req| handle(req, info, opts.clone()));
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let fut = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = fut.await {
                        debug!(remote = %info.remote, error = %e, "http connection ended with an error");
                    }
                });
            }
        });
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    while accepters.join_next().await.is_some() {}
    // The accept loops are gone, and with them every other handle on `graceful`.
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        warn!("connection tracker still shared; not draining");
        return;
    };
    info!(
        open = graceful.count(),
        grace_ms = opts.grace.as_millis() as u64,
        "shutting down: listeners closed, draining connections"
    );
    if tokio::time::timeout(opts.grace, graceful.shutdown())
        .await
        .is_err()
    {
        info!("grace period over; closing remaining connections");
    }
    info!("stopped");
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn error_response(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&serde_json::json!({ "message": message })).unwrap_or_default();
    json_response(status, body)
}

/// echo-basic's `/status/NNN`: exactly three digits, else 400.
fn status_route(request_uri: &str) -> StatusCode {
    request_uri
        .strip_prefix("/status/")
        .filter(|d| d.len() == 3 && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::BAD_REQUEST)
}

/// The `delay` query parameter, if any.
fn query_delay(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == "delay")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

async fn handle(
    req: Request<Incoming>,
    conn: ConnInfo,
    opts: Arc<HttpOptions>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let uri = &parts.uri;
    // Go's RequestURI: the request target as sent (absolute-form stays absolute on HTTP/1).
    let request_uri = if parts.version < Version::HTTP_2 && uri.scheme().is_some() {
        uri.to_string()
    } else {
        uri.path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| uri.path().to_owned())
    };
    trace!(remote = %conn.remote, method = %parts.method, uri = %request_uri, "request");
    // Read (and drop) the body, so keep-alive connections stay usable.
    let _ = Limited::new(body, MAX_BODY).collect().await;

    let route = uri.path().replace("//", "/");
    if route == "/health" || route == "/healthz" {
        return Ok(plain(StatusCode::OK, "OK"));
    }
    if route.starts_with("/status/") {
        return Ok(plain(status_route(&request_uri), ""));
    }

    if let Some(d) = query_delay(uri.query()) {
        match parse_go_duration(d) {
            Ok(d) => tokio::time::sleep(d).await,
            Err(e) => return Ok(error_response(StatusCode::INTERNAL_SERVER_ERROR, e)),
        }
    }
    if !opts.delay.is_zero() {
        tokio::time::sleep(opts.delay).await;
    }

    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(hyper::header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    let id = &opts.identity;
    let assertions = RequestAssertions {
        path: request_uri,
        host,
        method: parts.method.to_string(),
        proto: format!("{:?}", parts.version),
        headers: echo_headers(&parts.headers, parts.version == Version::HTTP_2),
        namespace: id.namespace.clone(),
        ingress: id.ingress.clone(),
        service: id.service.clone(),
        pod: id.pod.clone(),
        sni: String::new(),
        node: id.node.clone(),
        pod_ip: id.pod_ip.clone(),
        remote_addr: conn.remote.to_string(),
        local_addr: conn.local.to_string(),
    };
    let body = match serde_json::to_vec_pretty(&assertions) {
        Ok(b) => b,
        Err(e) => {
            return Ok(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            ));
        }
    };
    let mut resp = json_response(StatusCode::OK, body);
    for (name, value) in echo_set_headers(&parts.headers) {
        resp.headers_mut().insert(name, value);
    }
    // As echo-basic: Content-Type is set after the requested headers, so it stays JSON.
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_routes() {
        assert_eq!(status_route("/status/404"), StatusCode::NOT_FOUND);
        assert_eq!(status_route("/status/503"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_route("/status/42"), StatusCode::BAD_REQUEST);
        assert_eq!(status_route("/status/404?x=1"), StatusCode::BAD_REQUEST);
        assert_eq!(status_route("/status/099"), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn delay_param() {
        assert_eq!(query_delay(Some("a=1&delay=2s")), Some("2s"));
        assert_eq!(query_delay(Some("delay")), None);
        assert_eq!(query_delay(Some("nodelay=1")), None);
        assert_eq!(query_delay(None), None);
    }
}
