//! BGP-4 (RFC 4271) wire codec and session state machine, sans-IO.
//!
//! Everything here takes bytes, time and configuration as plain values and returns plain values:
//! decoded messages, the NOTIFICATION to send when input is bad, or the actions a session wants an
//! I/O driver to perform. Nothing here opens a socket, reads a clock or spawns a task.

pub mod attribute;
pub mod capability;
pub mod community;
pub mod fsm;
pub mod message;
pub mod mp;
pub mod nlri;
pub mod notification;
pub mod update;

pub use attribute::{
    Aggregator, AsPath, AsSegment, AttrFlags, AttributeProblem, Community, ErrorAction,
    LargeCommunity, MpReach, MpUnreach, Origin, PathAttribute, SegmentType, UnknownAttribute,
};
pub use capability::{
    Capability, ForwardingState, GracefulRestart, GracefulRestartFamily, NotificationSupport,
    RestartState,
};
pub use fsm::{Action, CloseReason, ConnId, Direction, Input, PeerConfig, Session, State, Timer};
pub use message::{
    DecodeError, Header, Message, MessageType, Open, RefreshSubtype, RouteRefresh, frame,
};
pub use nlri::{Afi, Family, Safi};
pub use notification::{
    CeaseSubcode, ErrorCode, FsmError, MessageHeaderError, Notification, OpenMessageError,
    RouteRefreshError, UpdateMessageError,
};
pub use update::{TreatAsWithdraw, Update, UpdateOutcome};

/// The BGP version this speaker talks.
pub const BGP_VERSION: u8 = 4;
/// The placeholder 2-octet ASN for 4-octet ASNs (RFC 6793).
pub const AS_TRANS: u16 = 23456;
/// Length of the fixed message header: marker, length, type.
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended message capability (RFC 4271 §4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;

/// How wide ASNs are in AS_PATH and AGGREGATOR, negotiated by the 4-octet ASN capability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AsWidth {
    /// 2-octet ASNs: the peer did not advertise the capability, or we have not negotiated yet.
    #[default]
    Two,
    /// 4-octet ASNs: both sides advertised the capability (RFC 6793).
    Four,
}

/// Whether the peer is in our AS; some attributes (LOCAL_PREF) only make sense on iBGP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PeerKind {
    /// eBGP: the peer is in another AS.
    #[default]
    External,
    /// iBGP: the peer is in our AS.
    Internal,
}

/// What the encoder needs to know about the session (negotiated capabilities).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeContext {
    /// ASN width for AS_PATH and AGGREGATOR.
    pub as_width: AsWidth,
}

/// What the decoder needs to know about the session (negotiated capabilities, peer kind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeContext {
    /// ASN width for AS_PATH and AGGREGATOR.
    pub as_width: AsWidth,
    /// eBGP or iBGP: LOCAL_PREF from an eBGP peer is discarded (RFC 7606 §7.5).
    pub peer_kind: PeerKind,
}

/// Declares a wire enum: named values plus a catch-all so no input byte is ever rejected by
/// conversion alone; the caller decides whether an unknown value is an error.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this implementation does not name.
            Other($repr),
        }

        impl $name {
            /// The name used in RFCs and logs.
            pub fn name(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )*
                    Self::Other(_) => "unknown",
                }
            }
        }

        impl From<$repr> for $name {
            fn from(v: $repr) -> Self {
                match v {
                    $( $value => Self::$variant, )*
                    other => Self::Other(other),
                }
            }
        }

        impl From<$name> for $repr {
            fn from(v: $name) -> $repr {
                match v {
                    $( $name::$variant => $value, )*
                    $name::Other(other) => other,
                }
            }
        }
    };
}
pub(crate) use wire_enum;

/// A bounds-checked reader over a byte slice: every read says whether the bytes were there, so a
/// length field in the input can never make us index past the end.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn ipv4(&mut self) -> Option<std::net::Ipv4Addr> {
        self.u32().map(std::net::Ipv4Addr::from)
    }
    pub(crate) fn ipv6(&mut self) -> Option<std::net::Ipv6Addr> {
        self.take(16).map(|b| {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::Ipv6Addr::from(a)
        })
    }
}
