//! BFD (RFC 5880, single hop per RFC 5881), asynchronous mode, sans-IO.
//!
//! [`ControlPacket`] is the wire codec; [`Session`] is fed received packets and timer expiries
//! with the current time and answers with [`Action`]s (send, arm a timer, state changed). No
//! authentication, no demand mode, no echo function.

use std::time::Duration;

/// UDP port for single-hop control packets (RFC 5881).
pub const CONTROL_PORT: u16 = 3784;
/// Length of a control packet without authentication.
pub const PACKET_LEN: usize = 24;
/// RFC 5880 §6.8.3: while not Up, send no faster than once a second.
const SLOW_TX: Duration = Duration::from_secs(1);

/// Session states (RFC 5880 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BfdState {
    /// Administratively down.
    AdminDown,
    /// Down.
    Down,
    /// Heard the peer, waiting for it to hear us.
    Init,
    /// Both sides hear each other.
    Up,
}

impl BfdState {
    fn from_wire(v: u8) -> Self {
        match v & 3 {
            0 => Self::AdminDown,
            1 => Self::Down,
            2 => Self::Init,
            _ => Self::Up,
        }
    }
    fn to_wire(self) -> u8 {
        match self {
            Self::AdminDown => 0,
            Self::Down => 1,
            Self::Init => 2,
            Self::Up => 3,
        }
    }
}

/// Diagnostic codes (RFC 5880 §4.1): why the sender's session last went down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Diag {
    /// No diagnostic.
    None,
    /// Control detection time expired.
    DetectionTimeExpired,
    /// Echo function failed.
    EchoFailed,
    /// The neighbour signalled session down.
    NeighborDown,
    /// Forwarding plane reset.
    ForwardingReset,
    /// Path down.
    PathDown,
    /// Concatenated path down.
    ConcatenatedPathDown,
    /// Administratively down.
    AdminDown,
    /// Reverse concatenated path down.
    ReverseConcatenatedPathDown,
    /// A value this implementation does not name.
    Other(u8),
}

impl From<u8> for Diag {
    fn from(v: u8) -> Self {
        match v {
            0 => Self::None,
            1 => Self::DetectionTimeExpired,
            2 => Self::EchoFailed,
            3 => Self::NeighborDown,
            4 => Self::ForwardingReset,
            5 => Self::PathDown,
            6 => Self::ConcatenatedPathDown,
            7 => Self::AdminDown,
            8 => Self::ReverseConcatenatedPathDown,
            o => Self::Other(o),
        }
    }
}

impl From<Diag> for u8 {
    fn from(d: Diag) -> u8 {
        match d {
            Diag::None => 0,
            Diag::DetectionTimeExpired => 1,
            Diag::EchoFailed => 2,
            Diag::NeighborDown => 3,
            Diag::ForwardingReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdminDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Other(o) => o & 0x1F,
        }
    }
}

/// A BFD control packet (RFC 5880 §4.1), without authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ControlPacket {
    /// Diagnostic.
    pub diag: Diag,
    /// Sender's state.
    pub state: BfdState,
    /// Poll: the sender asks for a Final.
    pub poll: bool,
    /// Final: answers a Poll.
    pub fin: bool,
    /// Detect multiplier.
    pub detect_mult: u8,
    /// Sender's discriminator.
    pub my_discr: u32,
    /// The discriminator the sender received from us (0 if none yet).
    pub your_discr: u32,
    /// Desired minimum transmit interval.
    pub desired_min_tx: Duration,
    /// Required minimum receive interval.
    pub required_min_rx: Duration,
    /// Required minimum echo receive interval (0: no echo).
    pub required_min_echo_rx: Duration,
}

/// Why a received packet was discarded (RFC 5880 §6.8.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscardReason {
    /// Shorter than the minimum or than its length field.
    #[error("truncated packet")]
    Truncated,
    /// Version is not 1.
    #[error("unsupported version {0}")]
    Version(u8),
    /// Length field below 24 (26 with authentication).
    #[error("bad length field {0}")]
    Length(u8),
    /// Detect multiplier zero.
    #[error("detect multiplier zero")]
    ZeroMultiplier,
    /// Multipoint bit set.
    #[error("multipoint bit set")]
    Multipoint,
    /// My Discriminator zero.
    #[error("my discriminator zero")]
    ZeroDiscriminator,
    /// Authentication present but not configured.
    #[error("authentication not configured")]
    Authentication,
    /// Your Discriminator zero while the sender is Init or Up.
    #[error("your discriminator zero in state {0:?}")]
    NoYourDiscriminator(BfdState),
    /// Your Discriminator names another session.
    #[error("your discriminator {0} is not ours")]
    WrongDiscriminator(u32),
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl ControlPacket {
    /// Encodes the 24-byte packet.
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (1 << 5) | u8::from(self.diag);
        b[1] = (self.state.to_wire() << 6) | (u8::from(self.poll) << 5) | (u8::from(self.fin) << 4);
        b[2] = self.detect_mult;
        b[3] = PACKET_LEN as u8;
        b[4..8].copy_from_slice(&self.my_discr.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discr.to_be_bytes());
        b[12..16].copy_from_slice(&micros(self.desired_min_tx).to_be_bytes());
        b[16..20].copy_from_slice(&micros(self.required_min_rx).to_be_bytes());
        b[20..24].copy_from_slice(&micros(self.required_min_echo_rx).to_be_bytes());
        b
    }

    /// Decodes and applies the session-independent checks of RFC 5880 §6.8.6.
    pub fn decode(buf: &[u8]) -> Result<Self, DiscardReason> {
        if buf.len() < PACKET_LEN {
            return Err(DiscardReason::Truncated);
        }
        let version = buf[0] >> 5;
        if version != 1 {
            return Err(DiscardReason::Version(version));
        }
        let auth = buf[1] & 0x04 != 0;
        let len = buf[3];
        if usize::from(len) < PACKET_LEN + if auth { 2 } else { 0 } {
            return Err(DiscardReason::Length(len));
        }
        if usize::from(len) > buf.len() {
            return Err(DiscardReason::Truncated);
        }
        if auth {
            return Err(DiscardReason::Authentication);
        }
        if buf[2] == 0 {
            return Err(DiscardReason::ZeroMultiplier);
        }
        if buf[1] & 0x01 != 0 {
            return Err(DiscardReason::Multipoint);
        }
        let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let p = Self {
            diag: Diag::from(buf[0] & 0x1F),
            state: BfdState::from_wire(buf[1] >> 6),
            poll: buf[1] & 0x20 != 0,
            fin: buf[1] & 0x10 != 0,
            detect_mult: buf[2],
            my_discr: word(4),
            your_discr: word(8),
            desired_min_tx: Duration::from_micros(word(12).into()),
            required_min_rx: Duration::from_micros(word(16).into()),
            required_min_echo_rx: Duration::from_micros(word(20).into()),
        };
        if p.my_discr == 0 {
            return Err(DiscardReason::ZeroDiscriminator);
        }
        if p.your_discr == 0 && matches!(p.state, BfdState::Init | BfdState::Up) {
            return Err(DiscardReason::NoYourDiscriminator(p.state));
        }
        Ok(p)
    }
}

mod session;
pub use session::*;
