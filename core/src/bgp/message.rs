//! Message framing and the OPEN, KEEPALIVE, NOTIFICATION and ROUTE-REFRESH messages
//! (RFC 4271 §4, RFC 2918, RFC 7313, RFC 9072).

use super::capability::Capability;
use super::nlri::{Afi, Family, Safi};
use super::notification::{MessageHeaderError, Notification, OpenMessageError, RouteRefreshError};
use super::update::{TreatAsWithdraw, Update, UpdateOutcome};
use super::{
    AS_TRANS, BGP_VERSION, DecodeContext, EncodeContext, HEADER_LEN, MAX_MESSAGE_LEN, Reader,
    wire_enum,
};
use std::net::Ipv4Addr;

wire_enum! {
    /// Message type codes.
    pub enum MessageType: u8 {
        /// OPEN.
        Open = 1 => "OPEN",
        /// UPDATE.
        Update = 2 => "UPDATE",
        /// NOTIFICATION.
        Notification = 3 => "NOTIFICATION",
        /// KEEPALIVE.
        Keepalive = 4 => "KEEPALIVE",
        /// ROUTE-REFRESH (RFC 2918).
        RouteRefresh = 5 => "ROUTE-REFRESH",
    }
}

/// The optional parameter type that carries capabilities (RFC 5492).
const PARAM_CAPABILITIES: u8 = 2;
/// Marks the RFC 9072 extended optional parameters layout.
const PARAM_EXTENDED: u8 = 255;
/// Smallest OPEN: header plus version, AS, hold time, identifier, parameter length.
const MIN_OPEN_LEN: usize = HEADER_LEN + 10;
/// Smallest UPDATE: header plus the two length fields.
const MIN_UPDATE_LEN: usize = HEADER_LEN + 4;
/// Smallest NOTIFICATION: header plus code and subcode.
const MIN_NOTIFICATION_LEN: usize = HEADER_LEN + 2;

/// A checked message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Total message length including the header.
    pub length: u16,
    /// Message type.
    pub kind: MessageType,
}

impl Header {
    /// Checks marker, length and type (RFC 4271 §6.1); `buf` must hold at least the header.
    pub fn parse(buf: &[u8]) -> Result<Self, Notification> {
        let mut r = Reader::new(buf);
        let too_short = || Notification::header(MessageHeaderError::BadMessageLength, Vec::new());
        let marker = r.take(16).ok_or_else(too_short)?;
        if marker.iter().any(|&b| b != 0xFF) {
            return Err(Notification::header(
                MessageHeaderError::ConnectionNotSynchronized,
                Vec::new(),
            ));
        }
        let length = r.u16().ok_or_else(too_short)?;
        let kind = MessageType::from(r.u8().ok_or_else(too_short)?);
        let len = usize::from(length);
        let bad_len =
            || Notification::header(MessageHeaderError::BadMessageLength, length.to_be_bytes());
        if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
            return Err(bad_len());
        }
        let fits = match kind {
            MessageType::Open => len >= MIN_OPEN_LEN,
            MessageType::Update => len >= MIN_UPDATE_LEN,
            MessageType::Notification => len >= MIN_NOTIFICATION_LEN,
            MessageType::Keepalive => len == HEADER_LEN,
            // Checked by the ROUTE-REFRESH decoder, which has its own error code (RFC 7313).
            MessageType::RouteRefresh => true,
            MessageType::Other(t) => {
                return Err(Notification::header(
                    MessageHeaderError::BadMessageType,
                    [t],
                ));
            }
        };
        if !fits {
            return Err(bad_len());
        }
        Ok(Self { length, kind })
    }
}

/// Finds the next complete message in a byte stream: `Ok(Some(len))` when `buf` starts with a
/// whole message of `len` bytes, `Ok(None)` when more bytes are needed.
pub fn frame(buf: &[u8]) -> Result<Option<usize>, Notification> {
    if buf.len() < HEADER_LEN {
        // Reject a bad marker early so a desynchronised stream fails before 19 bytes arrive.
        if buf.iter().take(16).any(|&b| b != 0xFF) {
            return Err(Notification::header(
                MessageHeaderError::ConnectionNotSynchronized,
                Vec::new(),
            ));
        }
        return Ok(None);
    }
    let header = Header::parse(buf)?;
    let len = usize::from(header.length);
    Ok((buf.len() >= len).then_some(len))
}

/// An OPEN message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Open {
    /// Protocol version; decoding rejects anything but 4.
    pub version: u8,
    /// 2-octet AS field: our ASN, or AS_TRANS when it needs 4 octets.
    pub my_as: u16,
    /// Proposed hold time in seconds: 0 or at least 3.
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities, each sent in its own optional parameter.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// An OPEN for `asn`, adding the 4-octet ASN capability (always: RFC 6793 speakers must).
    pub fn new(
        asn: u32,
        hold_time: u16,
        bgp_id: Ipv4Addr,
        mut capabilities: Vec<Capability>,
    ) -> Self {
        if !capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
        {
            capabilities.push(Capability::FourOctetAs(asn));
        }
        Self {
            version: BGP_VERSION,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's real ASN: from the 4-octet capability if present, else the AS field.
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    /// The 4-octet ASN capability value, if advertised.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(a) => Some(*a),
            _ => None,
        })
    }

    /// Families advertised with the multiprotocol capability; without any, IPv4 unicast is
    /// implied (RFC 4760 §8).
    pub fn families(&self) -> Vec<Family> {
        let mp: Vec<_> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol { afi, safi } => Some(Family::from_afi_safi(*afi, *safi)),
                _ => None,
            })
            .collect();
        if mp.is_empty() {
            return vec![Family::Ipv4Unicast];
        }
        mp.into_iter().flatten().collect()
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(self.version);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let mut params = Vec::new();
        let caps: Vec<Vec<u8>> = self
            .capabilities
            .iter()
            .map(|c| {
                let mut v = Vec::new();
                c.encode(&mut v);
                v
            })
            .collect();
        let classic_len: usize = caps.iter().map(|c| c.len() + 2).sum();
        if classic_len <= 255 {
            for c in &caps {
                params.push(PARAM_CAPABILITIES);
                params.push(c.len() as u8); // each capability is at most 257 bytes; see below
                params.extend_from_slice(c);
            }
            out.push(classic_len as u8); // checked above
        } else {
            // RFC 9072: too many capabilities for a one-octet length.
            for c in &caps {
                params.push(PARAM_CAPABILITIES);
                params.extend_from_slice(&u16::try_from(c.len()).unwrap_or(u16::MAX).to_be_bytes());
                params.extend_from_slice(c);
            }
            out.push(255);
            out.push(PARAM_EXTENDED);
            out.extend_from_slice(
                &u16::try_from(params.len())
                    .unwrap_or(u16::MAX)
                    .to_be_bytes(),
            );
        }
        out.extend_from_slice(&params);
    }

    fn decode_body(body: &[u8]) -> Result<Self, Notification> {
        let malformed = || Notification::open(OpenMessageError::Unspecific, Vec::new());
        let mut r = Reader::new(body);
        let version = r.u8().ok_or_else(malformed)?;
        if version != BGP_VERSION {
            // The data is the largest version we support (RFC 4271 §6.2).
            return Err(Notification::open(
                OpenMessageError::UnsupportedVersionNumber,
                [0, BGP_VERSION],
            ));
        }
        let my_as = r.u16().ok_or_else(malformed)?;
        let hold_time = r.u16().ok_or_else(malformed)?;
        if hold_time == 1 || hold_time == 2 {
            return Err(Notification::open(
                OpenMessageError::UnacceptableHoldTime,
                Vec::new(),
            ));
        }
        let bgp_id = r.ipv4().ok_or_else(malformed)?;
        if bgp_id.is_unspecified() {
            return Err(Notification::open(
                OpenMessageError::BadBgpIdentifier,
                Vec::new(),
            ));
        }
        let mut opt_len = usize::from(r.u8().ok_or_else(malformed)?);
        let extended = opt_len == 255 && r.rest().first() == Some(&PARAM_EXTENDED);
        if extended {
            r.u8();
            opt_len = usize::from(r.u16().ok_or_else(malformed)?);
        }
        let params = r.take(opt_len).ok_or_else(malformed)?;
        if !r.is_empty() {
            return Err(malformed());
        }
        let mut p = Reader::new(params);
        let mut capabilities = Vec::new();
        while !p.is_empty() {
            let kind = p.u8().ok_or_else(malformed)?;
            let len = if extended {
                p.u16()
            } else {
                p.u8().map(u16::from)
            }
            .ok_or_else(malformed)?;
            let value = p.take(usize::from(len)).ok_or_else(malformed)?;
            if kind != PARAM_CAPABILITIES {
                return Err(Notification::open(
                    OpenMessageError::UnsupportedOptionalParameter,
                    Vec::new(),
                ));
            }
            capabilities.extend(Capability::decode_all(value)?);
        }
        Ok(Self {
            version,
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        })
    }
}

wire_enum! {
    /// ROUTE-REFRESH message subtype (RFC 7313).
    pub enum RefreshSubtype: u8 {
        /// A plain request to resend the table.
        Normal = 0 => "normal",
        /// Beginning of route refresh.
        BeginningOfRefresh = 1 => "BoRR",
        /// End of route refresh.
        EndOfRefresh = 2 => "EoRR",
    }
}

/// A ROUTE-REFRESH message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    /// Address family.
    pub afi: Afi,
    /// Subtype (RFC 7313); 0 for a plain request.
    pub subtype: RefreshSubtype,
    /// Subsequent address family.
    pub safi: Safi,
}

impl RouteRefresh {
    /// A plain refresh request for a family.
    pub fn request(family: Family) -> Self {
        Self {
            afi: family.afi(),
            subtype: RefreshSubtype::Normal,
            safi: family.safi(),
        }
    }
}

/// Any BGP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH.
    RouteRefresh(RouteRefresh),
}

/// Why a message could not be used as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Send this NOTIFICATION and close the session.
    SessionReset(Notification),
    /// An UPDATE whose routes must be withdrawn, the session staying up (RFC 7606).
    TreatAsWithdraw(TreatAsWithdraw),
}

impl Message {
    /// The message type.
    pub fn kind(&self) -> MessageType {
        match self {
            Self::Open(_) => MessageType::Open,
            Self::Update(_) => MessageType::Update,
            Self::Notification(_) => MessageType::Notification,
            Self::Keepalive => MessageType::Keepalive,
            Self::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }

    /// The whole message, header included. Callers keep UPDATEs under 4096 bytes.
    pub fn encode(&self, ctx: &EncodeContext) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&[0xFF; 16]);
        out.extend_from_slice(&[0, 0]);
        out.push(self.kind().into());
        match self {
            Self::Open(o) => o.encode_body(&mut out),
            Self::Update(u) => u.encode_body(ctx, &mut out),
            Self::Notification(n) => n.encode_body(&mut out),
            Self::Keepalive => {}
            Self::RouteRefresh(rr) => {
                out.extend_from_slice(&u16::from(rr.afi).to_be_bytes());
                out.push(rr.subtype.into());
                out.push(rr.safi.into());
            }
        }
        let len = u16::try_from(out.len()).unwrap_or(u16::MAX).to_be_bytes();
        out[16..18].copy_from_slice(&len);
        out
    }

    /// Decodes exactly one message. UPDATEs whose attributes RFC 7606 discards come back
    /// without them; use [`Update::decode`] to see what was discarded.
    pub fn decode(buf: &[u8], ctx: &DecodeContext) -> Result<Self, DecodeError> {
        let reset = DecodeError::SessionReset;
        let header = Header::parse(buf).map_err(reset)?;
        if usize::from(header.length) != buf.len() {
            return Err(reset(Notification::header(
                MessageHeaderError::BadMessageLength,
                header.length.to_be_bytes(),
            )));
        }
        let body = &buf[HEADER_LEN..];
        Ok(match header.kind {
            MessageType::Open => Self::Open(Open::decode_body(body).map_err(reset)?),
            MessageType::Update => match Update::decode(body, ctx) {
                UpdateOutcome::Ok(u) | UpdateOutcome::AttributesDiscarded { update: u, .. } => {
                    Self::Update(u)
                }
                UpdateOutcome::TreatAsWithdraw(t) => return Err(DecodeError::TreatAsWithdraw(t)),
                UpdateOutcome::SessionReset(n) => return Err(reset(n)),
            },
            MessageType::Notification => {
                Self::Notification(Notification::decode_body(body).ok_or_else(|| {
                    reset(Notification::header(
                        MessageHeaderError::BadMessageLength,
                        header.length.to_be_bytes(),
                    ))
                })?)
            }
            MessageType::Keepalive => Self::Keepalive,
            MessageType::RouteRefresh => match *body {
                [a0, a1, subtype, safi] => Self::RouteRefresh(RouteRefresh {
                    afi: u16::from_be_bytes([a0, a1]).into(),
                    subtype: subtype.into(),
                    safi: safi.into(),
                }),
                // RFC 7313 §5: the data is the whole message.
                _ => {
                    return Err(reset(Notification::new(
                        super::ErrorCode::RouteRefresh(RouteRefreshError::InvalidMessageLength),
                        buf.to_vec(),
                    )));
                }
            },
            MessageType::Other(t) => {
                return Err(reset(Notification::header(
                    MessageHeaderError::BadMessageType,
                    [t],
                )));
            }
        })
    }
}
