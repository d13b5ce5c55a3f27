//! OPEN capabilities (RFC 5492): multiprotocol, route refresh, graceful restart, 4-octet ASN.

use super::Reader;
use super::nlri::{Afi, Family, Safi};
use super::notification::{Notification, OpenMessageError};

/// Capability codes (IANA).
const MULTIPROTOCOL: u8 = 1;
const ROUTE_REFRESH: u8 = 2;
const GRACEFUL_RESTART: u8 = 64;
const FOUR_OCTET_AS: u8 = 65;

/// Graceful restart flag: the sender has restarted (RFC 4724 §3 "R").
const GR_RESTART_STATE: u16 = 0x8000;
/// Graceful restart flag: the sender supports GR for NOTIFICATIONs (RFC 8538 "N").
const GR_NOTIFICATION: u16 = 0x4000;
/// Per-family flag: forwarding state was preserved (RFC 4724 §3 "F").
const GR_FORWARDING: u8 = 0x80;
/// Restart time is the low 12 bits of the first word.
const GR_TIME_MASK: u16 = 0x0fff;

/// One capability advertised in an OPEN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Multiprotocol extensions for one AFI/SAFI (RFC 4760).
    Multiprotocol {
        /// Address family.
        afi: Afi,
        /// Subsequent address family.
        safi: Safi,
    },
    /// Route refresh (RFC 2918).
    RouteRefresh,
    /// Graceful restart (RFC 4724).
    GracefulRestart(GracefulRestart),
    /// Support for 4-octet ASNs, carrying the speaker's real ASN (RFC 6793).
    FourOctetAs(u32),
    /// A capability we do not interpret, kept as received.
    Unknown {
        /// Capability code.
        code: u8,
        /// Capability value.
        value: Vec<u8>,
    },
}

/// Whether the speaker says it has just restarted (RFC 4724 "Restart State" bit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RestartState {
    /// A normal start: the peer should not wait for us to resync.
    #[default]
    Normal,
    /// We restarted and the peer should keep our routes until End-of-RIB.
    Restarting,
}

/// Whether graceful restart also applies to sessions closed by NOTIFICATION (RFC 8538 "N" bit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NotificationSupport {
    /// Only TCP failures are graceful.
    #[default]
    NotSupported,
    /// NOTIFICATIONs other than Hard Reset are graceful too.
    Supported,
}

/// Whether forwarding state for a family survived the restart (RFC 4724 "F" bit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ForwardingState {
    /// Forwarding state was not preserved.
    #[default]
    NotPreserved,
    /// Forwarding state was preserved.
    Preserved,
}

/// The graceful restart capability value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct GracefulRestart {
    /// Whether the sender has just restarted.
    pub restart_state: RestartState,
    /// RFC 8538 support.
    pub notification: NotificationSupport,
    /// Seconds the peer should keep our routes after the session drops (12 bits: 0..=4095).
    pub restart_time: u16,
    /// Families for which the sender can restart gracefully.
    pub families: Vec<GracefulRestartFamily>,
}

/// One family in the graceful restart capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GracefulRestartFamily {
    /// Address family.
    pub afi: Afi,
    /// Subsequent address family.
    pub safi: Safi,
    /// Whether forwarding state was kept.
    pub forwarding: ForwardingState,
}

impl Capability {
    /// Multiprotocol capability for one of our families.
    pub fn multiprotocol(family: Family) -> Self {
        Self::Multiprotocol {
            afi: family.afi(),
            safi: family.safi(),
        }
    }

    /// Appends code, length and value.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        let code = match self {
            Self::Multiprotocol { afi, safi } => {
                out.extend_from_slice(&u16::from(*afi).to_be_bytes());
                out.push(0); // reserved
                out.push((*safi).into());
                MULTIPROTOCOL
            }
            Self::RouteRefresh => ROUTE_REFRESH,
            Self::GracefulRestart(gr) => {
                let mut word = gr.restart_time & GR_TIME_MASK;
                if gr.restart_state == RestartState::Restarting {
                    word |= GR_RESTART_STATE;
                }
                if gr.notification == NotificationSupport::Supported {
                    word |= GR_NOTIFICATION;
                }
                out.extend_from_slice(&word.to_be_bytes());
                for f in &gr.families {
                    out.extend_from_slice(&u16::from(f.afi).to_be_bytes());
                    out.push(f.safi.into());
                    out.push(match f.forwarding {
                        ForwardingState::Preserved => GR_FORWARDING,
                        ForwardingState::NotPreserved => 0,
                    });
                }
                GRACEFUL_RESTART
            }
            Self::FourOctetAs(asn) => {
                out.extend_from_slice(&asn.to_be_bytes());
                FOUR_OCTET_AS
            }
            Self::Unknown { code, value } => {
                out.extend_from_slice(value);
                *code
            }
        };
        out[start] = code;
        // A capability value longer than 255 bytes cannot be expressed; only an Unknown built
        // by the caller could be that long, and it is truncated in the length field by design.
        out[start + 1] = u8::try_from(out.len() - start - 2).unwrap_or(u8::MAX);
    }

    /// Decodes all capabilities in one Capabilities optional parameter.
    pub fn decode_all(buf: &[u8]) -> Result<Vec<Self>, Notification> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while !r.is_empty() {
            let malformed = || Notification::open(OpenMessageError::Unspecific, buf.to_vec());
            let code = r.u8().ok_or_else(malformed)?;
            let len = r.u8().ok_or_else(malformed)?;
            let value = r.take(usize::from(len)).ok_or_else(malformed)?;
            out.push(Self::decode_one(code, value).ok_or_else(|| {
                // The data of the NOTIFICATION is the offending capability (RFC 5492 §3 style).
                let mut data = vec![code, len];
                data.extend_from_slice(value);
                Notification::open(OpenMessageError::Unspecific, data)
            })?);
        }
        Ok(out)
    }

    fn decode_one(code: u8, value: &[u8]) -> Option<Self> {
        let mut r = Reader::new(value);
        let cap = match code {
            MULTIPROTOCOL => {
                let afi = r.u16()?.into();
                let _reserved = r.u8()?;
                let safi = r.u8()?.into();
                Self::Multiprotocol { afi, safi }
            }
            ROUTE_REFRESH => Self::RouteRefresh,
            GRACEFUL_RESTART => {
                let word = r.u16()?;
                let mut families = Vec::new();
                while !r.is_empty() {
                    let afi = r.u16()?.into();
                    let safi = r.u8()?.into();
                    let flags = r.u8()?;
                    let forwarding = if flags & GR_FORWARDING != 0 {
                        ForwardingState::Preserved
                    } else {
                        ForwardingState::NotPreserved
                    };
                    families.push(GracefulRestartFamily {
                        afi,
                        safi,
                        forwarding,
                    });
                }
                Self::GracefulRestart(GracefulRestart {
                    restart_state: if word & GR_RESTART_STATE != 0 {
                        RestartState::Restarting
                    } else {
                        RestartState::Normal
                    },
                    notification: if word & GR_NOTIFICATION != 0 {
                        NotificationSupport::Supported
                    } else {
                        NotificationSupport::NotSupported
                    },
                    restart_time: word & GR_TIME_MASK,
                    families,
                })
            }
            FOUR_OCTET_AS => Self::FourOctetAs(r.u32()?),
            _ => {
                return Some(Self::Unknown {
                    code,
                    value: value.to_vec(),
                });
            }
        };
        // Known capabilities have exact lengths; trailing bytes mean the peer and we disagree
        // about the layout, so refuse rather than guess.
        r.is_empty().then_some(cap)
    }
}
