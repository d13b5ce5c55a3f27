//! Helpers shared by the integration tests: clients for HTTP/1.1 and h2c, and a way to run the
//! real binary and learn the ports it bound.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// One answer: status, headers, body, and the client's local address.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub client_addr: SocketAddr,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Sends one request over a fresh connection, HTTP/1.1 or h2c with prior knowledge.
pub async fn get(addr: SocketAddr, path: &str, h2: bool, headers: &[(&str, &str)]) -> Answer {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let client_addr = stream.local_addr().unwrap();
    let io = TokioIo::new(stream);
    let authority = addr.to_string();
    let mut builder = Request::get(if h2 {
        format!("http://{authority}{path}")
    } else {
        path.to_owned()
    });
    if !h2 {
        builder = builder.header("host", &authority);
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder.body(Empty::<Bytes>::new()).unwrap();
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        send.send_request(req).await.expect("h2 request")
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("http1 handshake");
        tokio::spawn(conn);
        send.send_request(req).await.expect("http1 request")
    };
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
        client_addr,
    }
}

/// The real binary, running; its bound addresses parsed from its log.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub addrs: Vec<SocketAddr>,
    pub log: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `ferrolb-echo <args>` with `env`, waits for `listeners` "listening" lines.
    pub fn start(args: &[&str], env: &[(&str, &str)], listeners: usize) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrolb-echo"));
        cmd.args(args)
            .env("RUST_LOG", "debug")
            .env_remove("POD_NAME")
            .env_remove("NAMESPACE")
            .env_remove("POD_NAMESPACE")
            .env_remove("NODE_NAME")
            .env_remove("POD_IP")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ferrolb-echo");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[echo] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addrs = Vec::new();
        while addrs.len() < listeners {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("ferrolb-echo did not report its listeners");
            if line.contains("listening")
                && let Some(a) = line.split("addr=").nth(1)
            {
                addrs.push(a.split_whitespace().next().unwrap().parse().unwrap());
            }
        }
        Proc {
            child,
            addrs,
            log: rx,
        }
    }

    /// Sends SIGTERM (through kill(1): the workspace forbids unsafe code).
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the process to exit, up to `timeout`; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
