//! Configuration files for the three daemons, from one [`RouterConfig`].

use super::{RouterConfig, Topology};

/// What the generators need to know about the lab besides the router config.
pub struct Ctx<'a> {
    /// The speaker's IPv4 address (the neighbor address).
    pub speaker: &'a str,
    /// The router's own IPv4 address (router id, local address).
    pub router: &'a str,
    /// How the speaker is reached.
    pub topology: Topology,
    /// The daemon's temp dir (logs).
    pub dir: &'a str,
}

pub fn gobgp(c: &RouterConfig, x: &Ctx<'_>) -> String {
    let (speaker, router) = (x.speaker, x.router);
    let pw = c
        .password
        .as_ref()
        .map(|p| format!("    auth-password = \"{p}\"\n"))
        .unwrap_or_default();
    let mut s = format!(
        "[global.config]\n  as = {}\n  router-id = \"{router}\"\n  port = 179\n\
         [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{speaker}\"\n    peer-as = {}\n{pw}",
        c.local_as, c.peer_as
    );
    if let Some(h) = c.hold_time {
        s += &format!(
            "  [neighbors.timers.config]\n    hold-time = {h}\n    keepalive-interval = {}\n",
            (h / 3).max(1)
        );
    }
    if let Some(ttl) = c.multihop {
        s += &format!(
            "  [neighbors.ebgp-multihop.config]\n    enabled = true\n    multihop-ttl = {ttl}\n"
        );
    }
    if c.graceful_restart {
        s += "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 120\n";
    }
    for fam in ["ipv4-unicast", "ipv6-unicast"] {
        s += &format!(
            "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{fam}\"\n"
        );
        if c.graceful_restart {
            s += "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n";
        }
    }
    s
}

pub fn bird(c: &RouterConfig, x: &Ctx<'_>) -> String {
    let (speaker, router, dir) = (x.speaker, x.router, x.dir);
    let mut opts = String::new();
    if let Some(p) = &c.password {
        opts += &format!("  password \"{p}\";\n");
    }
    // `direct`: the speaker is on the link, so iBGP next hops resolve without an IGP.
    if c.local_as == c.peer_as && x.topology == Topology::Direct {
        opts += "  direct;\n";
    }
    if c.bfd {
        opts += "  bfd on;\n";
    }
    if c.graceful_restart {
        opts += "  graceful restart on;\n";
    }
    if let Some(ttl) = c.multihop {
        opts += &format!("  multihop {ttl};\n");
    }
    if let Some(h) = c.min_hold_time {
        opts += &format!("  min hold time {h};\n");
    }
    if let Some(h) = c.hold_time {
        opts += &format!("  hold time {h};\n");
    }
    let bfd_proto = if c.bfd {
        "protocol bfd {\n  interface \"*\" { min rx interval 300 ms; min tx interval 300 ms; multiplier 3; };\n}\n"
    } else {
        ""
    };
    // Multi-hop next hops are resolved recursively in the IGP table: give it the way there.
    let statics = match x.topology {
        Topology::Direct => String::new(),
        Topology::Routed => format!(
            "protocol static {{ ipv4; route {SPEAKER_NET_V4} via {MID_R_V4}; }}\n\
             protocol static {{ ipv6; route {SPEAKER_NET_V6} via {MID_R_V6}; }}\n"
        ),
    };
    format!(
        "router id {router};\nlog \"{dir}/bird.log\" all;\nprotocol device {{}}\n{bfd_proto}{statics}\
         protocol bgp ferrolb {{\n  local {router} as {};\n  neighbor {speaker} as {};\n{opts}\
         \x20 ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n",
        c.local_as, c.peer_as
    )
}

pub fn frr(c: &RouterConfig, x: &Ctx<'_>) -> String {
    let (s, router, dir) = (x.speaker, x.router, x.dir);
    let mut global = String::new();
    let mut nbr = String::new();
    if let Some(p) = &c.password {
        nbr += &format!(" neighbor {s} password {p}\n");
    }
    // bfdd's defaults are 300 ms x 3.
    if c.bfd {
        nbr += &format!(" neighbor {s} bfd\n");
    }
    if let Some(ttl) = c.multihop {
        nbr += &format!(" neighbor {s} ebgp-multihop {ttl}\n");
    }
    if let Some(h) = c.hold_time {
        nbr += &format!(" neighbor {s} timers {} {h}\n", (h / 3).max(1));
    }
    if c.graceful_restart {
        global += " bgp graceful-restart\n";
    }
    if let Some(h) = c.min_hold_time {
        global += &format!(" bgp minimum-holdtime {h}\n");
    }
    format!(
        "frr defaults traditional\nhostname ferrolb-bgptest\nlog file {dir}/bgpd.log debugging\n\
         router bgp {}\n bgp router-id {router}\n no bgp ebgp-requires-policy\n{global}\
         \x20no bgp default ipv4-unicast\n neighbor {s} remote-as {}\n{nbr}\
         \x20address-family ipv4 unicast\n  neighbor {s} activate\n exit-address-family\n\
         \x20address-family ipv6 unicast\n  neighbor {s} activate\n exit-address-family\n",
        c.local_as, c.peer_as
    )
}

/// The speaker's link in the routed topology.
pub const SPEAKER_NET_V4: &str = "198.51.100.0/24";
/// The speaker's IPv6 link in the routed topology.
pub const SPEAKER_NET_V6: &str = "2001:db8:0:2::/64";
/// The middle router on the daemon's link.
pub const MID_R_V4: &str = "192.0.2.254";
/// The middle router on the daemon's link, IPv6.
pub const MID_R_V6: &str = "2001:db8:0:1::254";
/// The middle router on the speaker's link.
pub const MID_S_V4: &str = "198.51.100.1";
/// The middle router on the speaker's link, IPv6.
pub const MID_S_V6: &str = "2001:db8:0:2::1";
/// The speaker's address in the routed topology.
pub const ROUTED_SPEAKER_V4: &str = "198.51.100.11";
/// The speaker's IPv6 address in the routed topology.
pub const ROUTED_SPEAKER_V6: &str = "2001:db8:0:2::11";
