//! The HTTP echo, in process: HTTP/1.1 and h2c answers carry echo-basic's fields.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::get;
use ferrolb_echo::Identity;
use ferrolb_echo::http::{HttpOptions, serve};
use ferrolb_echo::net::{BindSpec, bind_tcp};
use hyper::StatusCode;
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

fn identity() -> Identity {
    Identity {
        pod: "echo-7d9f-abcde".into(),
        namespace: "lab".into(),
        node: "node-2".into(),
        pod_ip: "198.18.2.7".into(),
        service: "echo".into(),
        ingress: String::new(),
    }
}

async fn start(ip: IpAddr, delay: Duration) -> Option<Server> {
    let listeners = bind_tcp(&BindSpec {
        addrs: vec![ip],
        ports: vec![0],
    })
    .ok()?;
    let addr = listeners[0].local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let opts = HttpOptions {
        identity: identity(),
        delay,
        grace: Duration::from_secs(5),
    };
    let task = tokio::spawn(serve(listeners, opts, async {
        let _ = rx.await;
    }));
    Some(Server {
        addr,
        stop: Some(tx),
        task,
    })
}

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn check_echo(addr: SocketAddr, h2: bool) {
    let a = get(
        addr,
        "/some/path?q=1&r=two",
        h2,
        &[
            ("x-multi", "one"),
            ("x-multi", "two"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "application/json");
    let j = a.json();
    assert_eq!(j["path"], "/some/path?q=1&r=two");
    assert_eq!(j["host"], addr.to_string());
    assert_eq!(j["method"], "GET");
    assert_eq!(j["proto"], if h2 { "HTTP/2.0" } else { "HTTP/1.1" });
    assert_eq!(j["headers"]["X-Multi"], serde_json::json!(["one", "two"]));
    assert_eq!(
        j["headers"]["X-Forwarded-For"],
        serde_json::json!(["203.0.113.9"])
    );
    assert!(
        j["headers"].get("Host").is_none(),
        "Host is the host field, as in Go"
    );
    assert_eq!(j["namespace"], "lab");
    assert_eq!(j["pod"], "echo-7d9f-abcde");
    assert_eq!(j["service"], "echo");
    assert_eq!(j["ingress"], "");
    assert_eq!(j["node"], "node-2");
    assert_eq!(j["podIP"], "198.18.2.7");
    // Source-IP preservation tests rely on this: the exact client ip:port.
    assert_eq!(j["remoteAddr"], a.client_addr.to_string());
    assert_eq!(j["localAddr"], addr.to_string());
}

#[tokio::test]
async fn http1_echo_has_echo_basic_fields() {
    let s = start(LOCALHOST, Duration::ZERO).await.unwrap();
    check_echo(s.addr, false).await;
    s.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_echo() {
    let s = start(LOCALHOST, Duration::ZERO).await.unwrap();
    check_echo(s.addr, true).await;
    s.stop().await;
}

#[tokio::test]
async fn ipv6_loopback_echo() {
    // Skipped where the test environment has no IPv6 loopback.
    let Some(s) = start(IpAddr::V6(Ipv6Addr::LOCALHOST), Duration::ZERO).await else {
        eprintln!("no ::1 here; skipping");
        return;
    };
    check_echo(s.addr, false).await;
    check_echo(s.addr, true).await;
    let j = get(s.addr, "/", false, &[]).await.json();
    assert!(j["remoteAddr"].as_str().unwrap().starts_with("[::1]:"));
    s.stop().await;
}

#[tokio::test]
async fn health_status_and_set_header() {
    let s = start(LOCALHOST, Duration::ZERO).await.unwrap();
    for path in ["/health", "/healthz"] {
        for h2 in [false, true] {
            let a = get(s.addr, path, h2, &[]).await;
            assert_eq!(a.status, StatusCode::OK, "{path}");
            assert_eq!(&a.body[..], b"OK");
        }
    }
    assert_eq!(
        get(s.addr, "/status/503", false, &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(s.addr, "/status/404", true, &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(s.addr, "/status/abc", false, &[]).await.status,
        StatusCode::BAD_REQUEST
    );

    let a = get(
        s.addr,
        "/",
        false,
        &[("x-echo-set-header", "X-Foo: value1, X-Bar:2")],
    )
    .await;
    assert_eq!(a.headers["x-foo"], "value1");
    assert_eq!(a.headers["x-bar"], "2");
    assert_eq!(a.headers["content-type"], "application/json");
    s.stop().await;
}

#[tokio::test]
async fn delay_query_and_option() {
    let s = start(LOCALHOST, Duration::ZERO).await.unwrap();
    let t = Instant::now();
    let a = get(s.addr, "/?delay=300ms", false, &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let a = get(s.addr, "/?delay=soon", false, &[]).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        a.json()["message"]
            .as_str()
            .unwrap()
            .contains("invalid duration")
    );
    s.stop().await;

    // A delay long enough that a loaded machine's slowness cannot pass for it.
    let s = start(LOCALHOST, Duration::from_secs(1)).await.unwrap();
    let t = Instant::now();
    assert_eq!(get(s.addr, "/x", true, &[]).await.status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_secs(1));
    // Health checks are never delayed.
    let t = Instant::now();
    assert_eq!(
        get(s.addr, "/healthz", false, &[]).await.status,
        StatusCode::OK
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    s.stop().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_and_refuses_new() {
    let s = start(LOCALHOST, Duration::ZERO).await.unwrap();
    let addr = s.addr;
    let slow = tokio::spawn(async move { get(addr, "/?delay=600ms", false, &[]).await });
    let slow2 = tokio::spawn(async move { get(addr, "/?delay=600ms", true, &[]).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stopping = tokio::spawn(s.stop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener must be closed once shutdown began"
    );
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    assert_eq!(slow2.await.unwrap().status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(3), stopping)
        .await
        .expect("server stops once drained")
        .unwrap();
}
