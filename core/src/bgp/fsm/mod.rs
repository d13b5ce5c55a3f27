//! The RFC 4271 §8 session state machine, sans-IO.
//!
//! A [`Session`] is fed [`Input`]s with the current time and answers with [`Action`]s for an I/O
//! driver: dial, send these bytes, close that connection, arm this timer. It owns no socket, clock
//! or random source: time comes in with each call, timer jitter is set by the caller, and
//! connections are named by ids the driver picks. Up to two connections (one dialled, one
//! accepted) live at once so collisions can be resolved as RFC 4271 §6.8 says.

mod types;

pub use types::*;

use super::message::{Header, Message, Open, RouteRefresh, frame};
use super::nlri::Family;
use super::notification::{CeaseSubcode, ErrorCode, FsmError, Notification, OpenMessageError};
use super::update::{Update, UpdateOutcome};
use super::{AsWidth, DecodeContext, HEADER_LEN, MessageType, PeerKind};
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Hold time while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
const LARGE_HOLD: Duration = Duration::from_secs(240);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ConnState {
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug)]
struct Conn {
    id: ConnId,
    direction: Direction,
    state: ConnState,
    buf: Vec<u8>,
    peer_open: Option<Open>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admin {
    Stopped,
    Started,
}

/// One BGP session with one peer.
#[derive(Debug)]
pub struct Session {
    config: PeerConfig,
    admin: Admin,
    /// Idle, Connect or Active: the state while no connection has reached OpenSent.
    base: State,
    conns: Vec<Conn>,
    armed: HashMap<Timer, Instant>,
    jitter: Jitter,
    negotiated: Option<Negotiated>,
    received_v4: BTreeSet<Ipv4Net>,
    received_v6: BTreeSet<Ipv6Net>,
}

impl Session {
    /// A stopped session; nothing happens until [`Input::ManualStart`].
    pub fn new(config: PeerConfig) -> Self {
        Self {
            config,
            admin: Admin::Stopped,
            base: State::Idle,
            conns: Vec::new(),
            armed: HashMap::new(),
            jitter: Jitter::NONE,
            negotiated: None,
            received_v4: BTreeSet::new(),
            received_v6: BTreeSet::new(),
        }
    }

    /// The RFC 4271 state: that of the most advanced connection, else Idle/Connect/Active.
    pub fn state(&self) -> State {
        match self.conns.iter().map(|c| c.state).max() {
            Some(ConnState::Established) => State::Established,
            Some(ConnState::OpenConfirm) => State::OpenConfirm,
            Some(ConnState::OpenSent) => State::OpenSent,
            None => self.base,
        }
    }

    /// What was negotiated, while established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// Prefixes currently held from the peer, per family.
    pub fn received_count(&self, family: Family) -> usize {
        match family {
            Family::Ipv4Unicast => self.received_v4.len(),
            Family::Ipv6Unicast => self.received_v6.len(),
        }
    }

    /// Jitter applied to connect retry and keepalive timers armed from now on; the driver picks
    /// a fresh random value whenever it likes.
    pub fn set_jitter(&mut self, jitter: Jitter) {
        self.jitter = jitter;
    }

    /// Feeds one input at time `now` and returns what to do.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let before = self.state();
        let mut out = Vec::new();
        match input {
            Input::ManualStart => self.start(now, &mut out),
            Input::ManualStop => {
                // Stopped first, so dropping the connections arms no automatic restart.
                self.admin = Admin::Stopped;
                self.drop_all(
                    now,
                    &mut out,
                    CloseReason::ManualStop,
                    CeaseSubcode::AdministrativeShutdown,
                );
                self.set_timer(now, &mut out, Timer::IdleHold, None);
            }
            Input::Reset(sub) => {
                if self.admin == Admin::Started {
                    self.drop_all(now, &mut out, CloseReason::Reset(sub), sub);
                }
            }
            Input::TcpConnected { conn, direction } => {
                self.connected(now, &mut out, conn, direction)
            }
            Input::TcpConnectFailed => {
                if self.base == State::Connect {
                    self.base = State::Active;
                }
            }
            Input::TcpClosed { conn } => {
                if self.conn(conn).is_some() {
                    self.remove_conn(now, &mut out, conn, CloseReason::TcpClosed, None);
                }
            }
            Input::BytesReceived { conn, bytes } => self.received(now, &mut out, conn, bytes),
            Input::TimerExpired(timer) => {
                // Drop expiries of timers re-armed or cancelled since: the driver may race us.
                match self.armed.get(&timer) {
                    Some(&at) if at <= now => {
                        self.armed.remove(&timer);
                        self.expired(now, &mut out, timer);
                    }
                    _ => {}
                }
            }
            Input::SendUpdate(update) => {
                self.send_established(now, &mut out, Message::Update(update))
            }
            Input::SendRouteRefresh(family) => self.send_established(
                now,
                &mut out,
                Message::RouteRefresh(RouteRefresh::request(family)),
            ),
        }
        let after = self.state();
        if before != after {
            out.push(Action::StateChanged {
                from: before,
                to: after,
            });
        }
        out
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.iter().find(|c| c.id == id)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    /// Arms (`Some`) or cancels (`None`) a timer, remembering deadlines to reject stale expiries.
    fn set_timer(
        &mut self,
        now: Instant,
        out: &mut Vec<Action>,
        timer: Timer,
        after: Option<Duration>,
    ) {
        match after {
            Some(d) => {
                let at = now + d;
                self.armed.insert(timer, at);
                out.push(Action::SetTimer { timer, at });
            }
            None => {
                if self.armed.remove(&timer).is_some() {
                    out.push(Action::CancelTimer(timer));
                }
            }
        }
    }

    fn start(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.admin == Admin::Started && self.base != State::Idle {
            return;
        }
        self.admin = Admin::Started;
        match self.config.mode {
            ConnectMode::Active => self.dial(now, out),
            ConnectMode::Passive => self.base = State::Active,
        }
    }

    fn dial(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.base = State::Connect;
        out.push(Action::Connect);
        let retry = self.jitter.apply(self.config.connect_retry);
        self.set_timer(now, out, Timer::ConnectRetry, Some(retry));
    }

    fn send(&self, out: &mut Vec<Action>, conn: ConnId, message: Message) {
        let ctx = self
            .negotiated
            .as_ref()
            .map(Negotiated::encode_context)
            .unwrap_or_default();
        let bytes = message.encode(&ctx);
        out.push(Action::Send {
            conn,
            message,
            bytes,
        });
    }

    fn connected(
        &mut self,
        now: Instant,
        out: &mut Vec<Action>,
        conn: ConnId,
        direction: Direction,
    ) {
        let duplicate = self
            .conns
            .iter()
            .any(|c| c.id == conn || c.direction == direction);
        let established = self.state() == State::Established;
        if self.admin == Admin::Stopped || self.base == State::Idle || duplicate {
            out.push(Action::Close {
                conn,
                reason: CloseReason::ConnectionRejected,
            });
            return;
        }
        if established {
            // RFC 4271 §6.8: a connection arriving after Established loses outright.
            self.send(
                out,
                conn,
                Message::Notification(Notification::cease(CeaseSubcode::ConnectionRejected)),
            );
            out.push(Action::Close {
                conn,
                reason: CloseReason::ConnectionRejected,
            });
            return;
        }
        self.set_timer(now, out, Timer::ConnectRetry, None);
        self.base = State::Active;
        self.conns.push(Conn {
            id: conn,
            direction,
            state: ConnState::OpenSent,
            buf: Vec::new(),
            peer_open: None,
        });
        self.send(out, conn, Message::Open(self.config.open()));
        self.set_timer(now, out, Timer::Hold(conn), Some(LARGE_HOLD));
    }

    fn received(&mut self, now: Instant, out: &mut Vec<Action>, conn: ConnId, bytes: Vec<u8>) {
        let Some(c) = self.conn_mut(conn) else { return };
        c.buf.extend_from_slice(&bytes);
        loop {
            let Some(c) = self.conn_mut(conn) else { return };
            let len = match frame(&c.buf) {
                Ok(Some(len)) => len,
                Ok(None) => return,
                Err(n) => return self.protocol_error(now, out, conn, n),
            };
            let msg: Vec<u8> = c.buf.drain(..len).collect();
            self.message(now, out, conn, &msg);
        }
    }

    fn protocol_error(
        &mut self,
        now: Instant,
        out: &mut Vec<Action>,
        conn: ConnId,
        n: Notification,
    ) {
        self.remove_conn(
            now,
            out,
            conn,
            CloseReason::ProtocolError(n.clone()),
            Some(n),
        );
    }

    fn message(&mut self, now: Instant, out: &mut Vec<Action>, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.conn(conn) else { return };
        let state = c.state;
        // `frame` has validated the header already.
        let Ok(header) = Header::parse(bytes) else {
            return;
        };
        let ctx = self
            .negotiated
            .as_ref()
            .map(Negotiated::decode_context)
            .unwrap_or(DecodeContext {
                as_width: AsWidth::Two,
                peer_kind: self.config.peer_kind(),
            });
        // RFC 4271 §8.2.2 / RFC 6608: judge the type against the state before decoding the body.
        let expected = match state {
            ConnState::OpenSent => {
                matches!(header.kind, MessageType::Open | MessageType::Notification)
            }
            ConnState::OpenConfirm => matches!(
                header.kind,
                MessageType::Keepalive | MessageType::Notification
            ),
            ConnState::Established => header.kind != MessageType::Open,
        };
        if !expected {
            let sub = match state {
                ConnState::OpenSent => FsmError::UnexpectedMessageInOpenSent,
                ConnState::OpenConfirm => FsmError::UnexpectedMessageInOpenConfirm,
                ConnState::Established => FsmError::UnexpectedMessageInEstablished,
            };
            return self.protocol_error(now, out, conn, Notification::bare(ErrorCode::Fsm(sub)));
        }
        if header.kind == MessageType::Update {
            self.restart_hold(now, out, conn);
            let outcome = Update::decode(&bytes[HEADER_LEN..], &ctx);
            return self.update(now, out, conn, outcome);
        }
        let msg = match Message::decode(bytes, &ctx) {
            Ok(m) => m,
            Err(super::message::DecodeError::SessionReset(n)) => {
                return self.protocol_error(now, out, conn, n);
            }
            // Only UPDATEs can be treated as withdraw, and those are handled above.
            Err(super::message::DecodeError::TreatAsWithdraw(_)) => return,
        };
        match (state, msg) {
            (_, Message::Notification(n)) => {
                self.remove_conn(now, out, conn, CloseReason::NotificationReceived(n), None);
            }
            (ConnState::OpenSent, Message::Open(open)) => self.open_received(now, out, conn, open),
            (ConnState::OpenConfirm, Message::Keepalive) => self.establish(now, out, conn),
            (ConnState::Established, Message::Keepalive) => self.restart_hold(now, out, conn),
            (ConnState::Established, Message::RouteRefresh(rr)) => {
                self.restart_hold(now, out, conn);
                if let Some(f) = Family::from_afi_safi(rr.afi, rr.safi) {
                    out.push(Action::RouteRefreshRequested(f));
                }
            }
            // The type check above leaves nothing else.
            _ => {}
        }
    }

    /// Checks the peer's OPEN against configuration (RFC 4271 §6.2).
    fn validate_open(&self, open: &Open) -> Result<(), Notification> {
        if open.asn() != self.config.peer_as {
            return Err(Notification::open(
                OpenMessageError::BadPeerAs,
                open.my_as.to_be_bytes(),
            ));
        }
        // RFC 6286 §2.1: identifiers must differ within an AS.
        if self.config.peer_kind() == PeerKind::Internal && open.bgp_id == self.config.local_id {
            return Err(Notification::open(
                OpenMessageError::BadBgpIdentifier,
                open.bgp_id.octets(),
            ));
        }
        Ok(())
    }

    fn open_received(&mut self, now: Instant, out: &mut Vec<Action>, conn: ConnId, open: Open) {
        if let Err(n) = self.validate_open(&open) {
            return self.protocol_error(now, out, conn, n);
        }
        // RFC 4271 §6.8: with another connection past OpenSent, keep the one dialled by the
        // speaker with the higher identifier (RFC 6286 §2.3: the higher ASN on a tie).
        let rival = self
            .conns
            .iter()
            .find(|c| c.id != conn && c.state >= ConnState::OpenConfirm)
            .map(|c| c.id);
        if let Some(rival) = rival {
            let local = u32::from(self.config.local_id);
            let remote = u32::from(open.bgp_id);
            let keep_outbound =
                local > remote || (local == remote && self.config.local_as > open.asn());
            let this_dir = self.conn(conn).map(|c| c.direction);
            let loser = if (this_dir == Some(Direction::Outbound)) == keep_outbound {
                rival
            } else {
                conn
            };
            self.remove_conn(
                now,
                out,
                loser,
                CloseReason::CollisionLost,
                Some(Notification::cease(
                    CeaseSubcode::ConnectionCollisionResolution,
                )),
            );
            if loser == conn {
                return;
            }
        }
        let (hold, keepalive) = self.timers_for(&open);
        if let Some(c) = self.conn_mut(conn) {
            c.state = ConnState::OpenConfirm;
            c.peer_open = Some(open);
        }
        self.send(out, conn, Message::Keepalive);
        self.set_timer(
            now,
            out,
            Timer::Hold(conn),
            (hold > 0).then(|| Duration::from_secs(hold.into())),
        );
        let ka = (keepalive > 0).then(|| self.jitter.apply(Duration::from_secs(keepalive.into())));
        self.set_timer(now, out, Timer::Keepalive(conn), ka);
    }

    /// Negotiated hold time (the smaller proposal) and keepalive (a third of it unless
    /// configured lower).
    fn timers_for(&self, open: &Open) -> (u16, u16) {
        let hold = self.config.hold_time.min(open.hold_time);
        if hold == 0 {
            return (0, 0);
        }
        let keepalive = self
            .config
            .keepalive
            .map_or(hold / 3, |k| k.min(hold / 3))
            .max(1);
        (hold, keepalive)
    }

    fn establish(&mut self, now: Instant, out: &mut Vec<Action>, conn: ConnId) {
        let Some(c) = self.conn_mut(conn) else { return };
        let Some(open) = c.peer_open.clone() else {
            return;
        };
        c.state = ConnState::Established;
        // Every other connection loses the collision now (RFC 4271 §6.8).
        let others: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.id != conn)
            .map(|c| c.id)
            .collect();
        for other in others {
            self.remove_conn(
                now,
                out,
                other,
                CloseReason::CollisionLost,
                Some(Notification::cease(
                    CeaseSubcode::ConnectionCollisionResolution,
                )),
            );
        }
        let (hold_time, keepalive) = self.timers_for(&open);
        let as_width = if open.four_octet_as().is_some() {
            AsWidth::Four
        } else {
            AsWidth::Two
        };
        let peer_families = open.families();
        let families = self
            .config
            .families
            .iter()
            .copied()
            .filter(|f| peer_families.contains(f))
            .collect();
        let negotiated = Negotiated {
            conn,
            peer_open: open,
            peer_kind: self.config.peer_kind(),
            hold_time,
            keepalive,
            as_width,
            families,
        };
        self.negotiated = Some(negotiated.clone());
        self.received_v4.clear();
        self.received_v6.clear();
        self.restart_hold(now, out, conn);
        out.push(Action::SessionEstablished(Box::new(negotiated)));
    }

    fn restart_hold(&mut self, now: Instant, out: &mut Vec<Action>, conn: ConnId) {
        let hold = match (
            &self.negotiated,
            self.conn(conn).and_then(|c| c.peer_open.as_ref()),
        ) {
            (Some(n), _) if n.conn == conn => n.hold_time,
            (_, Some(open)) => self.timers_for(open).0,
            _ => return,
        };
        if hold > 0 {
            self.set_timer(
                now,
                out,
                Timer::Hold(conn),
                Some(Duration::from_secs(hold.into())),
            );
        }
    }

    fn update(
        &mut self,
        now: Instant,
        out: &mut Vec<Action>,
        conn: ConnId,
        outcome: UpdateOutcome,
    ) {
        let update = match outcome {
            UpdateOutcome::Ok(u) => u,
            UpdateOutcome::AttributesDiscarded { update, discarded } => {
                out.push(Action::AttributesDiscarded(discarded));
                update
            }
            UpdateOutcome::TreatAsWithdraw(t) => {
                out.push(Action::TreatedAsWithdraw(t.reason));
                let as_update = Update {
                    withdrawn: t.withdrawn_v4,
                    ..Update::default()
                };
                self.count(out, &as_update, t.withdrawn_v6);
                return;
            }
            UpdateOutcome::SessionReset(n) => return self.protocol_error(now, out, conn, n),
        };
        if let Some(family) = update.end_of_rib_family() {
            out.push(Action::EndOfRib(family));
            return;
        }
        let withdrawn_v6 = update.withdrawn_v6();
        self.count(out, &update, withdrawn_v6);
    }

    /// Tracks prefixes the peer holds out to us; they are counted, not installed.
    fn count(&mut self, out: &mut Vec<Action>, update: &Update, withdrawn_v6: Vec<Ipv6Net>) {
        let (ann4, wd4) = (update.announced_v4(), update.withdrawn_v4());
        wd4.iter().for_each(|p| {
            self.received_v4.remove(p);
        });
        self.received_v4.extend(ann4.iter().copied());
        let ann6 = update.announced_v6();
        withdrawn_v6.iter().for_each(|p| {
            self.received_v6.remove(p);
        });
        self.received_v6.extend(ann6.iter().copied());
        let rows = [
            (
                Family::Ipv4Unicast,
                ann4.len(),
                wd4.len(),
                self.received_v4.len(),
            ),
            (
                Family::Ipv6Unicast,
                ann6.len(),
                withdrawn_v6.len(),
                self.received_v6.len(),
            ),
        ];
        for (family, announced, withdrawn, total) in rows {
            if announced + withdrawn > 0 {
                out.push(Action::RoutesReceived {
                    family,
                    announced,
                    withdrawn,
                    total,
                });
            }
        }
    }

    fn expired(&mut self, now: Instant, out: &mut Vec<Action>, timer: Timer) {
        match timer {
            Timer::ConnectRetry => {
                if self.admin == Admin::Started
                    && self.config.mode == ConnectMode::Active
                    && matches!(self.base, State::Connect | State::Active)
                    && !self
                        .conns
                        .iter()
                        .any(|c| c.direction == Direction::Outbound)
                {
                    self.dial(now, out);
                }
            }
            Timer::IdleHold => {
                if self.admin == Admin::Started && self.base == State::Idle && self.conns.is_empty()
                {
                    self.start(now, out);
                }
            }
            Timer::Hold(conn) => {
                let n = Notification::bare(ErrorCode::HoldTimerExpired);
                self.remove_conn(now, out, conn, CloseReason::HoldTimerExpired, Some(n));
            }
            Timer::Keepalive(conn) => {
                let Some(c) = self.conn(conn) else { return };
                if c.state >= ConnState::OpenConfirm {
                    self.send(out, conn, Message::Keepalive);
                    self.rearm_keepalive(now, out, conn);
                }
            }
        }
    }

    fn rearm_keepalive(&mut self, now: Instant, out: &mut Vec<Action>, conn: ConnId) {
        let Some(open) = self.conn(conn).and_then(|c| c.peer_open.as_ref()) else {
            return;
        };
        let (_, keepalive) = self.timers_for(open);
        if keepalive > 0 {
            let d = self.jitter.apply(Duration::from_secs(keepalive.into()));
            self.set_timer(now, out, Timer::Keepalive(conn), Some(d));
        }
    }

    fn send_established(&mut self, now: Instant, out: &mut Vec<Action>, message: Message) {
        let Some(conn) = self.negotiated.as_ref().map(|n| n.conn) else {
            out.push(Action::NotEstablished);
            return;
        };
        self.send(out, conn, message);
        // RFC 4271 §8.2.2: sending an UPDATE also restarts the keepalive timer.
        self.rearm_keepalive(now, out, conn);
    }

    /// Closes every connection with Cease/`sub`.
    fn drop_all(
        &mut self,
        now: Instant,
        out: &mut Vec<Action>,
        reason: CloseReason,
        sub: CeaseSubcode,
    ) {
        let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
        for id in ids {
            self.remove_conn(now, out, id, reason.clone(), Some(Notification::cease(sub)));
        }
        self.set_timer(now, out, Timer::ConnectRetry, None);
        if self.conns.is_empty() && self.base != State::Idle {
            self.go_idle(now, out);
        }
    }

    /// Sends `notify` if given, closes the connection, and moves the session on.
    fn remove_conn(
        &mut self,
        now: Instant,
        out: &mut Vec<Action>,
        conn: ConnId,
        reason: CloseReason,
        notify: Option<Notification>,
    ) {
        let Some(pos) = self.conns.iter().position(|c| c.id == conn) else {
            return;
        };
        if let Some(n) = notify {
            self.send(out, conn, Message::Notification(n));
        }
        let c = self.conns.remove(pos);
        out.push(Action::Close {
            conn,
            reason: reason.clone(),
        });
        self.set_timer(now, out, Timer::Hold(conn), None);
        self.set_timer(now, out, Timer::Keepalive(conn), None);
        if c.state == ConnState::Established {
            self.negotiated = None;
            self.received_v4.clear();
            self.received_v6.clear();
            out.push(Action::SessionDown(reason.clone()));
        }
        // A collision loser leaves the winner in charge; other failures with no connection
        // left send the session back to Idle (RFC 4271 §8.2.2).
        if self.conns.is_empty() && reason != CloseReason::CollisionLost {
            self.go_idle(now, out);
        }
    }

    fn go_idle(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.base = State::Idle;
        self.set_timer(now, out, Timer::ConnectRetry, None);
        if let (Admin::Started, AutoRestart::After(d)) = (self.admin, self.config.auto_restart) {
            self.set_timer(now, out, Timer::IdleHold, Some(d));
        }
    }
}
