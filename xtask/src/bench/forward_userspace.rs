//! The userspace rows of `cargo xtask bench forward --userspace`: FerroLB's userspace path
//! (forward/examples/userspace_proxy.rs: TPROXY interception and `TcpProxy`) against the same
//! hand-written nftables DNAT baseline, and against HAProxy in TCP mode (Debian's `haproxy`)
//! with the same number of threads, binding `transparent` behind the same interception, so only
//! the proxies differ. Same namespaces, servers and loads as the kernel rows (forward.rs, whose
//! child module this is); goals from issue 6.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{BACKENDS, Comparison, ECHO_PORT, IPERF_PORT, NODE, Subject, VIP, ip_netns};
use crate::run;

/// Worker threads of both proxies: tokio workers for FerroLB, `nbthread` for HAProxy. One,
/// because the load generator, the servers and the proxy share this machine's two cores.
pub(super) const THREADS: usize = 1;

/// The proxy process of the subject installed now (stopped by [`remove`]).
static RUNNING: Mutex<Option<Child>> = Mutex::new(None);

/// The helper binary of the last [`install`], for [`remove`].
static HELPER: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Userspace path vs the nftables baseline (issue 6's goals) and vs HAProxy (at least equal).
pub(super) fn comparisons() -> Vec<Comparison> {
    vec![
        Comparison {
            ours: Subject::Userspace,
            baseline: Subject::NftBaseline,
            min_ratio: [0.75, 0.6, 0.5],
            max_added_p99_us: f64::INFINITY,
        },
        Comparison {
            ours: Subject::Userspace,
            baseline: Subject::Haproxy,
            min_ratio: [1.0, 1.0, 1.0],
            max_added_p99_us: f64::INFINITY,
        },
    ]
}

/// The helper binary, next to the bench's `fwdbench` (`bin`); [`super::run`] builds both.
fn helper(bin: &Path) -> PathBuf {
    bin.with_file_name("userspace_proxy")
}

fn ports() -> String {
    format!("{IPERF_PORT},{ECHO_PORT}")
}

/// Starts `subject`'s proxy in the node namespace and waits until it listens.
pub(super) fn install(subject: Subject, bin: &Path) -> anyhow::Result<()> {
    let helper = helper(bin);
    *HELPER.lock().unwrap_or_else(|e| e.into_inner()) = Some(helper.clone());
    let child = match subject {
        Subject::Userspace => {
            let mut c = ip_netns(NODE);
            c.arg(&helper).args([
                "proxy",
                VIP,
                &ports(),
                &BACKENDS.join(","),
                &THREADS.to_string(),
            ]);
            let mut child = c
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| run::describe(&c))?;
            let mut line = String::new();
            let stdout = child.stdout.take().context("proxy stdout")?;
            BufReader::new(stdout).read_line(&mut line)?;
            if line.trim() != "ready" {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the userspace proxy did not start (said {line:?})");
            }
            child
        }
        Subject::Haproxy => {
            run::status(
                ip_netns(NODE)
                    .arg(&helper)
                    .args(["intercept", VIP, &ports()]),
            )?;
            let cfg = std::env::temp_dir().join("ferrolb-fwdbench-haproxy.cfg");
            std::fs::write(&cfg, haproxy_config())?;
            let mut c = ip_netns(NODE);
            c.args(["haproxy", "-db", "-f"]).arg(&cfg);
            let child = c
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("{} (apt-get install haproxy)", run::describe(&c)))?;
            wait_listening()?;
            child
        }
        other => bail!("{other:?} is no userspace subject"),
    };
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    Ok(())
}

/// Stops the running proxy and removes the interception.
pub(super) fn remove(subject: Subject) -> anyhow::Result<()> {
    let child = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut child) = child {
        match subject {
            // Closing stdin is its clean stop: listeners closed, interception removed.
            Subject::Userspace => drop(child.stdin.take()),
            _ => {
                let _ = child.kill();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Also after a crash of either proxy: nothing of the interception is left.
    let helper = HELPER.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let helper = helper.context("remove before install")?;
    run::status(ip_netns(NODE).arg(helper).arg("remove"))
}

/// HAProxy in TCP mode for the same two ports and backends, round robin like FerroLB
/// (`maxconn` within what the FD limit allows: HAProxy refuses to start above it).
fn haproxy_config() -> String {
    let mut s = format!(
        "global\n  nbthread {THREADS}\n  maxconn 8000\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n"
    );
    for port in [IPERF_PORT, ECHO_PORT] {
        s += &format!("listen p{port}\n  bind {VIP}:{port} transparent\n  balance roundrobin\n");
        for (i, b) in BACKENDS.iter().enumerate() {
            s += &format!("  server b{i} {b}:{port}\n");
        }
    }
    s
}

fn wait_listening() -> anyhow::Result<()> {
    for _ in 0..100 {
        let listening = run::output(ip_netns(NODE).args(["ss", "-Hltn"]))?;
        if [IPERF_PORT, ECHO_PORT]
            .iter()
            .all(|p| listening.contains(&format!("{VIP}:{p} ")))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("haproxy did not start listening on {VIP}")
}
