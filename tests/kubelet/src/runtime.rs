//! The I/O a pod needs: container processes, signals, probes over the network, the
//! ServiceAccount token files and the crash-recovery record.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::env::{SourceRef, Sources};
use crate::error::{Error, Result};
use crate::net;
use crate::probe::Check;

/// Where a pod finds its ServiceAccount credentials.
pub const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Lifetime asked for in TokenRequests (the kubelet's default).
pub const TOKEN_SECONDS: i64 = 3600;

/// Bind-mounts `$1` read-only on `$2` (inside the fresh private mount namespace made by
/// `unshare`) and then becomes the container program.
const MOUNT_AND_EXEC: &str =
    r#"mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && shift 2 && exec "$@""#;

/// How to start one container process.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// The pod's network namespace; `None` runs in the node's (hostNetwork).
    pub netns: Option<String>,
    /// The per-pod ServiceAccount directory to mount at [`SA_MOUNT`], if any.
    pub sa_dir: Option<PathBuf>,
    /// The program (absolute path).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its complete environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// stdout and stderr go here (appended).
    pub log: PathBuf,
}

/// Starts the process in its own process group (its pid is the group id), in a private
/// mount namespace, inside the pod's network namespace.
pub fn spawn(s: &Spawn) -> Result<Child> {
    let mut cmd = match &s.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "unshare"]);
            c
        }
        None => Command::new("unshare"),
    };
    cmd.args(["--mount", "--propagation", "private", "--"]);
    if let Some(dir) = &s.sa_dir {
        cmd.args(["sh", "-c", MOUNT_AND_EXEC, "ferrolb-container"])
            .arg(dir)
            .arg(SA_MOUNT);
    }
    cmd.arg(&s.program).args(&s.args);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s.log)
        .map_err(Error::io(&s.log))?;
    let log2 = log.try_clone().map_err(Error::io(&s.log))?;
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&s.cwd)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    cmd.spawn().map_err(|e| Error::Command {
        command: format!("{} {}", s.program.display(), s.args.join(" ")),
        detail: e.to_string(),
    })
}

/// Exit code and signal of a finished process, the way container statuses report them.
pub fn exit_of(status: std::process::ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (-1, None),
    }
}

/// Sends `signal` (`TERM`, `KILL`) to process group `pgid`.
pub async fn signal_group(pgid: u32, signal: &str) {
    let _ = net::run("kill", &[&format!("-{signal}"), "--", &format!("-{pgid}")]).await;
}

/// Runs one probe check against `ip` with `timeout`.
pub async fn check(check: &Check, ip: IpAddr, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, check_inner(check, ip))
        .await
        .unwrap_or(false)
}

async fn check_inner(check: &Check, ip: IpAddr) -> bool {
    match check {
        Check::Always => true,
        Check::Invalid(_) => false,
        Check::Tcp { ports } => {
            for port in ports {
                if TcpStream::connect(SocketAddr::new(ip, *port))
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            true
        }
        Check::Http {
            port,
            path,
            host,
            headers,
            https,
        } => {
            // `host` is where to connect (the pod IP by default), not the Host header.
            let target = host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(ip);
            let Ok(mut conn) = TcpStream::connect(SocketAddr::new(target, *port)).await else {
                return false;
            };
            if *https {
                return true;
            }
            let has_host = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
            let mut req = format!("GET {path} HTTP/1.1\r\n");
            if !has_host {
                req.push_str(&format!("Host: {}\r\n", SocketAddr::new(target, *port)));
            }
            req.push_str("User-Agent: kube-probe/1.34\r\nAccept: */*\r\nConnection: close\r\n");
            for (k, v) in headers {
                req.push_str(&format!("{k}: {v}\r\n"));
            }
            req.push_str("\r\n");
            if conn.write_all(req.as_bytes()).await.is_err() {
                return false;
            }
            let mut buf = vec![0u8; 1024];
            let mut got = 0;
            while got < buf.len() {
                match conn.read(&mut buf[got..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
                if buf[..got].contains(&b'\n') {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..got]);
            head.split_whitespace()
                .nth(1)
                .and_then(|code| code.parse::<u16>().ok())
                .is_some_and(|code| (200..400).contains(&code))
        }
    }
}

/// Writes `contents` to `dir/name` so readers never see a partial file.
fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("..{name}.tmp"));
    std::fs::write(&tmp, contents).map_err(Error::io(&tmp))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(Error::io(&path))
}

/// The pod a token is bound to.
#[derive(Debug, Clone)]
pub struct TokenFor<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Pod name.
    pub pod: &'a str,
    /// Pod uid.
    pub uid: &'a str,
    /// ServiceAccount name.
    pub service_account: &'a str,
}

/// Gets a pod-bound token through the TokenRequest API and writes `token`, `ca.crt` and
/// `namespace` into `dir`. Returns the token's lifetime.
pub async fn write_token(client: &kube::Client, t: &TokenFor<'_>, dir: &Path) -> Result<Duration> {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), t.namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            // Empty: the API server's own audience, as for the kubelet's projected token.
            audiences: vec![],
            expiration_seconds: Some(TOKEN_SECONDS),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(t.pod.into()),
                uid: Some(t.uid.into()),
            }),
        },
        ..Default::default()
    };
    let what = format!(
        "token for ServiceAccount {}/{}",
        t.namespace, t.service_account
    );
    let issued = sas
        .create_token_request(t.service_account, &PostParams::default(), &request)
        .await
        .map_err(Error::kube(&what))?;
    let status = issued.status.ok_or_else(|| Error::Command {
        command: what.clone(),
        detail: "TokenRequest answered without a status".into(),
    })?;
    // The CA as the kubelet projects it: from the namespace's kube-root-ca.crt ConfigMap.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), t.namespace);
    let ca = cms
        .get("kube-root-ca.crt")
        .await
        .map_err(Error::kube(format!(
            "ConfigMap {}/kube-root-ca.crt",
            t.namespace
        )))?
        .data
        .and_then(|mut d| d.remove("ca.crt"))
        .unwrap_or_default();
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    write_atomic(dir, "ca.crt", ca.as_bytes())?;
    write_atomic(dir, "namespace", t.namespace.as_bytes())?;
    write_atomic(dir, "token", status.token.as_bytes())?;
    let lifetime = status
        .expiration_timestamp
        .0
        .duration_since(k8s_openapi::jiff::Timestamp::now())
        .try_into()
        .unwrap_or(Duration::from_secs(600));
    Ok(lifetime)
}

/// Fetches the ConfigMaps and Secrets an environment refers to; missing ones are left out
/// (the resolver decides whether that is an error).
pub async fn fetch_sources(
    client: &kube::Client,
    namespace: &str,
    refs: &[SourceRef],
) -> Result<Sources> {
    let mut sources = Sources::default();
    for r in refs {
        match r {
            SourceRef::ConfigMap(name) => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
                let got = api
                    .get_opt(name)
                    .await
                    .map_err(Error::kube(format!("ConfigMap {name}")))?;
                if let Some(cm) = got {
                    sources
                        .config_maps
                        .insert(name.clone(), cm.data.unwrap_or_default());
                }
            }
            SourceRef::Secret(name) => {
                let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
                let got = api
                    .get_opt(name)
                    .await
                    .map_err(Error::kube(format!("Secret {name}")))?;
                if let Some(s) = got {
                    let data: BTreeMap<String, String> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect();
                    sources.secrets.insert(name.clone(), data);
                }
            }
        }
    }
    Ok(sources)
}

/// What a crashed kubelet left behind for one pod, written under `<state>/pods/<uid>/`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// Pod namespace/name, for logs.
    pub pod: String,
    /// Its network namespace, if it has its own.
    pub netns: Option<String>,
    /// Process groups of its running containers.
    pub pgids: Vec<u32>,
}

/// The record's file.
pub fn record_path(pod_dir: &Path) -> PathBuf {
    pod_dir.join("pod.json")
}

/// Saves the record.
pub fn save_record(pod_dir: &Path, record: &Record) -> Result<()> {
    let json = serde_json::to_vec_pretty(record).expect("a Record serializes");
    write_atomic(pod_dir, "pod.json", &json)
}

/// Kills what a record lists (only processes still running one of our `bin_dir` programs,
/// so a recycled pid is left alone) and deletes its namespace.
pub async fn clean_record(record: &Record, bin_dir: &Path) {
    for pgid in &record.pgids {
        let cmdline = std::fs::read(format!("/proc/{pgid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(&*bin_dir.to_string_lossy());
        if ours {
            signal_group(*pgid, "KILL").await;
        }
    }
    if let Some(ns) = &record.netns {
        net::delete(ns).await;
    }
}
