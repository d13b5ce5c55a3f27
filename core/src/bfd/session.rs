//! The RFC 5880 §6.8 session state machine, asynchronous mode, sans-IO.

use super::{BfdState, ControlPacket, Diag, DiscardReason, SLOW_TX};
use std::time::{Duration, Instant};

/// Per-session settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BfdConfig {
    /// Our discriminator, unique per session and non-zero (chosen by the caller).
    pub local_discr: u32,
    /// How often we would like to send once Up.
    pub desired_min_tx: Duration,
    /// How often we can receive.
    pub required_min_rx: Duration,
    /// Missed packets before declaring the session down.
    pub detect_mult: u8,
}

/// Timers the driver runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BfdTimer {
    /// Send the next periodic packet.
    Transmit,
    /// Nothing heard for the detection time.
    Detect,
}

/// What the driver tells the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BfdInput {
    /// A packet arrived (TTL/hop limit 255 already checked by the driver, RFC 5881 §5).
    Received(ControlPacket),
    /// A timer fired.
    TimerExpired(BfdTimer),
    /// Start sending (from AdminDown).
    Enable,
    /// Administratively down: tell the peer, stop detecting.
    Disable,
}

/// What the session asks the driver to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BfdAction {
    /// Send this packet now.
    Send(ControlPacket),
    /// Arm (or re-arm) a timer.
    SetTimer {
        /// Which.
        timer: BfdTimer,
        /// When.
        at: Instant,
    },
    /// Disarm a timer.
    CancelTimer(BfdTimer),
    /// The state changed; `to == Down` after `Up` is what tears BGP down.
    StateChanged {
        /// Old state.
        from: BfdState,
        /// New state.
        to: BfdState,
        /// Why (our diagnostic).
        diag: Diag,
    },
    /// A packet was discarded.
    Discarded(DiscardReason),
}

/// One BFD session with one neighbour.
#[derive(Debug)]
pub struct BfdSession {
    config: BfdConfig,
    state: BfdState,
    diag: Diag,
    remote_discr: u32,
    remote_state: BfdState,
    remote_min_rx: Duration,
    remote_min_tx: Duration,
    remote_mult: u8,
    /// A Poll Sequence is running (we changed our intervals, §6.8.3).
    polling: bool,
    /// When the periodic packet is due, so a state change can bring it forward but never
    /// push it back past the peer's detection time.
    tx_at: Option<Instant>,
    /// Jitter percent for the transmit interval (§6.8.7: 75..=100, 75..=90 with mult 1).
    jitter: u8,
}

impl BfdSession {
    /// An AdminDown session; [`BfdInput::Enable`] starts it.
    pub fn new(config: BfdConfig) -> Self {
        Self {
            config,
            state: BfdState::AdminDown,
            diag: Diag::None,
            remote_discr: 0,
            remote_state: BfdState::Down,
            remote_min_rx: Duration::from_micros(1),
            remote_min_tx: Duration::ZERO,
            remote_mult: 0,
            polling: false,
            tx_at: None,
            // §6.8.7: with a multiplier of 1 the interval must be at most 90% even before the
            // driver sets a jitter, or a packet can arrive exactly as the peer's detection fires.
            jitter: if config.detect_mult == 1 { 90 } else { 100 },
        }
    }

    /// Current state.
    pub fn state(&self) -> BfdState {
        self.state
    }

    /// Sets the jitter percentage for transmit intervals armed from now on.
    pub fn set_jitter(&mut self, percent: u8) {
        let max = if self.config.detect_mult == 1 {
            90
        } else {
            100
        };
        self.jitter = percent.clamp(75, max);
    }

    fn desired_tx(&self) -> Duration {
        if self.state == BfdState::Up {
            self.config.desired_min_tx
        } else {
            self.config.desired_min_tx.max(SLOW_TX)
        }
    }

    /// Detection time (§6.8.4): the remote multiplier times the agreed remote transmit rate.
    pub fn detection_time(&self) -> Duration {
        self.config.required_min_rx.max(self.remote_min_tx) * u32::from(self.remote_mult)
    }

    fn packet(&self, fin: bool) -> ControlPacket {
        ControlPacket {
            diag: self.diag,
            state: self.state,
            poll: self.polling && !fin,
            fin,
            detect_mult: self.config.detect_mult,
            my_discr: self.config.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: self.desired_tx(),
            required_min_rx: self.config.required_min_rx,
            required_min_echo_rx: Duration::ZERO,
        }
    }

    /// One (jittered) transmit interval from `now`.
    fn tx_due(&self, now: Instant) -> Instant {
        let interval = self.desired_tx().max(self.remote_min_rx);
        now + interval * u32::from(self.jitter) / 100
    }

    fn set_tx(&mut self, at: Instant, out: &mut Vec<BfdAction>) {
        self.tx_at = Some(at);
        out.push(BfdAction::SetTimer {
            timer: BfdTimer::Transmit,
            at,
        });
    }

    /// Schedules the next periodic packet one interval from now.
    fn arm_tx(&mut self, now: Instant, out: &mut Vec<BfdAction>) {
        let at = self.tx_due(now);
        self.set_tx(at, out);
    }

    /// Re-schedules after a state or interval change: earlier if the new interval says so,
    /// never later than already due (re-arming from `now` on every change let a peer with
    /// multiplier 1 time out while we kept postponing).
    fn rearm_tx(&mut self, now: Instant, out: &mut Vec<BfdAction>) {
        let fresh = self.tx_due(now);
        let at = self.tx_at.map_or(fresh, |due| due.min(fresh));
        self.set_tx(at, out);
    }

    fn set_state(&mut self, out: &mut Vec<BfdAction>, to: BfdState, diag: Diag) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.diag = diag;
        // Entering or leaving Up changes our transmit interval: tell the peer with a Poll.
        if (from == BfdState::Up) != (to == BfdState::Up)
            && self.config.desired_min_tx < SLOW_TX
            && to != BfdState::AdminDown
        {
            self.polling = true;
        }
        out.push(BfdAction::StateChanged { from, to, diag });
    }

    /// Feeds one input at `now`.
    pub fn handle(&mut self, now: Instant, input: BfdInput) -> Vec<BfdAction> {
        let mut out = Vec::new();
        match input {
            BfdInput::Enable => {
                if self.state == BfdState::AdminDown {
                    self.set_state(&mut out, BfdState::Down, Diag::None);
                    self.arm_tx(now, &mut out);
                }
            }
            BfdInput::Disable => {
                self.set_state(&mut out, BfdState::AdminDown, Diag::AdminDown);
                out.push(BfdAction::Send(self.packet(false)));
                out.push(BfdAction::CancelTimer(BfdTimer::Detect));
                out.push(BfdAction::CancelTimer(BfdTimer::Transmit));
                self.tx_at = None;
            }
            BfdInput::TimerExpired(BfdTimer::Transmit) => {
                if self.state != BfdState::AdminDown {
                    // §6.8.7: no periodic packets until we know the peer's discriminator,
                    // unless we are the active side (we always are).
                    out.push(BfdAction::Send(self.packet(false)));
                    self.arm_tx(now, &mut out);
                }
            }
            BfdInput::TimerExpired(BfdTimer::Detect) => {
                if matches!(self.state, BfdState::Init | BfdState::Up) {
                    self.set_state(&mut out, BfdState::Down, Diag::DetectionTimeExpired);
                    self.remote_discr = 0;
                    self.rearm_tx(now, &mut out);
                }
            }
            BfdInput::Received(p) => self.received(now, p, &mut out),
        }
        out
    }

    fn received(&mut self, now: Instant, p: ControlPacket, out: &mut Vec<BfdAction>) {
        if p.your_discr != 0 && p.your_discr != self.config.local_discr {
            out.push(BfdAction::Discarded(DiscardReason::WrongDiscriminator(
                p.your_discr,
            )));
            return;
        }
        if self.state == BfdState::AdminDown {
            return;
        }
        let before = self.state;
        self.remote_discr = p.my_discr;
        self.remote_state = p.state;
        self.remote_mult = p.detect_mult;
        self.remote_min_tx = p.desired_min_tx;
        let old_rx = self.remote_min_rx;
        self.remote_min_rx = p.required_min_rx.max(Duration::from_micros(1));
        if p.fin {
            self.polling = false;
        }
        match (self.state, p.state) {
            // set_state ignores Down -> Down, so the diagnostic of an earlier failure stays.
            (_, BfdState::AdminDown) => self.set_state(out, BfdState::Down, Diag::NeighborDown),
            (BfdState::Down, BfdState::Down) => self.set_state(out, BfdState::Init, Diag::None),
            (BfdState::Down, BfdState::Init) | (BfdState::Init, BfdState::Init | BfdState::Up) => {
                self.set_state(out, BfdState::Up, Diag::None)
            }
            (BfdState::Up, BfdState::Down) => {
                self.set_state(out, BfdState::Down, Diag::NeighborDown)
            }
            _ => {}
        }
        if matches!(self.state, BfdState::Init | BfdState::Up) {
            out.push(BfdAction::SetTimer {
                timer: BfdTimer::Detect,
                at: now + self.detection_time(),
            });
        } else {
            out.push(BfdAction::CancelTimer(BfdTimer::Detect));
        }
        if p.poll {
            // §6.8.7: answer a Poll with a Final at once, outside the periodic schedule.
            out.push(BfdAction::Send(self.packet(true)));
        }
        if self.remote_min_rx != old_rx || self.state != before {
            self.rearm_tx(now, out);
        }
    }
}
