//! One peer's task: feeds a core [`Session`] with socket events and timer expiries and carries
//! out the actions it returns.

use crate::gr::{self, StaleChange};
use crate::routes::{RouteAttrs, RouteTable, UpdateContext, next_hops};
use crate::socket::{self, SocketOptions};
use crate::{PeerConfig, PeerStatus};
use ferrolb_core::bgp::fsm::Jitter;
use ferrolb_core::bgp::{
    Action, CeaseSubcode, CloseReason, ConnId, Direction, Family, Input, Message, Notification,
    Session, State, Timer, Update,
};
use ipnet::IpNet;
use socket2::SockRef;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// What reaches a peer task: commands from the [`crate::Speaker`] and socket events.
#[derive(Debug)]
pub(crate) enum Event {
    /// The listener accepted a connection from this peer.
    Inbound(TcpStream),
    /// A dial finished.
    Dialed(u64, io::Result<TcpStream>),
    /// Bytes arrived on a connection.
    Bytes(ConnId, Vec<u8>),
    /// A connection was closed by the peer or failed.
    Closed(ConnId),
    /// Announce (or re-announce) a prefix.
    Announce(IpNet, RouteAttrs),
    /// Withdraw a prefix.
    Withdraw(IpNet),
    /// Withdraw everything we sent, keeping the session.
    WithdrawAll,
    /// Drop the session with Cease and restart it (e.g. BFD down).
    Reset(CeaseSubcode),
    /// Stop for good: Cease/Administrative Shutdown, flush, then acknowledge.
    Stop(oneshot::Sender<()>),
}

enum WriterCmd {
    Bytes(Vec<u8>),
    Close,
}

struct ConnIo {
    local: SocketAddr,
    writer: mpsc::UnboundedSender<WriterCmd>,
    writer_task: JoinHandle<()>,
    reader_task: JoinHandle<()>,
}

/// The peer task's state.
pub(crate) struct PeerTask {
    cfg: Arc<PeerConfig>,
    session: Session,
    timers: HashMap<Timer, Instant>,
    conns: HashMap<ConnId, ConnIo>,
    next_conn: u64,
    dial_gen: u64,
    dial: Option<JoinHandle<()>>,
    tx: mpsc::UnboundedSender<Event>,
    routes: Arc<Mutex<RouteTable>>,
    update_ctx: Option<UpdateContext>,
    status: watch::Sender<PeerStatus>,
    closing: Vec<JoinHandle<()>>,
    /// Receiving-speaker graceful restart state.
    gr: gr::Helper,
}

/// A pseudo-random jitter from the clock: RFC 4271 only asks that peers do not stay in step.
fn clock_jitter() -> Jitter {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Jitter::percent(75 + (nanos % 26) as u8)
}

impl PeerTask {
    pub(crate) fn new(
        cfg: Arc<PeerConfig>,
        tx: mpsc::UnboundedSender<Event>,
        routes: Arc<Mutex<RouteTable>>,
        status: watch::Sender<PeerStatus>,
    ) -> Self {
        let mut session = Session::new(cfg.session.clone());
        session.set_jitter(clock_jitter());
        Self {
            cfg,
            session,
            timers: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 0,
            dial_gen: 0,
            dial: None,
            tx,
            routes,
            update_ctx: None,
            status,
            closing: Vec::new(),
            gr: gr::Helper::default(),
        }
    }

    /// Runs until [`Event::Stop`] or until the speaker goes away.
    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        self.feed(Input::ManualStart);
        loop {
            let next = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            let sleep = tokio::time::sleep_until(
                next.map_or_else(|| Instant::now() + Duration::from_secs(3600), |(_, at)| at)
                    .into(),
            );
            let stale_deadline = self.gr.deadline();
            let stale_sleep = tokio::time::sleep_until(
                stale_deadline
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
                    .into(),
            );
            tokio::select! {
                _ = stale_sleep, if stale_deadline.is_some() => {
                    let changes = self.gr.expired(Instant::now());
                    self.apply_stale(changes);
                }
                ev = rx.recv() => match ev {
                    Some(Event::Stop(ack)) => {
                        self.feed(Input::ManualStop);
                        self.finish().await;
                        let _ = ack.send(());
                        return;
                    }
                    Some(ev) => self.event(ev),
                    None => {
                        self.feed(Input::ManualStop);
                        self.finish().await;
                        return;
                    }
                },
                _ = sleep, if next.is_some() => {
                    if let Some((timer, _)) = next {
                        self.timers.remove(&timer);
                        self.session.set_jitter(clock_jitter());
                        self.feed(Input::TimerExpired(timer));
                    }
                }
            }
        }
    }

    /// Waits (briefly) for queued bytes, such as the final NOTIFICATION, to reach the wire.
    async fn finish(&mut self) {
        if let Some(d) = self.dial.take() {
            d.abort();
        }
        for (_, c) in self.conns.drain() {
            let _ = c.writer.send(WriterCmd::Close);
            c.reader_task.abort();
            self.closing.push(c.writer_task);
        }
        for w in self.closing.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
        }
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Inbound(stream) => {
                if let Err(e) = socket::set_ttl(
                    SockRef::from(&stream),
                    self.cfg.address.is_ipv6(),
                    self.cfg.ttl(),
                ) {
                    warn!(peer = %self.cfg.address, error = %e, "setting TTL on accepted connection");
                }
                let conn = self.register(stream);
                debug!(peer = %self.cfg.address, ?conn, "accepted connection");
                self.feed(Input::TcpConnected {
                    conn,
                    direction: Direction::Inbound,
                });
            }
            Event::Dialed(generation, result) => {
                if generation != self.dial_gen {
                    return;
                }
                self.dial = None;
                match result {
                    Ok(stream) => {
                        let conn = self.register(stream);
                        debug!(peer = %self.cfg.address, ?conn, "connected");
                        self.feed(Input::TcpConnected {
                            conn,
                            direction: Direction::Outbound,
                        });
                    }
                    Err(e) => {
                        info!(peer = %self.cfg.address, error = %e, "connect failed");
                        self.set_error(format!("connect failed: {e}"));
                        self.feed(Input::TcpConnectFailed);
                    }
                }
            }
            Event::Bytes(conn, bytes) => {
                if self.conns.contains_key(&conn) {
                    self.feed(Input::BytesReceived { conn, bytes });
                }
            }
            Event::Closed(conn) => {
                if let Some(c) = self.conns.remove(&conn) {
                    let _ = c.writer.send(WriterCmd::Close);
                    self.closing.push(c.writer_task);
                    self.feed(Input::TcpClosed { conn });
                }
            }
            Event::Announce(prefix, attrs) => {
                if let Some(ctx) = self.update_ctx {
                    match ctx.announce(&[prefix], &attrs) {
                        Ok(updates) => self.send_updates(updates),
                        Err(e) => {
                            warn!(peer = %self.cfg.address, %prefix, reason = %e, "not announcing")
                        }
                    }
                }
            }
            Event::Withdraw(prefix) => {
                if let Some(ctx) = self.update_ctx {
                    self.send_updates(ctx.withdraw(&[prefix]));
                }
            }
            Event::WithdrawAll => {
                if let Some(ctx) = self.update_ctx {
                    let all: Vec<IpNet> = self.routes_snapshot().keys().copied().collect();
                    self.send_updates(ctx.withdraw(&all));
                }
            }
            Event::Reset(sub) => self.feed(Input::Reset(sub)),
            Event::Stop(_) => {}
        }
        self.closing.retain(|h| !h.is_finished());
    }

    fn routes_snapshot(&self) -> RouteTable {
        self.routes.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn send_updates(&mut self, updates: Vec<Update>) {
        for u in updates {
            self.feed(Input::SendUpdate(u));
        }
    }

    fn register(&mut self, stream: TcpStream) -> ConnId {
        self.next_conn += 1;
        let id = ConnId(self.next_conn);
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(self.cfg.address, 0));
        let (r, w) = stream.into_split();
        let (wtx, wrx) = mpsc::unbounded_channel();
        let reader_task = tokio::spawn(read_loop(id, r, self.tx.clone()));
        let writer_task = tokio::spawn(write_loop(w, wrx));
        self.conns.insert(
            id,
            ConnIo {
                local,
                writer: wtx,
                writer_task,
                reader_task,
            },
        );
        id
    }

    fn apply_stale(&self, changes: Vec<StaleChange>) {
        let peer = self.cfg.address;
        for c in changes {
            match c {
                StaleChange::Kept { families, until } => {
                    let secs = until.saturating_duration_since(Instant::now()).as_secs();
                    info!(%peer, ?families, restart_time_s = secs, "peer restarting gracefully: its routes are kept as stale");
                }
                StaleChange::Dropped(family, cause) => {
                    info!(%peer, ?family, ?cause, "stale routes dropped")
                }
            }
        }
        let (v4, v6) = (
            self.gr.stale(Family::Ipv4Unicast),
            self.gr.stale(Family::Ipv6Unicast),
        );
        self.status.send_modify(|s| {
            s.stale_v4 = v4;
            s.stale_v6 = v6;
        });
    }

    fn set_error(&self, e: String) {
        self.status.send_modify(|s| s.last_error = Some(e));
    }

    /// Feeds an input and carries out the actions, including inputs those actions cause.
    fn feed(&mut self, input: Input) {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let actions = self.session.handle(Instant::now(), input);
            for a in actions {
                self.act(a, &mut queue);
            }
        }
    }

    fn act(&mut self, action: Action, queue: &mut VecDeque<Input>) {
        let peer = self.cfg.address;
        match action {
            Action::Connect => self.start_dial(),
            Action::Send {
                conn,
                message,
                bytes,
            } => {
                if let Message::Notification(n) = &message {
                    log_notification_sent(peer, n);
                    self.set_error(format!("sent NOTIFICATION {n}"));
                }
                if let Some(c) = self.conns.get(&conn) {
                    let _ = c.writer.send(WriterCmd::Bytes(bytes));
                }
            }
            Action::Close { conn, reason } => {
                if let CloseReason::NotificationReceived(n) = &reason {
                    warn!(
                        %peer,
                        code = n.error.code_name(),
                        subcode = n.error.subcode_name(),
                        "NOTIFICATION received: {n}"
                    );
                    self.set_error(format!("received NOTIFICATION {n}"));
                }
                info!(%peer, ?conn, ?reason, "closing connection");
                if let Some(c) = self.conns.remove(&conn) {
                    let _ = c.writer.send(WriterCmd::Close);
                    c.reader_task.abort();
                    self.closing.push(c.writer_task);
                }
            }
            Action::SetTimer { timer, at } => {
                self.timers.insert(timer, at);
            }
            Action::CancelTimer(timer) => {
                self.timers.remove(&timer);
            }
            Action::StateChanged { from, to } => {
                info!(%peer, ?from, ?to, "BGP state changed");
                self.status.send_modify(|s| s.state = to);
            }
            Action::SessionEstablished(n) => {
                let local = self.conns.get(&n.conn).map(|c| c.local.ip());
                let (v4, v6) = match local {
                    Some(l) => next_hops(l, self.cfg.next_hop_v4, self.cfg.next_hop_v6),
                    None => (self.cfg.next_hop_v4, self.cfg.next_hop_v6),
                };
                let changes = self.gr.session_up(Instant::now(), &n.peer_open);
                self.apply_stale(changes);
                let ctx = UpdateContext {
                    local_as: self.cfg.session.local_as,
                    peer_kind: n.peer_kind,
                    next_hop_v4: v4,
                    next_hop_v6: v6,
                };
                self.update_ctx = Some(ctx);
                info!(
                    %peer,
                    peer_as = n.peer_open.asn(),
                    peer_id = %n.peer_open.bgp_id,
                    hold_time = n.hold_time,
                    families = ?n.families,
                    "BGP session established"
                );
                self.status.send_modify(|s| {
                    s.established += 1;
                    s.last_error = None;
                    s.received_v4 = 0;
                    s.received_v6 = 0;
                });
                let (updates, skipped) = ctx.full_table(&self.routes_snapshot());
                for (prefix, reason) in skipped {
                    warn!(%peer, %prefix, %reason, "not announcing");
                }
                queue.extend(updates.into_iter().map(Input::SendUpdate));
                queue.extend(
                    n.families
                        .iter()
                        .map(|f| Input::SendUpdate(Update::end_of_rib(*f))),
                );
            }
            Action::SessionDown(reason) => {
                warn!(%peer, ?reason, "BGP session down");
                self.update_ctx = None;
                let (v4, v6) = {
                    let s = self.status.borrow();
                    (s.received_v4, s.received_v6)
                };
                let received = [(Family::Ipv4Unicast, v4), (Family::Ipv6Unicast, v6)];
                let changes = self.gr.session_down(Instant::now(), &reason, &received);
                self.apply_stale(changes);
            }
            Action::RoutesReceived {
                family,
                announced,
                withdrawn,
                total,
            } => {
                debug!(%peer, ?family, announced, withdrawn, total, "routes received");
                self.status.send_modify(|s| match family {
                    Family::Ipv4Unicast => s.received_v4 = total,
                    Family::Ipv6Unicast => s.received_v6 = total,
                });
            }
            Action::EndOfRib(family) => {
                debug!(%peer, ?family, "End-of-RIB received");
                let changes = self.gr.end_of_rib(family);
                self.apply_stale(changes);
            }
            Action::TreatedAsWithdraw(p) => {
                warn!(%peer, problem = ?p, "malformed UPDATE treated as withdraw (RFC 7606)")
            }
            Action::AttributesDiscarded(p) => {
                warn!(%peer, problems = ?p, "attributes discarded from UPDATE (RFC 7606)")
            }
            Action::RouteRefreshRequested(family) => {
                info!(%peer, ?family, "route refresh requested");
                if let Some(ctx) = self.update_ctx {
                    let (updates, _) = ctx.full_table(&self.routes_snapshot());
                    queue.extend(
                        updates
                            .into_iter()
                            .filter(|u| family_of(u) == Some(family))
                            .map(Input::SendUpdate),
                    );
                }
            }
            Action::NotEstablished => debug!(%peer, "UPDATE dropped: session not established"),
        }
    }

    fn start_dial(&mut self) {
        if let Some(d) = self.dial.take() {
            // Still dialling when the connect retry timer fired: the peer never answered (a
            // silent drop, e.g. a TCP-MD5 key mismatch, or a filter).
            if !d.is_finished() {
                info!(peer = %self.cfg.address, "connect failed: no answer before the connect retry timer");
                self.set_error("connect failed: no answer".to_string());
            }
            d.abort();
        }
        self.dial_gen += 1;
        let generation = self.dial_gen;
        let addr = SocketAddr::new(self.cfg.address, self.cfg.port);
        let opts = SocketOptions {
            source: self.cfg.source,
            ttl: self.cfg.ttl(),
            password: self.cfg.password.clone(),
        };
        let timeout = self.cfg.session.connect_retry.max(Duration::from_secs(1));
        let tx = self.tx.clone();
        debug!(peer = %self.cfg.address, "dialling");
        self.dial = Some(tokio::spawn(async move {
            let r = socket::dial(addr, &opts, timeout).await;
            let _ = tx.send(Event::Dialed(generation, r));
        }));
    }
}

/// The family an announcing UPDATE carries.
fn family_of(u: &Update) -> Option<Family> {
    if !u.nlri.is_empty() {
        Some(Family::Ipv4Unicast)
    } else if !u.announced_v6().is_empty() {
        Some(Family::Ipv6Unicast)
    } else {
        None
    }
}

fn log_notification_sent(peer: std::net::IpAddr, n: &Notification) {
    warn!(
        %peer,
        code = n.error.code_name(),
        subcode = n.error.subcode_name(),
        "NOTIFICATION sent: {n}"
    );
}

async fn read_loop(conn: ConnId, mut r: OwnedReadHalf, tx: mpsc::UnboundedSender<Event>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(Event::Closed(conn));
                return;
            }
            Ok(n) => {
                if tx.send(Event::Bytes(conn, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        }
    }
}

async fn write_loop(mut w: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<WriterCmd>) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            WriterCmd::Bytes(b) => {
                if w.write_all(&b).await.is_err() {
                    return;
                }
            }
            WriterCmd::Close => {
                let _ = w.shutdown().await;
                return;
            }
        }
    }
}

/// The state a new peer starts in.
pub(crate) fn initial_status() -> PeerStatus {
    PeerStatus {
        state: State::Idle,
        received_v4: 0,
        received_v6: 0,
        established: 0,
        last_error: None,
        stale_v4: 0,
        stale_v6: 0,
    }
}
