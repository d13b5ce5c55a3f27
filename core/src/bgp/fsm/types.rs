//! Configuration, inputs and actions of the session state machine.

use crate::bgp::attribute::AttributeProblem;
use crate::bgp::capability::{
    Capability, ForwardingState, GracefulRestart, GracefulRestartFamily, RestartState,
};
use crate::bgp::message::{Message, Open};
use crate::bgp::nlri::Family;
use crate::bgp::notification::{CeaseSubcode, Notification};
use crate::bgp::update::Update;
use crate::bgp::{AsWidth, DecodeContext, EncodeContext, PeerKind};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// RFC 4271 session states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Not trying to connect.
    Idle,
    /// Dialling the peer.
    Connect,
    /// Waiting for the peer to connect, or for the connect retry timer.
    Active,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for the first KEEPALIVE.
    OpenConfirm,
    /// Up: routes flow.
    Established,
}

/// Whether we dial the peer or only wait for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConnectMode {
    /// Dial and accept.
    #[default]
    Active,
    /// Only accept.
    Passive,
}

/// What happens after a session fails (RFC 4271's optional automatic start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoRestart {
    /// Stay Idle until the next ManualStart.
    Never,
    /// Start again after this long in Idle (the IdleHoldTimer).
    After(Duration),
}

/// Our graceful restart settings (RFC 4724). Only the flags are sent for now: keeping the
/// peer's routes over a restart matters little as received routes are never installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// Seconds the peer should keep our routes after we go away.
    pub restart_time: u16,
    /// Set after a restart so the peer keeps our routes until our End-of-RIB.
    pub restart_state: RestartState,
    /// Whether forwarding (the announced VIPs) kept working through the restart.
    pub forwarding: ForwardingState,
}

/// Per-peer settings, validated by the caller (ASN non-zero, hold time 0 or >= 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// Our ASN.
    pub local_as: u32,
    /// The ASN the peer must present.
    pub peer_as: u32,
    /// Our BGP identifier.
    pub local_id: Ipv4Addr,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// Keepalive interval in seconds; `None` means a third of the negotiated hold time.
    pub keepalive: Option<u16>,
    /// Time between dial attempts.
    pub connect_retry: Duration,
    /// Whether to dial.
    pub mode: ConnectMode,
    /// Restart after failures.
    pub auto_restart: AutoRestart,
    /// Families to negotiate.
    pub families: Vec<Family>,
    /// Graceful restart, if advertised.
    pub graceful_restart: Option<GracefulRestartConfig>,
}

impl PeerConfig {
    /// Defaults from RFC 4271 §10: hold 90 s, connect retry 120 s; both unicast families.
    pub fn new(local_as: u32, peer_as: u32, local_id: Ipv4Addr) -> Self {
        Self {
            local_as,
            peer_as,
            local_id,
            hold_time: 90,
            keepalive: None,
            connect_retry: Duration::from_secs(120),
            mode: ConnectMode::Active,
            auto_restart: AutoRestart::After(Duration::from_secs(5)),
            families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            graceful_restart: None,
        }
    }

    pub(crate) fn peer_kind(&self) -> PeerKind {
        if self.local_as == self.peer_as {
            PeerKind::Internal
        } else {
            PeerKind::External
        }
    }

    /// The OPEN we send.
    pub fn open(&self) -> Open {
        let mut caps: Vec<Capability> = self
            .families
            .iter()
            .map(|f| Capability::multiprotocol(*f))
            .collect();
        caps.push(Capability::RouteRefresh);
        if let Some(gr) = &self.graceful_restart {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restart_state: gr.restart_state,
                notification: Default::default(),
                restart_time: gr.restart_time,
                families: self
                    .families
                    .iter()
                    .map(|f| GracefulRestartFamily {
                        afi: f.afi(),
                        safi: f.safi(),
                        forwarding: gr.forwarding,
                    })
                    .collect(),
            }));
        }
        Open::new(self.local_as, self.hold_time, self.local_id, caps)
    }
}

/// A TCP connection, named by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Who opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We dialled.
    Outbound,
    /// The peer dialled.
    Inbound,
}

/// Timers the driver runs for the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Next dial attempt.
    ConnectRetry,
    /// Automatic restart after a failure.
    IdleHold,
    /// Peer silence limit on one connection.
    Hold(ConnId),
    /// Our next KEEPALIVE on one connection.
    Keepalive(ConnId),
}

/// Timer jitter as a percentage (RFC 4271 §10: 75..=100), chosen by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jitter(u8);

impl Jitter {
    /// No jitter.
    pub const NONE: Self = Self(100);
    /// A factor of `percent`/100, clamped to 75..=100.
    pub fn percent(percent: u8) -> Self {
        Self(percent.clamp(75, 100))
    }
    pub(crate) fn apply(self, d: Duration) -> Duration {
        d * u32::from(self.0) / 100
    }
}

/// What the driver tells the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Operator start.
    ManualStart,
    /// Operator stop: Cease/Administrative Shutdown, no automatic restart.
    ManualStop,
    /// Drop the session with Cease and this subcode, then restart automatically (e.g. BFD down,
    /// configuration change).
    Reset(CeaseSubcode),
    /// A TCP connection is up.
    TcpConnected {
        /// Id the driver chose.
        conn: ConnId,
        /// Who dialled.
        direction: Direction,
    },
    /// The dial asked for by [`Action::Connect`] failed.
    TcpConnectFailed,
    /// The peer closed or reset a connection.
    TcpClosed {
        /// Which one.
        conn: ConnId,
    },
    /// Bytes read from a connection.
    BytesReceived {
        /// Which one.
        conn: ConnId,
        /// The bytes, in stream order.
        bytes: Vec<u8>,
    },
    /// A timer armed with [`Action::SetTimer`] fired.
    TimerExpired(Timer),
    /// Send an UPDATE on the established connection.
    SendUpdate(Update),
    /// Ask the peer to resend a family.
    SendRouteRefresh(Family),
}

/// Why a connection or the session closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Operator stop.
    ManualStop,
    /// Local reset with this Cease subcode.
    Reset(CeaseSubcode),
    /// The peer was silent for the hold time.
    HoldTimerExpired,
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// The peer broke the protocol; we sent this NOTIFICATION.
    ProtocolError(Notification),
    /// This connection lost a collision (RFC 4271 §6.8).
    CollisionLost,
    /// Another connection is already established, or we are not started.
    ConnectionRejected,
    /// TCP closed or reset under us.
    TcpClosed,
}

/// What was agreed with the peer when the session came up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The established connection.
    pub conn: ConnId,
    /// The peer's OPEN.
    pub peer_open: Open,
    /// eBGP or iBGP.
    pub peer_kind: PeerKind,
    /// Hold time in seconds (0: no keepalives).
    pub hold_time: u16,
    /// Keepalive interval in seconds (0: none).
    pub keepalive: u16,
    /// AS_PATH encoding.
    pub as_width: AsWidth,
    /// Families both sides advertised.
    pub families: Vec<Family>,
}

impl Negotiated {
    /// Context for encoding UPDATEs to this peer.
    pub fn encode_context(&self) -> EncodeContext {
        EncodeContext {
            as_width: self.as_width,
        }
    }
    /// Context for decoding UPDATEs from this peer.
    pub fn decode_context(&self) -> DecodeContext {
        DecodeContext {
            as_width: self.as_width,
            peer_kind: self.peer_kind,
        }
    }
    /// The peer's graceful restart capability, if any.
    pub fn peer_graceful_restart(&self) -> Option<&GracefulRestart> {
        self.peer_open.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    }
    /// Whether the peer accepts ROUTE-REFRESH.
    pub fn peer_route_refresh(&self) -> bool {
        self.peer_open
            .capabilities
            .contains(&Capability::RouteRefresh)
    }
}

/// What the session asks the driver to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Dial the peer (superseding any dial in progress); answer with TcpConnected or
    /// TcpConnectFailed.
    Connect,
    /// Write these bytes to a connection.
    Send {
        /// Where.
        conn: ConnId,
        /// What, for logs.
        message: Message,
        /// The encoded message.
        bytes: Vec<u8>,
    },
    /// Close a connection (after writing what was queued).
    Close {
        /// Which.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Arm (or re-arm) a timer for `at`.
    SetTimer {
        /// Which timer.
        timer: Timer,
        /// When it should fire.
        at: Instant,
    },
    /// Disarm a timer.
    CancelTimer(Timer),
    /// The session state changed.
    StateChanged {
        /// Old state.
        from: State,
        /// New state.
        to: State,
    },
    /// The session is up.
    SessionEstablished(Box<Negotiated>),
    /// The established session went down.
    SessionDown(CloseReason),
    /// Routes were received (counted, never installed).
    RoutesReceived {
        /// Family.
        family: Family,
        /// Prefixes announced by this UPDATE.
        announced: usize,
        /// Prefixes withdrawn by this UPDATE.
        withdrawn: usize,
        /// Prefixes now held from this peer.
        total: usize,
    },
    /// The peer finished sending its initial table for a family (RFC 4724).
    EndOfRib(Family),
    /// An UPDATE was malformed and treated as a withdrawal (RFC 7606).
    TreatedAsWithdraw(AttributeProblem),
    /// Attributes were dropped from an UPDATE (RFC 7606).
    AttributesDiscarded(Vec<AttributeProblem>),
    /// The peer asked for our routes again.
    RouteRefreshRequested(Family),
    /// A send was asked for while the session is not established.
    NotEstablished,
}
