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
use serde_json::{Value, json};

use super::{
    Args, BACKENDS, Comparison, ECHO_PORT, Figure, IPERF_PORT, NODE, Subject, VIP, ip_netns, load,
    verdict,
};
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

/// Length of one soak window.
pub(super) const WINDOW_S: u64 = 10;

/// Issue 6: the connection rate may decline by less than this over the soak.
const MAX_DECLINE: f64 = 0.10;

/// `--soak` (at least two windows, checked before anything runs): connect/request/close
/// through the userspace path for `seconds`, as back-to-back 10 s loads (the load generator
/// restarts between windows; the proxy, its TIME_WAIT sockets and the node's state carry over);
/// `baseline` is the same run's median nftables rate. Just before, the same soak through the
/// nftables baseline is the control: how much the machine alone declines.
pub(super) fn soak(bin: &Path, args: &Args, seconds: u64, baseline: f64) -> anyhow::Result<Value> {
    let control = soak_windows(bin, args, seconds, Subject::NftBaseline)?;
    let windows = soak_windows(bin, args, seconds, Subject::Userspace)?;
    let rates = |w: &[Figure]| w.iter().map(|f| f.rate).collect::<Vec<_>>();
    let decline_of = |w: &[Figure]| 1.0 - w[w.len() - 1].rate / w[0].rate;
    let control_decline = decline_of(&control);
    let (first, last) = (windows[0].rate, windows[windows.len() - 1].rate);
    let decline = decline_of(&windows);
    // The weakest window too: a dip that recovers by the end is visible, if not the goal.
    let lowest = rates(&windows).into_iter().fold(f64::INFINITY, f64::min);
    let mean = rates(&windows).iter().sum::<f64>() / windows.len() as f64;
    let ratio = mean / baseline;
    println!(
        "\nferrolb userspace connect/request/close soak, {seconds} s in {WINDOW_S} s windows ({} connections)",
        args.connections
    );
    let shown = |w: &[Figure]| {
        rates(w)
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("per window /s          {}", shown(&windows));
    println!(
        "decline last vs first  {:.1}% ({first:.0} -> {last:.0}/s)  goal < {:.0}%  {}",
        decline * 100.0,
        MAX_DECLINE * 100.0,
        verdict(decline < MAX_DECLINE)
    );
    println!(
        "lowest window          {lowest:.0}/s, {:.1}% below the first",
        (1.0 - lowest / first) * 100.0
    );
    println!(
        "mean vs nft baseline   {mean:.0}/s vs {baseline:.0}/s: {ratio:.3}  goal >= 0.5  {}",
        verdict(ratio >= 0.5)
    );
    println!(
        "control: nft baseline  {} /s, decline {:.1}% (the machine's share)",
        shown(&control),
        control_decline * 100.0
    );
    Ok(json!({
        "seconds": seconds, "window_s": WINDOW_S,
        "per_s": rates(&windows),
        "p99_us": windows.iter().map(|f| f.p99_us).collect::<Vec<_>>(),
        "control": {"subject": Subject::NftBaseline.name(), "per_s": rates(&control),
            "decline": control_decline},
        "decline": decline, "lowest_per_s": lowest, "goal_decline_max": MAX_DECLINE, "decline_ok": decline < MAX_DECLINE,
        "mean_per_s": mean, "baseline_per_s": baseline, "ratio": ratio, "ratio_ok": ratio >= 0.5,
    }))
}

/// The connect/request/close rate through `subject` per soak window.
fn soak_windows(
    bin: &Path,
    args: &Args,
    seconds: u64,
    subject: Subject,
) -> anyhow::Result<Vec<Figure>> {
    let mut windows = Vec::new();
    subject.install(bin)?;
    let measured = (|| -> anyhow::Result<()> {
        for w in 0..seconds.div_ceil(WINDOW_S) {
            let secs = WINDOW_S.min(seconds - w * WINDOW_S);
            let window = Args {
                seconds: secs as f64,
                ..args.clone()
            };
            let f = load(bin, "crr", &window)?;
            eprintln!(
                "soak {:<18} {:>4}-{:<4} s  crr {:.0}/s p99 {:.1} us",
                subject.name(),
                w * WINDOW_S,
                w * WINDOW_S + secs,
                f.rate,
                f.p99_us
            );
            windows.push(f);
        }
        Ok(())
    })();
    subject.remove()?;
    measured?;
    Ok(windows)
}
