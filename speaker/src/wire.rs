//! The wire: one raw AF_PACKET socket per announcing interface (pnet's datalink channel, which
//! does the unsafe socket work in a crate used for years, so this crate stays `unsafe`-free).
//!
//! A thread per interface reads frames, asks core's `decide_arp` / `decide_ndp` and sends the
//! reply; the announcer updates the shared [`ResponderState`] and sends gratuitous rounds.
//! Solicited-node groups are joined through an IPv6 UDP socket bound to nothing: the kernel
//! then programs the interface's multicast filter and sends MLD reports, but, the VIP not
//! being a local address, never answers for it itself.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use ferrolb_core::announce::InterfaceView;
use ferrolb_core::l2::responder::gratuitous_frames;
use ferrolb_core::l2::{
    Decision, DropReason, IpStatus, MacAddr, ResponderState, decide_arp, decide_ndp,
};
use pnet_datalink::{Channel, DataLinkSender, NetworkInterface};
use tracing::{debug, info, trace, warn};

use crate::metrics::SpeakerMetrics;

// The receive thread wakes this often to notice it should stop.
const READ_TIMEOUT: Duration = Duration::from_millis(100);

// Advertisements come from the VIP itself, as the Linux kernel sends them for its own
// addresses: ndisc6 ignores an answer from another source (the kernel's neighbour cache
// accepts both), so core's link-local default is turned off (ADR 0012).
const NA_SOURCE_LINK_LOCAL: bool = false;

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ICMPV6: u8 = 58;
const NDP_NS: u8 = 135;
const NDP_NA: u8 = 136;

/// What a frame is, from a cheap peek, so unrelated traffic costs no decode and no log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Arp,
    Ndp,
    Other,
}

fn peek(frame: &[u8]) -> Kind {
    let at = |i: usize| {
        frame
            .get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let (ethertype, l3) = match at(12) {
        Some(ETHERTYPE_VLAN) => (at(16), 18),
        t => (t, 14),
    };
    match ethertype {
        Some(ETHERTYPE_ARP) => Kind::Arp,
        Some(ETHERTYPE_IPV6)
            if frame.get(l3 + 6) == Some(&ICMPV6)
                && matches!(frame.get(l3 + 40), Some(&NDP_NS) | Some(&NDP_NA)) =>
        {
            Kind::Ndp
        }
        _ => Kind::Other,
    }
}

/// A metric label for a drop reason (bounded set).
pub fn drop_label(r: &DropReason) -> &'static str {
    match r {
        DropReason::Malformed(_) => "malformed",
        DropReason::InvalidNdp(_) => "invalid_ndp",
        DropReason::NotArp => "not_arp",
        DropReason::NotArpRequest => "not_arp_request",
        DropReason::NotNeighborSolicitation => "not_neighbor_solicitation",
        DropReason::FromOurselves => "from_ourselves",
        DropReason::BadSenderMac => "bad_sender_mac",
        DropReason::SenderUsesOurIp { .. } => "sender_uses_our_ip",
        DropReason::GratuitousFromOthers => "gratuitous_from_others",
        DropReason::NotOurIp => "not_our_ip",
        DropReason::WrongInterface { .. } => "wrong_interface",
        DropReason::NotOwner { .. } => "not_owner",
        DropReason::NotEligible(_) => "not_eligible",
        DropReason::NotYetAnnounced => "not_yet_announced",
        DropReason::NoOwner => "no_owner",
    }
}

/// This node's interfaces as the election sees them, plus what the wire needs (index, MAC,
/// link-local address). From getifaddrs through pnet: no `ip` binary, no netlink stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name and addresses (link-local ones left out: they are in no Service subnet).
    pub view: InterfaceView,
    /// Kernel index.
    pub index: u32,
    /// MAC.
    pub mac: MacAddr,
    /// First IPv6 link-local address, the source of our advertisements.
    pub link_local: Option<Ipv6Addr>,
}

/// Up, non-loopback Ethernet interfaces with their addresses.
pub fn interfaces() -> Vec<Interface> {
    let mut out: Vec<Interface> = pnet_datalink::interfaces()
        .into_iter()
        .filter(|i| i.is_up() && !i.is_loopback())
        .filter_map(|i| {
            let m = i.mac?;
            let mac = MacAddr([m.0, m.1, m.2, m.3, m.4, m.5]);
            if !mac.is_unicast() {
                return None;
            }
            let link_local = i.ips.iter().find_map(|n| match n.ip() {
                IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(v6),
                _ => None,
            });
            let addrs = i
                .ips
                .iter()
                .filter(|n| !matches!(n.ip(), IpAddr::V6(v6) if v6.is_unicast_link_local()))
                .filter_map(|n| ipnet::IpNet::new(n.ip(), n.prefix()).ok())
                .collect();
            Some(Interface {
                view: InterfaceView {
                    name: i.name.clone(),
                    addrs,
                },
                index: i.index,
                mac,
                link_local,
            })
        })
        .collect();
    out.sort_by(|a, b| a.view.name.cmp(&b.view.name));
    out
}

struct Port {
    state: Arc<RwLock<ResponderState>>,
    tx: Arc<Mutex<Box<dyn DataLinkSender>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    index: u32,
    groups: Option<UdpSocket>,
}

/// The open raw sockets, one per interface we announce on.
pub struct Wire {
    ports: HashMap<String, Port>,
    statuses: BTreeMap<IpAddr, IpStatus>,
    /// IPs given to another live node that this node answers for until the new owner's
    /// gratuitous packet is seen (or the deadline passes): make-before-break, no gap.
    handovers: Handovers,
    metrics: SpeakerMetrics,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("ports", &self.ports.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why the wire could not do something.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The interface is not (or no longer) on this node.
    #[error("interface {0} not found")]
    NoInterface(String),
    /// Opening the raw socket failed (needs CAP_NET_RAW).
    #[error("opening a raw socket on {interface}")]
    Open {
        /// Interface.
        interface: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// pnet gave a channel type we did not ask for.
    #[error("interface {0}: not an Ethernet channel")]
    NotEthernet(String),
}

impl Wire {
    /// No sockets yet; they open on the first announcement on each interface.
    pub fn new(metrics: SpeakerMetrics) -> Self {
        Self {
            ports: HashMap::new(),
            statuses: BTreeMap::new(),
            handovers: Handovers::default(),
            metrics,
        }
    }

    /// Opens the raw socket on `iface` unless it is open (and refreshes its MAC/link-local).
    pub fn ensure(&mut self, iface: &Interface) -> Result<(), WireError> {
        let name = iface.view.name.clone();
        if let Some(port) = self.ports.get(&name) {
            let mut st = port.state.write().unwrap_or_else(|e| e.into_inner());
            st.mac = iface.mac;
            st.link_local = NA_SOURCE_LINK_LOCAL.then_some(iface.link_local).flatten();
            return Ok(());
        }
        let ni: NetworkInterface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| WireError::NoInterface(name.clone()))?;
        let config = pnet_datalink::Config {
            read_timeout: Some(READ_TIMEOUT),
            // Broadcast ARP and (joined) multicast NS reach us without it.
            promiscuous: false,
            ..Default::default()
        };
        let (tx, rx) = match pnet_datalink::channel(&ni, config) {
            Ok(Channel::Ethernet(tx, rx)) => (tx, rx),
            Ok(_) => return Err(WireError::NotEthernet(name)),
            Err(source) => {
                return Err(WireError::Open {
                    interface: name,
                    source,
                });
            }
        };
        let state = Arc::new(RwLock::new(ResponderState {
            interface: name.clone(),
            mac: iface.mac,
            link_local: iface.link_local,
            ips: self.statuses.clone(),
        }));
        let tx = Arc::new(Mutex::new(tx));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, tx, stop, metrics, handovers) = (
                state.clone(),
                tx.clone(),
                stop.clone(),
                self.metrics.clone(),
                self.handovers.clone(),
            );
            std::thread::Builder::new()
                .name(format!("l2-{name}"))
                .spawn(move || receive(rx, state, tx, stop, metrics, handovers))
                .map_err(|source| WireError::Open {
                    interface: name.clone(),
                    source,
                })?
        };
        let groups = match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)) {
            Ok(s) => Some(s),
            Err(err) => {
                warn!(interface = %name, error = %err, "no IPv6 socket: solicited-node groups not joined");
                None
            }
        };
        info!(interface = %name, mac = %iface.mac, "answering ARP and NDP");
        self.ports.insert(
            name,
            Port {
                state,
                tx,
                stop,
                thread: Some(thread),
                index: iface.index,
                groups,
            },
        );
        Ok(())
    }

    /// What the responders know about every Service IP; takes effect for the next frame. An IP
    /// being handed over keeps answering (its status from before) until the handover ends.
    pub fn set_statuses(&mut self, mut statuses: BTreeMap<IpAddr, IpStatus>) {
        for ip in self.handovers.live(std::time::Instant::now()) {
            if let Some(before) = self.statuses.get(&ip) {
                statuses.insert(ip, before.clone());
            }
        }
        for port in self.ports.values() {
            port.state
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .ips
                .clone_from(&statuses);
        }
        self.statuses = statuses;
    }

    /// Keeps answering for `ip`, which now belongs to another live node, until that node's
    /// gratuitous ARP / unsolicited NA for it is seen on the wire (then at once, from the
    /// receive thread) or until `deadline` (at the next [`Wire::set_statuses`]).
    /// If the new owner has announced it already, stops at once instead.
    pub fn hand_over(&mut self, ip: IpAddr, deadline: std::time::Instant) {
        if !self.handovers.start(ip, deadline) {
            self.stop_answering(ip);
        }
    }

    /// When the earliest handover runs out, if any.
    pub fn next_handover_deadline(&self) -> Option<std::time::Instant> {
        self.handovers.next_deadline()
    }

    /// Stops answering for `ip` at once, before the next plan's statuses arrive.
    pub fn stop_answering(&mut self, ip: IpAddr) {
        self.handovers.end(ip);
        self.statuses.insert(ip, IpStatus::Pending);
        for port in self.ports.values() {
            port.state
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .ips
                .insert(ip, IpStatus::Pending);
        }
    }

    /// Joins or leaves a solicited-node group on `interface`.
    pub fn membership(&mut self, interface: &str, group: Ipv6Addr, join: bool) {
        let Some(port) = self.ports.get(interface) else {
            return;
        };
        let Some(sock) = &port.groups else { return };
        let res = if join {
            sock.join_multicast_v6(&group, port.index)
        } else {
            sock.leave_multicast_v6(&group, port.index)
        };
        match res {
            Ok(()) => debug!(interface, %group, join, "solicited-node group"),
            Err(err) => {
                warn!(interface, %group, join, error = %err, "solicited-node group change failed")
            }
        }
    }

    /// Sends one gratuitous round for `ip` on `interface`; returns whether it went out.
    pub fn gratuitous(&mut self, interface: &str, ip: IpAddr) -> bool {
        let Some(port) = self.ports.get(interface) else {
            return false;
        };
        let (mac, link_local) = {
            let st = port.state.read().unwrap_or_else(|e| e.into_inner());
            (st.mac, st.link_local)
        };
        let protocol = if ip.is_ipv4() { "arp" } else { "ndp" };
        let mut tx = port.tx.lock().unwrap_or_else(|e| e.into_inner());
        let mut ok = true;
        for frame in gratuitous_frames(ip, mac, link_local, None) {
            match tx.send_to(&frame.encode(), None) {
                Some(Ok(())) => self.metrics.gratuitous(protocol),
                Some(Err(err)) => {
                    ok = false;
                    warn!(interface, %ip, error = %err, "gratuitous send failed");
                }
                None => ok = false,
            }
        }
        ok
    }

    /// Closes every socket and joins the threads.
    pub fn close(&mut self) {
        for (_, mut port) in self.ports.drain() {
            port.stop.store(true, Ordering::Relaxed);
            if let Some(t) = port.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// IPs being handed over and until when, shared by the announcer's [`Wire`] and the receive
/// threads (which end a handover the moment the new owner announces itself), and when another
/// host last claimed each IP we answer for (the new owner may announce before we know it is).
#[derive(Debug, Default, Clone)]
struct Handovers(Arc<Mutex<HandoverMaps>>);

#[derive(Debug, Default)]
struct HandoverMaps {
    until: BTreeMap<IpAddr, std::time::Instant>,
    claimed: BTreeMap<IpAddr, std::time::Instant>,
}

/// A claim by another host this recent means the new owner has already announced the IP.
const CLAIM_MEMORY: std::time::Duration = std::time::Duration::from_secs(2);

impl Handovers {
    fn maps(&self) -> std::sync::MutexGuard<'_, HandoverMaps> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Starts handing `ip` over until `deadline`, unless another host claimed it lately (then
    /// the new owner already answers: false, stop now).
    fn start(&self, ip: IpAddr, deadline: std::time::Instant) -> bool {
        let mut maps = self.maps();
        let now = std::time::Instant::now();
        if maps
            .claimed
            .get(&ip)
            .is_some_and(|t| now.duration_since(*t) < CLAIM_MEMORY)
        {
            return false;
        }
        maps.until.entry(ip).or_insert(deadline);
        true
    }
    /// Another host announced `ip`: ends its handover; whether there was one.
    fn claimed(&self, ip: IpAddr, at: std::time::Instant) -> bool {
        let mut maps = self.maps();
        maps.claimed
            .retain(|_, t| at.duration_since(*t) < CLAIM_MEMORY);
        maps.claimed.insert(ip, at);
        maps.until.remove(&ip).is_some()
    }
    /// Ends the handover of `ip` (we stop answering for another reason).
    fn end(&self, ip: IpAddr) {
        self.maps().until.remove(&ip);
    }
    /// Drops the handovers past their deadline; the IPs still being handed over.
    fn live(&self, now: std::time::Instant) -> Vec<IpAddr> {
        let mut maps = self.maps();
        maps.until.retain(|_, deadline| *deadline > now);
        maps.until.keys().copied().collect()
    }
    fn next_deadline(&self) -> Option<std::time::Instant> {
        self.maps().until.values().min().copied()
    }
}

fn receive(
    mut rx: Box<dyn pnet_datalink::DataLinkReceiver>,
    state: Arc<RwLock<ResponderState>>,
    tx: Arc<Mutex<Box<dyn DataLinkSender>>>,
    stop: Arc<AtomicBool>,
    metrics: SpeakerMetrics,
    handovers: Handovers,
) {
    while !stop.load(Ordering::Relaxed) {
        let frame = match rx.next() {
            Ok(f) => f,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                continue;
            }
            Err(e) => {
                warn!(error = %e, "raw socket receive failed");
                std::thread::sleep(READ_TIMEOUT);
                continue;
            }
        };
        let kind = peek(frame);
        let (decision, protocol) = {
            let st = state.read().unwrap_or_else(|e| e.into_inner());
            match kind {
                Kind::Arp => (decide_arp(frame, &st), "arp"),
                Kind::Ndp => (decide_ndp(frame, &st), "ndp"),
                Kind::Other => continue,
            }
        };
        match decision {
            Decision::Reply(reply) => {
                let bytes = reply.encode();
                let sent = tx
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .send_to(&bytes, None);
                match sent {
                    Some(Ok(())) => {
                        metrics.answered(protocol);
                        trace!(protocol, "answered");
                    }
                    Some(Err(err)) => warn!(protocol, error = %err, "reply send failed"),
                    None => warn!(protocol, "reply not sent"),
                }
            }
            // Our own transmissions come back on an ETH_P_ALL socket: not worth a line.
            Decision::Drop(DropReason::FromOurselves) => {}
            Decision::Drop(reason) => {
                metrics.dropped(drop_label(&reason));
                match &reason {
                    // The new owner of an IP we were handing over announces it: stop now.
                    DropReason::SenderUsesOurIp { ip, mac }
                        if handovers.claimed(*ip, std::time::Instant::now()) =>
                    {
                        state
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .ips
                            .insert(*ip, IpStatus::Pending);
                        info!(protocol, %ip, %mac, "handed over: the new owner announced it");
                    }
                    DropReason::SenderUsesOurIp { ip, mac } => {
                        warn!(protocol, %ip, %mac, "another host claims an IP we announce")
                    }
                    _ => debug!(protocol, reason = ?reason, "dropped"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_core::l2::{ArpPacket, Frame, NdpPacket};

    #[test]
    fn handovers_end_on_the_new_owners_packet_or_their_deadline() {
        let t0 = std::time::Instant::now();
        let s = std::time::Duration::from_secs;
        let h = Handovers::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(h.start(a, t0 + s(1)));
        assert!(h.start(b, t0 + s(2)));
        // A second start does not extend it.
        assert!(h.start(a, t0 + s(5)));
        assert_eq!(h.next_deadline(), Some(t0 + s(1)));
        assert_eq!(h.live(t0), vec![a, b]);
        // The receive thread saw b's new owner.
        assert!(h.claimed(b, std::time::Instant::now()));
        assert!(!h.claimed(b, std::time::Instant::now()), "ends once");
        assert_eq!(
            h.live(t0 + s(1)),
            Vec::<IpAddr>::new(),
            "a's deadline passed"
        );
        assert_eq!(h.next_deadline(), None);
        // The new owner announced c before we knew we lost it: no handover, stop now.
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert!(!h.claimed(c, std::time::Instant::now()));
        assert!(!h.start(c, std::time::Instant::now() + s(1)));
        assert_eq!(h.next_deadline(), None);
    }

    #[test]
    fn peek_tells_arp_ndp_and_the_rest() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let arp = Frame::arp(
            MacAddr::BROADCAST,
            mac,
            None,
            ArpPacket::request(
                mac,
                "192.0.2.100".parse().unwrap(),
                "192.0.2.193".parse().unwrap(),
            ),
        );
        assert_eq!(peek(&arp.encode()), Kind::Arp);
        let ns = NdpPacket::solicitation(
            "2001:db8:0:1::100".parse().unwrap(),
            mac,
            "2001:db8:0:1::c1".parse().unwrap(),
        );
        let frame = Frame::ndp(MacAddr([0x33, 0x33, 0xff, 0, 0, 0xc1]), mac, None, ns);
        assert_eq!(peek(&frame.encode()), Kind::Ndp);
        assert_eq!(peek(&[0u8; 10]), Kind::Other);
        let mut ipv4 = arp.encode();
        ipv4[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(peek(&ipv4), Kind::Other);
    }
}
