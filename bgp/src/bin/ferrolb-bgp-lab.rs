//! `ferrolb-bgp-lab`: peer with routers and announce prefixes given on the command line, for
//! tests and for operators debugging a peering. Runs until SIGTERM/SIGINT, then withdraws
//! everything and closes with Cease/Administrative Shutdown.

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferrolb_bgp::{BfdSettings, PeerConfig, RouteAttrs, Speaker, SpeakerConfig};
use ferrolb_core::bgp::fsm::{AutoRestart, ConnectMode, GracefulRestartConfig};
use ferrolb_core::bgp::{Community, ForwardingState, LargeCommunity, RestartState};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// Peer with BGP routers and announce prefixes.
#[derive(Debug, Parser)]
#[command(name = "ferrolb-bgp-lab", version)]
struct Args {
    /// Our ASN.
    #[arg(long)]
    local_as: u32,
    /// Our BGP identifier.
    #[arg(long)]
    router_id: Ipv4Addr,
    /// A peer as ADDRESS:ASN (IPv6 as [ADDRESS]:ASN); repeatable.
    #[arg(long = "peer", required = true, value_parser = parse_peer)]
    peers: Vec<(IpAddr, u32)>,
    /// TCP port to dial on the peers.
    #[arg(long, default_value_t = 179)]
    peer_port: u16,
    /// Addresses to accept connections on; `none` to only dial.
    #[arg(long, default_values_t = ["0.0.0.0:179".to_string(), "[::]:179".to_string()])]
    listen: Vec<String>,
    /// Only accept connections, never dial.
    #[arg(long)]
    passive: bool,
    /// Source address for dialling.
    #[arg(long)]
    source: Option<IpAddr>,
    /// TCP-MD5 password (RFC 2385).
    #[arg(long, env = "FERROLB_BGP_PASSWORD")]
    password: Option<String>,
    /// Multi-hop: the TTL to send with (default: 1 for eBGP, 255 for iBGP).
    #[arg(long)]
    multihop: Option<u8>,
    /// Hold time to propose, in seconds (0 or >= 3).
    #[arg(long, default_value_t = 90)]
    hold_time: u16,
    /// Seconds between dial attempts and before restarting a failed session.
    #[arg(long, default_value_t = 5)]
    connect_retry: u64,
    /// A prefix to announce; repeatable.
    #[arg(long = "advertise")]
    advertise: Vec<IpNet>,
    /// A community (ASN:VALUE or a well-known name) on every announced prefix; repeatable.
    #[arg(long = "community", value_parser = parse_community)]
    communities: Vec<Community>,
    /// A large community (GLOBAL:LOCAL1:LOCAL2); repeatable.
    #[arg(long = "large-community", value_parser = parse_large)]
    large_communities: Vec<LargeCommunity>,
    /// LOCAL_PREF (sent to iBGP peers only).
    #[arg(long)]
    local_pref: Option<u32>,
    /// MULTI_EXIT_DISC.
    #[arg(long)]
    med: Option<u32>,
    /// IPv4 next hop instead of the session's local address.
    #[arg(long)]
    next_hop_v4: Option<Ipv4Addr>,
    /// IPv6 next hop (needed for IPv6 prefixes over an IPv4 session).
    #[arg(long)]
    next_hop_v6: Option<Ipv6Addr>,
    /// Run BFD (RFC 5881, UDP 3784) with every peer; BFD down resets the BGP session.
    #[arg(long)]
    bfd: bool,
    /// BFD desired minimum transmit and required minimum receive interval, in milliseconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    bfd_interval_ms: u64,
    /// BFD detect multiplier.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..))]
    bfd_multiplier: u8,
    /// Graceful restart (RFC 4724): advertise it with this restart time in seconds (1-4095).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4095))]
    graceful_restart: Option<u16>,
    /// This process replaces one that went away: set the Restart State bit so peers keep our
    /// routes until our End-of-RIB.
    #[arg(long, requires = "graceful_restart")]
    restarting: bool,
    /// Also read `advertise PREFIX` / `withdraw PREFIX` lines from stdin.
    #[arg(long)]
    stdin: bool,
}

fn parse_peer(s: &str) -> Result<(IpAddr, u32), String> {
    let (addr, asn) = s
        .rsplit_once(':')
        .ok_or("expected ADDRESS:ASN, e.g. 192.0.2.1:64500")?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = addr.parse().map_err(|e| format!("address {addr:?}: {e}"))?;
    let asn: u32 = asn.parse().map_err(|e| format!("ASN {asn:?}: {e}"))?;
    if asn == 0 {
        return Err("ASN 0 is reserved".into());
    }
    Ok((ip, asn))
}

fn parse_community(s: &str) -> Result<Community, String> {
    Community::parse(s).ok_or_else(|| format!("community {s:?}: expected ASN:VALUE or a name"))
}

fn parse_large(s: &str) -> Result<LargeCommunity, String> {
    let parts: Vec<u32> = s
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("large community {s:?}: {e}"))?;
    match parts.as_slice() {
        [g, l1, l2] => Ok(LargeCommunity {
            global_admin: *g,
            local1: *l1,
            local2: *l2,
        }),
        _ => Err(format!(
            "large community {s:?}: expected GLOBAL:LOCAL1:LOCAL2"
        )),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.hold_time != 0 && args.hold_time < 3 {
        bail!("--hold-time must be 0 or at least 3 (RFC 4271)");
    }
    let listen = if args.listen.iter().any(|l| l == "none") {
        Vec::new()
    } else {
        args.listen
            .iter()
            .map(|l| {
                l.parse::<SocketAddr>()
                    .with_context(|| format!("--listen {l}"))
            })
            .collect::<Result<_>>()?
    };
    let speaker = Speaker::new(SpeakerConfig { listen }).await?;
    for (address, peer_as) in &args.peers {
        let mut session =
            ferrolb_core::bgp::PeerConfig::new(args.local_as, *peer_as, args.router_id);
        session.hold_time = args.hold_time;
        session.connect_retry = Duration::from_secs(args.connect_retry);
        session.auto_restart = AutoRestart::After(Duration::from_secs(args.connect_retry));
        if args.passive {
            session.mode = ConnectMode::Passive;
        }
        session.graceful_restart = args.graceful_restart.map(|t| GracefulRestartConfig {
            restart_time: t,
            restart_state: if args.restarting {
                RestartState::Restarting
            } else {
                RestartState::Normal
            },
            // The announced VIPs are served by the node's forwarding plane, which outlives
            // this process: forwarding state is preserved across our restart.
            forwarding: ForwardingState::Preserved,
        });
        let mut peer = PeerConfig::new(*address, session);
        peer.port = args.peer_port;
        peer.source = args.source;
        peer.multihop = args.multihop;
        peer.password = args.password.clone();
        peer.next_hop_v4 = args.next_hop_v4;
        peer.next_hop_v6 = args.next_hop_v6;
        if args.bfd {
            let interval = Duration::from_millis(args.bfd_interval_ms);
            peer.bfd = Some(BfdSettings {
                min_tx: interval,
                min_rx: interval,
                multiplier: args.bfd_multiplier,
            });
        }
        speaker.add_peer(peer)?;
    }
    let attrs = RouteAttrs {
        communities: args.communities.clone(),
        large_communities: args.large_communities.clone(),
        local_pref: args.local_pref,
        med: args.med,
    };
    for p in &args.advertise {
        speaker.advertise(*p, attrs.clone());
    }
    if args.stdin {
        tokio::spawn(stdin_commands(speaker.clone(), attrs));
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: withdrawing and closing sessions"),
        _ = int.recv() => info!("SIGINT: withdrawing and closing sessions"),
    }
    speaker.shutdown().await;
    Ok(())
}

/// Applies `advertise PREFIX` / `withdraw PREFIX` lines until stdin closes.
async fn stdin_commands(speaker: Speaker, attrs: RouteAttrs) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split_whitespace();
        let (Some(cmd), Some(prefix)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(prefix) = prefix.parse::<IpNet>() else {
            warn!(line, "stdin: bad prefix");
            continue;
        };
        match cmd {
            "advertise" => speaker.advertise(prefix, attrs.clone()),
            "withdraw" => speaker.withdraw(prefix),
            _ => warn!(
                line,
                "stdin: expected `advertise PREFIX` or `withdraw PREFIX`"
            ),
        }
    }
}
