//! NOTIFICATION messages (RFC 4271 §4.5) with their error codes and subcodes as typed enums.

use super::{Reader, wire_enum};
use std::fmt;

wire_enum! {
    /// Subcodes of Message Header Error (code 1).
    pub enum MessageHeaderError: u8 {
        /// No subcode given.
        Unspecific = 0 => "unspecific",
        /// The marker was not all ones.
        ConnectionNotSynchronized = 1 => "connection not synchronized",
        /// The length field is out of range for the message type.
        BadMessageLength = 2 => "bad message length",
        /// The type field names no known message.
        BadMessageType = 3 => "bad message type",
    }
}

wire_enum! {
    /// Subcodes of OPEN Message Error (code 2).
    pub enum OpenMessageError: u8 {
        /// No subcode given.
        Unspecific = 0 => "unspecific",
        /// Version other than 4.
        UnsupportedVersionNumber = 1 => "unsupported version number",
        /// The peer's AS is not the one configured.
        BadPeerAs = 2 => "bad peer AS",
        /// The BGP identifier is not usable.
        BadBgpIdentifier = 3 => "bad BGP identifier",
        /// An optional parameter type we do not know.
        UnsupportedOptionalParameter = 4 => "unsupported optional parameter",
        /// Hold time of 1 or 2 seconds, or refused by local policy.
        UnacceptableHoldTime = 6 => "unacceptable hold time",
        /// A capability we require is missing (RFC 5492).
        UnsupportedCapability = 7 => "unsupported capability",
        /// BGP role mismatch (RFC 9234).
        RoleMismatch = 11 => "role mismatch",
    }
}

wire_enum! {
    /// Subcodes of UPDATE Message Error (code 3).
    pub enum UpdateMessageError: u8 {
        /// No subcode given.
        Unspecific = 0 => "unspecific",
        /// Attribute list cannot be parsed, or an attribute appears twice.
        MalformedAttributeList = 1 => "malformed attribute list",
        /// A well-known attribute (optional bit clear) we do not know.
        UnrecognizedWellKnownAttribute = 2 => "unrecognized well-known attribute",
        /// ORIGIN, AS_PATH or NEXT_HOP missing with NLRI present.
        MissingWellKnownAttribute = 3 => "missing well-known attribute",
        /// Optional/transitive flags conflict with the attribute type.
        AttributeFlagsError = 4 => "attribute flags error",
        /// Attribute length wrong for its type.
        AttributeLengthError = 5 => "attribute length error",
        /// ORIGIN value is not IGP, EGP or INCOMPLETE.
        InvalidOriginAttribute = 6 => "invalid ORIGIN attribute",
        /// NEXT_HOP is not a usable address.
        InvalidNextHopAttribute = 8 => "invalid NEXT_HOP attribute",
        /// A recognised optional attribute is malformed.
        OptionalAttributeError = 9 => "optional attribute error",
        /// A prefix in withdrawn routes or NLRI is malformed.
        InvalidNetworkField = 10 => "invalid network field",
        /// AS_PATH segments do not parse.
        MalformedAsPath = 11 => "malformed AS_PATH",
    }
}

wire_enum! {
    /// Subcodes of Finite State Machine Error (code 5, RFC 6608).
    pub enum FsmError: u8 {
        /// No subcode given.
        Unspecific = 0 => "unspecific",
        /// Unexpected message in OpenSent.
        UnexpectedMessageInOpenSent = 1 => "receive unexpected message in OpenSent state",
        /// Unexpected message in OpenConfirm.
        UnexpectedMessageInOpenConfirm = 2 => "receive unexpected message in OpenConfirm state",
        /// Unexpected message in Established.
        UnexpectedMessageInEstablished = 3 => "receive unexpected message in Established state",
    }
}

wire_enum! {
    /// Subcodes of Cease (code 6, RFC 4486, RFC 8538, RFC 9384).
    pub enum CeaseSubcode: u8 {
        /// No subcode given.
        Unspecific = 0 => "unspecific",
        /// Maximum number of prefixes reached.
        MaximumPrefixesReached = 1 => "maximum number of prefixes reached",
        /// Operator shut the session down.
        AdministrativeShutdown = 2 => "administrative shutdown",
        /// Peer removed from configuration.
        PeerDeconfigured = 3 => "peer de-configured",
        /// Operator reset the session.
        AdministrativeReset = 4 => "administrative reset",
        /// Connection refused, e.g. one is already established.
        ConnectionRejected = 5 => "connection rejected",
        /// Configuration changed in a way that needs a new session.
        OtherConfigurationChange = 6 => "other configuration change",
        /// Loser of a connection collision (RFC 4271 §6.8).
        ConnectionCollisionResolution = 7 => "connection collision resolution",
        /// Out of resources.
        OutOfResources = 8 => "out of resources",
        /// Hard reset: do not keep routes for graceful restart (RFC 8538).
        HardReset = 9 => "hard reset",
        /// BFD declared the path down (RFC 9384).
        BfdDown = 10 => "BFD down",
    }
}

wire_enum! {
    /// Subcodes of ROUTE-REFRESH Message Error (code 7, RFC 7313).
    pub enum RouteRefreshError: u8 {
        /// No subcode given.
        Unspecific = 0 => "unspecific",
        /// ROUTE-REFRESH length is not 23.
        InvalidMessageLength = 1 => "invalid message length",
    }
}

/// The error code and subcode of a NOTIFICATION.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Code 1.
    MessageHeader(MessageHeaderError),
    /// Code 2.
    Open(OpenMessageError),
    /// Code 3.
    Update(UpdateMessageError),
    /// Code 4; the subcode is always 0.
    HoldTimerExpired,
    /// Code 5.
    Fsm(FsmError),
    /// Code 6.
    Cease(CeaseSubcode),
    /// Code 7.
    RouteRefresh(RouteRefreshError),
    /// A code this implementation does not name, kept as received.
    Other {
        /// Error code.
        code: u8,
        /// Error subcode.
        subcode: u8,
    },
}

impl ErrorCode {
    /// Builds the typed value from wire code and subcode.
    pub fn from_wire(code: u8, subcode: u8) -> Self {
        match code {
            1 => Self::MessageHeader(subcode.into()),
            2 => Self::Open(subcode.into()),
            3 => Self::Update(subcode.into()),
            // Subcode 0 is the only defined one; anything else is kept verbatim.
            4 if subcode == 0 => Self::HoldTimerExpired,
            5 => Self::Fsm(subcode.into()),
            6 => Self::Cease(subcode.into()),
            7 => Self::RouteRefresh(subcode.into()),
            _ => Self::Other { code, subcode },
        }
    }

    /// Wire code and subcode.
    pub fn to_wire(self) -> (u8, u8) {
        match self {
            Self::MessageHeader(s) => (1, s.into()),
            Self::Open(s) => (2, s.into()),
            Self::Update(s) => (3, s.into()),
            Self::HoldTimerExpired => (4, 0),
            Self::Fsm(s) => (5, s.into()),
            Self::Cease(s) => (6, s.into()),
            Self::RouteRefresh(s) => (7, s.into()),
            Self::Other { code, subcode } => (code, subcode),
        }
    }

    /// The name of the error code alone.
    pub fn code_name(self) -> &'static str {
        match self {
            Self::MessageHeader(_) => "message header error",
            Self::Open(_) => "OPEN message error",
            Self::Update(_) => "UPDATE message error",
            Self::HoldTimerExpired => "hold timer expired",
            Self::Fsm(_) => "finite state machine error",
            Self::Cease(_) => "cease",
            Self::RouteRefresh(_) => "ROUTE-REFRESH message error",
            Self::Other { .. } => "unknown error",
        }
    }

    /// The name of the subcode alone.
    pub fn subcode_name(self) -> &'static str {
        match self {
            Self::MessageHeader(s) => s.name(),
            Self::Open(s) => s.name(),
            Self::Update(s) => s.name(),
            Self::HoldTimerExpired => "unspecific",
            Self::Fsm(s) => s.name(),
            Self::Cease(s) => s.name(),
            Self::RouteRefresh(s) => s.name(),
            Self::Other { .. } => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, subcode) = self.to_wire();
        write!(
            f,
            "{} / {} ({code}/{subcode})",
            self.code_name(),
            self.subcode_name()
        )
    }
}

/// A NOTIFICATION: why a session is being closed, with the data the RFC asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Notification {
    /// Error code and subcode.
    pub error: ErrorCode,
    /// Diagnostic data; its meaning depends on the error.
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION with the given data.
    pub fn new(error: ErrorCode, data: impl Into<Vec<u8>>) -> Self {
        Self {
            error,
            data: data.into(),
        }
    }

    /// A NOTIFICATION without data.
    pub fn bare(error: ErrorCode) -> Self {
        Self {
            error,
            data: Vec::new(),
        }
    }

    /// Message header error.
    pub fn header(sub: MessageHeaderError, data: impl Into<Vec<u8>>) -> Self {
        Self::new(ErrorCode::MessageHeader(sub), data)
    }

    /// OPEN message error.
    pub fn open(sub: OpenMessageError, data: impl Into<Vec<u8>>) -> Self {
        Self::new(ErrorCode::Open(sub), data)
    }

    /// UPDATE message error.
    pub fn update(sub: UpdateMessageError, data: impl Into<Vec<u8>>) -> Self {
        Self::new(ErrorCode::Update(sub), data)
    }

    /// Cease with the given subcode.
    pub fn cease(sub: CeaseSubcode) -> Self {
        Self::bare(ErrorCode::Cease(sub))
    }

    /// Encodes the message body (after the header): code, subcode, data.
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        let (code, subcode) = self.error.to_wire();
        out.push(code);
        out.push(subcode);
        out.extend_from_slice(&self.data);
    }

    /// Decodes the message body; the header has already checked it is at least 2 bytes.
    pub(crate) fn decode_body(body: &[u8]) -> Option<Self> {
        let mut r = Reader::new(body);
        let code = r.u8()?;
        let subcode = r.u8()?;
        Some(Self {
            error: ErrorCode::from_wire(code, subcode),
            data: r.rest().to_vec(),
        })
    }

    /// The shutdown communication of an administrative shutdown/reset (RFC 9003), if any.
    pub fn shutdown_message(&self) -> Option<&str> {
        match self.error {
            ErrorCode::Cease(
                CeaseSubcode::AdministrativeShutdown | CeaseSubcode::AdministrativeReset,
            ) => {
                let (&len, rest) = self.data.split_first()?;
                std::str::from_utf8(rest.get(..usize::from(len))?).ok()
            }
            _ => None,
        }
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        if let Some(msg) = self.shutdown_message() {
            write!(f, ": {msg:?}")?;
        } else if !self.data.is_empty() {
            write!(f, " data")?;
            for b in &self.data {
                write!(f, " {b:02x}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Notification {}
