//! The real binary: CLI, environment, TCP and UDP echo, and SIGTERM behaviour.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{Proc, get};
use hyper::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reads_identity_from_env_on_every_port() {
    let p = Proc::start(
        &["http", "--bind", "127.0.0.1", "--port", "0", "--port", "0"],
        &[
            ("POD_NAME", "echo-1"),
            ("POD_NAMESPACE", "lab"),
            ("NODE_NAME", "node-3"),
            ("POD_IP", "198.18.3.4"),
        ],
        2,
    );
    assert_ne!(p.addrs[0].port(), p.addrs[1].port());
    for addr in &p.addrs {
        let a = get(*addr, "/", false, &[]).await;
        let j = a.json();
        assert_eq!(j["pod"], "echo-1");
        assert_eq!(j["namespace"], "lab");
        assert_eq!(j["node"], "node-3");
        assert_eq!(j["podIP"], "198.18.3.4");
        assert_eq!(j["remoteAddr"], a.client_addr.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_without_ports_uses_echo_basic_env_ports() {
    // No --port: echo-basic's HTTP_PORT and H2C_PORT (3000 and 3001 when unset).
    let p = Proc::start(
        &["http", "--bind", "127.0.0.1"],
        &[("HTTP_PORT", "0"), ("H2C_PORT", "0"), ("POD_NAME", "e")],
        2,
    );
    for addr in &p.addrs {
        for h2 in [false, true] {
            assert_eq!(get(*addr, "/", h2, &[]).await.json()["pod"], "e");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sigterm_drains_in_flight_request_then_exits_0() {
    let mut p = Proc::start(
        &[
            "http",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--shutdown-grace-ms",
            "5000",
        ],
        &[],
        1,
    );
    let addr = p.addrs[0];
    let t = Instant::now();
    let slow = tokio::spawn(async move { get(addr, "/?delay=1500ms", false, &[]).await });
    let slow_h2 = tokio::spawn(async move { get(addr, "/?delay=1500ms", true, &[]).await });
    // Both requests are in flight once the server logged both connections.
    assert!(p.wait_log("http connection", Duration::from_secs(5)));
    assert!(p.wait_log("http connection", Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.sigterm();
    assert!(p.wait_log("listeners closed", Duration::from_secs(5)));
    assert!(
        TcpStream::connect(addr).is_err(),
        "no new connections after SIGTERM"
    );
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    assert_eq!(slow_h2.await.unwrap().status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(1500));
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_grace_period_bounds_the_drain() {
    let mut p = Proc::start(
        &[
            "http",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--shutdown-grace-ms",
            "300",
        ],
        &[],
        1,
    );
    let addr = p.addrs[0];
    let stuck = tokio::spawn(async move {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        s.write_all(b"GET /?delay=30s HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    });
    assert!(p.wait_log("http connection", Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    p.sigterm();
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(t.elapsed() < Duration::from_secs(3));
    stuck.await.unwrap();
}

#[test]
fn tcp_echo_and_sigterm() {
    let mut p = Proc::start(
        &[
            "tcp",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--shutdown-grace-ms",
            "3000",
        ],
        &[],
        1,
    );
    let mut c = TcpStream::connect(p.addrs[0]).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut c = c.try_clone().unwrap();
        let payload = payload.clone();
        std::thread::spawn(move || c.write_all(&payload).unwrap())
    };
    let mut got = vec![0u8; payload.len()];
    c.read_exact(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got, payload);

    // SIGTERM: no new connections, the open one still echoes until it closes.
    p.sigterm();
    assert!(p.wait_log("shutting down", Duration::from_secs(5)));
    assert!(TcpStream::connect(p.addrs[0]).is_err());
    c.write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still here");
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0));
}

fn udp_roundtrip(server: std::net::SocketAddr, msg: &[u8]) -> Vec<u8> {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    // UDP: retry a few times rather than trust one datagram.
    for _ in 0..10 {
        c.send_to(msg, server).unwrap();
        if let Ok((n, from)) = c.recv_from(&mut buf) {
            assert_eq!(from, server);
            return buf[..n].to_vec();
        }
    }
    panic!("no UDP answer from {server}");
}

#[test]
fn udp_echo_pure_and_prefixed() {
    let mut p = Proc::start(
        &["udp", "--bind", "127.0.0.1", "--port", "0"],
        &[("POD_NAME", "u-1")],
        1,
    );
    assert_eq!(udp_roundtrip(p.addrs[0], b"hello"), b"hello");
    let q = Proc::start(
        &["udp", "--bind", "127.0.0.1", "--port", "0", "--prefix-pod"],
        &[("POD_NAME", "u-2")],
        1,
    );
    assert_eq!(udp_roundtrip(q.addrs[0], b"hello"), b"u-2: hello");
    p.sigterm();
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn bad_arguments_fail_clearly() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrolb-echo"))
        .args(["http", "--port", "notaport"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrolb-echo"))
        .args(["gopher"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
