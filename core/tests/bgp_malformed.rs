//! A table of malformed inputs, each with the exact NOTIFICATION or RFC 7606 outcome expected.

use ferrolb_core::bgp::*;

const D4: DecodeContext = DecodeContext {
    as_width: AsWidth::Four,
    peer_kind: PeerKind::External,
};
const D2: DecodeContext = DecodeContext {
    as_width: AsWidth::Two,
    peer_kind: PeerKind::External,
};

/// What a decoder made of an input.
#[derive(Debug, PartialEq)]
enum Got {
    /// Fine (possibly after discarding attributes with these type codes).
    Ok { discarded: Vec<u8> },
    /// RFC 7606 treat-as-withdraw with this subcode, withdrawing this many prefixes.
    Withdraw(UpdateMessageError, usize),
    /// Session reset with this error.
    Reset(ErrorCode),
}

fn got(bytes: &[u8], ctx: &DecodeContext) -> Got {
    match Header::parse(bytes) {
        Err(n) => return Got::Reset(n.error),
        Ok(h) if h.kind == MessageType::Update && usize::from(h.length) == bytes.len() => {
            return match Update::decode(&bytes[19..], ctx) {
                UpdateOutcome::Ok(_) => Got::Ok { discarded: vec![] },
                UpdateOutcome::AttributesDiscarded { discarded, .. } => Got::Ok {
                    discarded: discarded.iter().map(|p| p.type_code).collect(),
                },
                UpdateOutcome::TreatAsWithdraw(t) => Got::Withdraw(
                    t.reason.subcode,
                    t.withdrawn_v4.len() + t.withdrawn_v6.len(),
                ),
                UpdateOutcome::SessionReset(n) => Got::Reset(n.error),
            };
        }
        Ok(_) => {}
    }
    match Message::decode(bytes, ctx) {
        Ok(_) => Got::Ok { discarded: vec![] },
        Err(DecodeError::SessionReset(n)) => Got::Reset(n.error),
        Err(DecodeError::TreatAsWithdraw(t)) => {
            Got::Withdraw(t.reason.subcode, t.withdrawn_v4.len())
        }
    }
}

/// A message with a correct header around `body`.
fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xFF; 16];
    v.extend_from_slice(&u16::try_from(19 + body.len()).unwrap().to_be_bytes());
    v.push(kind);
    v.extend_from_slice(body);
    v
}

/// An UPDATE with correct length fields.
fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = u16::try_from(withdrawn.len())
        .unwrap()
        .to_be_bytes()
        .to_vec();
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&u16::try_from(attrs.len()).unwrap().to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    msg(2, &body)
}

const ORIGIN: &[u8] = &[0x40, 1, 1, 0];
const AS_PATH: &[u8] = &[0x40, 2, 6, 2, 1, 0, 0, 0xFD, 0xE9];
const NEXT_HOP: &[u8] = &[0x40, 3, 4, 192, 0, 2, 1];
const NLRI: &[u8] = &[24, 203, 0, 113];

/// ORIGIN, AS_PATH, NEXT_HOP with one attribute replaced (by type code) or appended.
fn attrs_with(code: u8, replacement: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for (c, a) in [(1, ORIGIN), (2, AS_PATH), (3, NEXT_HOP)] {
        v.extend_from_slice(if c == code { replacement } else { a });
    }
    if code > 3 {
        v.extend_from_slice(replacement);
    }
    v
}

fn open(version: u8, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
    let mut body = vec![version, 0xFD, 0xE9];
    body.extend_from_slice(&hold.to_be_bytes());
    body.extend_from_slice(&id);
    body.push(u8::try_from(params.len()).unwrap());
    body.extend_from_slice(params);
    msg(1, &body)
}

#[test]
fn malformed_table() {
    use ErrorCode as C;
    use MessageHeaderError as H;
    use OpenMessageError as O;
    use UpdateMessageError as U;
    let ok = || Got::Ok { discarded: vec![] };

    let mut bad_marker = msg(4, &[]);
    bad_marker[3] = 0xFE;
    let mut short = msg(4, &[]);
    short[17] = 18;
    let mut long = msg(2, &[0; 4100]);
    long[16..18].copy_from_slice(&4097u16.to_be_bytes());
    let mut length_beyond_buffer = msg(4, &[]);
    length_beyond_buffer[17] = 30; // claims more than is there: not one whole message
    let mp_reach_v6 = |prefix_len: u8, nh_len: u8| {
        let mut a = vec![0x80, 14, 0, 0, 2, 1, nh_len];
        a.extend_from_slice(&vec![0x20; usize::from(nh_len)]);
        a.push(0);
        a.push(prefix_len);
        a.extend_from_slice(&[0x20; 16][..usize::from(prefix_len.min(128)).div_ceil(8)]);
        a[2] = u8::try_from(a.len() - 3).unwrap();
        a
    };
    let mut dup_mp = ORIGIN.to_vec();
    dup_mp.extend_from_slice(AS_PATH);
    dup_mp.extend_from_slice(&mp_reach_v6(64, 16));
    dup_mp.extend_from_slice(&mp_reach_v6(64, 16));

    let cases: Vec<(&str, Vec<u8>, &DecodeContext, Got)> = vec![
        // Message header errors (RFC 4271 §6.1).
        (
            "bad marker",
            bad_marker,
            &D4,
            Got::Reset(C::MessageHeader(H::ConnectionNotSynchronized)),
        ),
        (
            "length < 19",
            short,
            &D4,
            Got::Reset(C::MessageHeader(H::BadMessageLength)),
        ),
        (
            "length > 4096",
            long,
            &D4,
            Got::Reset(C::MessageHeader(H::BadMessageLength)),
        ),
        (
            "length beyond buffer",
            length_beyond_buffer,
            &D4,
            Got::Reset(C::MessageHeader(H::BadMessageLength)),
        ),
        (
            "unknown type",
            msg(9, &[]),
            &D4,
            Got::Reset(C::MessageHeader(H::BadMessageType)),
        ),
        (
            "keepalive with body",
            msg(4, &[0]),
            &D4,
            Got::Reset(C::MessageHeader(H::BadMessageLength)),
        ),
        (
            "open too short",
            msg(1, &[4; 9]),
            &D4,
            Got::Reset(C::MessageHeader(H::BadMessageLength)),
        ),
        (
            "update too short",
            msg(2, &[0, 0, 0]),
            &D4,
            Got::Reset(C::MessageHeader(H::BadMessageLength)),
        ),
        (
            "notification too short",
            msg(3, &[6]),
            &D4,
            Got::Reset(C::MessageHeader(H::BadMessageLength)),
        ),
        (
            "route refresh too long",
            msg(5, &[0, 1, 0, 1, 0]),
            &D4,
            Got::Reset(C::RouteRefresh(RouteRefreshError::InvalidMessageLength)),
        ),
        // OPEN errors (RFC 4271 §6.2, RFC 5492).
        (
            "open version 3",
            open(3, 90, [192, 0, 2, 1], &[]),
            &D4,
            Got::Reset(C::Open(O::UnsupportedVersionNumber)),
        ),
        (
            "open hold time 1",
            open(4, 1, [192, 0, 2, 1], &[]),
            &D4,
            Got::Reset(C::Open(O::UnacceptableHoldTime)),
        ),
        (
            "open hold time 2",
            open(4, 2, [192, 0, 2, 1], &[]),
            &D4,
            Got::Reset(C::Open(O::UnacceptableHoldTime)),
        ),
        (
            "open hold time 3",
            open(4, 3, [192, 0, 2, 1], &[]),
            &D4,
            ok(),
        ),
        (
            "open identifier 0",
            open(4, 90, [0, 0, 0, 0], &[]),
            &D4,
            Got::Reset(C::Open(O::BadBgpIdentifier)),
        ),
        (
            "open auth parameter",
            open(4, 90, [192, 0, 2, 1], &[1, 1, 0]),
            &D4,
            Got::Reset(C::Open(O::UnsupportedOptionalParameter)),
        ),
        (
            "open parameter overrun",
            open(4, 90, [192, 0, 2, 1], &[2, 9, 2, 0]),
            &D4,
            Got::Reset(C::Open(O::Unspecific)),
        ),
        (
            "open capability overrun",
            open(4, 90, [192, 0, 2, 1], &[2, 2, 65, 4]),
            &D4,
            Got::Reset(C::Open(O::Unspecific)),
        ),
        (
            "open 4-octet cap too short",
            open(4, 90, [192, 0, 2, 1], &[2, 4, 65, 2, 0, 1]),
            &D4,
            Got::Reset(C::Open(O::Unspecific)),
        ),
        // UPDATE framing: session reset (RFC 7606 §4, §5.3).
        (
            "withdrawn length overrun",
            msg(2, &[0, 9, 24, 203, 0, 113, 0, 0]),
            &D4,
            Got::Reset(C::Update(U::MalformedAttributeList)),
        ),
        (
            "attribute length overrun",
            msg(2, &[0, 0, 0, 40, 0x40, 1, 1, 0]),
            &D4,
            Got::Reset(C::Update(U::MalformedAttributeList)),
        ),
        (
            "nlri prefix length 33",
            update(&[], &attrs_with(0, &[]), &[33, 1, 2, 3, 4, 5]),
            &D4,
            Got::Reset(C::Update(U::InvalidNetworkField)),
        ),
        (
            "nlri truncated",
            update(&[], &attrs_with(0, &[]), &[24, 203, 0]),
            &D4,
            Got::Reset(C::Update(U::InvalidNetworkField)),
        ),
        (
            "withdrawn prefix length 40",
            update(&[40, 1, 2, 3, 4, 5], &[], &[]),
            &D4,
            Got::Reset(C::Update(U::InvalidNetworkField)),
        ),
        (
            "mp_reach prefix length 129",
            update(&[], &mp_reach_v6(129, 16), &[]),
            &D4,
            Got::Reset(C::Update(U::InvalidNetworkField)),
        ),
        (
            "mp_reach next hop length 15",
            update(&[], &mp_reach_v6(64, 15), &[]),
            &D4,
            Got::Reset(C::Update(U::OptionalAttributeError)),
        ),
        (
            "mp_reach twice",
            update(&[], &dup_mp, &[]),
            &D4,
            Got::Reset(C::Update(U::MalformedAttributeList)),
        ),
        (
            "mp_unreach truncated",
            update(&[], &[0x80, 15, 2, 0, 2], &[]),
            &D4,
            Got::Reset(C::Update(U::OptionalAttributeError)),
        ),
        (
            "mp_reach flags well-known",
            update(&[], &[0x40, 15, 3, 0, 2, 1], &[]),
            &D4,
            Got::Reset(C::Update(U::AttributeFlagsError)),
        ),
        (
            "unknown well-known attribute",
            update(&[], &attrs_with(99, &[0x40, 99, 1, 0]), NLRI),
            &D4,
            Got::Reset(C::Update(U::UnrecognizedWellKnownAttribute)),
        ),
        // Treat-as-withdraw (RFC 7606 §3, §4, §7).
        (
            "last attribute overruns list",
            update(&[], &attrs_with(8, &[0xC0, 8, 8, 0, 0]), NLRI),
            &D4,
            Got::Withdraw(U::AttributeLengthError, 1),
        ),
        (
            "attribute header truncated",
            update(&[], &attrs_with(8, &[0xC0, 8]), NLRI),
            &D4,
            Got::Withdraw(U::MalformedAttributeList, 1),
        ),
        (
            "extended length header truncated",
            update(&[], &attrs_with(8, &[0xD0, 8, 0]), NLRI),
            &D4,
            Got::Withdraw(U::MalformedAttributeList, 1),
        ),
        (
            "origin flagged optional",
            update(&[], &attrs_with(1, &[0xC0, 1, 1, 0]), NLRI),
            &D4,
            Got::Withdraw(U::AttributeFlagsError, 1),
        ),
        (
            "origin value 3",
            update(&[], &attrs_with(1, &[0x40, 1, 1, 3]), NLRI),
            &D4,
            Got::Withdraw(U::InvalidOriginAttribute, 1),
        ),
        (
            "origin length 2",
            update(&[], &attrs_with(1, &[0x40, 1, 2, 0, 0]), NLRI),
            &D4,
            Got::Withdraw(U::AttributeLengthError, 1),
        ),
        (
            "as_path segment overrun",
            update(
                &[],
                &attrs_with(2, &[0x40, 2, 10, 2, 3, 0, 0, 0xFD, 0xE9, 0, 0, 0xFD, 0xEA]),
                NLRI,
            ),
            &D4,
            Got::Withdraw(U::MalformedAsPath, 1),
        ),
        (
            "as_path segment type 7",
            update(
                &[],
                &attrs_with(2, &[0x40, 2, 6, 7, 1, 0, 0, 0xFD, 0xE9]),
                NLRI,
            ),
            &D4,
            Got::Withdraw(U::MalformedAsPath, 1),
        ),
        (
            "as_path empty segment",
            update(&[], &attrs_with(2, &[0x40, 2, 2, 2, 0]), NLRI),
            &D4,
            Got::Withdraw(U::MalformedAsPath, 1),
        ),
        (
            "as_path 4-octet read as 2-octet",
            update(
                &[],
                &attrs_with(2, &[0x40, 2, 7, 2, 1, 0, 0, 0xFD, 0xE9, 0]),
                NLRI,
            ),
            &D2,
            Got::Withdraw(U::MalformedAsPath, 1),
        ),
        (
            "next_hop 0.0.0.0",
            update(&[], &attrs_with(3, &[0x40, 3, 4, 0, 0, 0, 0]), NLRI),
            &D4,
            Got::Withdraw(U::InvalidNextHopAttribute, 1),
        ),
        (
            "next_hop multicast",
            update(&[], &attrs_with(3, &[0x40, 3, 4, 224, 0, 0, 1]), NLRI),
            &D4,
            Got::Withdraw(U::InvalidNextHopAttribute, 1),
        ),
        (
            "next_hop length 5",
            update(&[], &attrs_with(3, &[0x40, 3, 5, 192, 0, 2, 1, 0]), NLRI),
            &D4,
            Got::Withdraw(U::AttributeLengthError, 1),
        ),
        (
            "next_hop missing",
            update(&[], &[ORIGIN, AS_PATH].concat(), NLRI),
            &D4,
            Got::Withdraw(U::MissingWellKnownAttribute, 1),
        ),
        (
            "origin missing",
            update(&[], &[AS_PATH, NEXT_HOP].concat(), NLRI),
            &D4,
            Got::Withdraw(U::MissingWellKnownAttribute, 1),
        ),
        (
            "as_path missing for mp_reach",
            update(&[], &[ORIGIN, &mp_reach_v6(64, 16)].concat(), &[]),
            &D4,
            Got::Withdraw(U::MissingWellKnownAttribute, 1),
        ),
        (
            "med length 3",
            update(&[], &attrs_with(4, &[0x80, 4, 3, 0, 0, 1]), NLRI),
            &D4,
            Got::Withdraw(U::AttributeLengthError, 1),
        ),
        (
            "communities length 5",
            update(&[], &attrs_with(8, &[0xC0, 8, 5, 0, 0, 0, 1, 2]), NLRI),
            &D4,
            Got::Withdraw(U::AttributeLengthError, 1),
        ),
        (
            "communities length 0",
            update(&[], &attrs_with(8, &[0xC0, 8, 0]), NLRI),
            &D4,
            Got::Withdraw(U::AttributeLengthError, 1),
        ),
        (
            "large communities length 8",
            update(
                &[],
                &attrs_with(32, &[0xC0, 32, 8, 0, 0, 0, 1, 0, 0, 0, 2]),
                NLRI,
            ),
            &D4,
            Got::Withdraw(U::AttributeLengthError, 1),
        ),
        (
            "withdraw keeps withdrawn too",
            update(&[24, 198, 51, 100], &attrs_with(1, &[0x40, 1, 1, 9]), NLRI),
            &D4,
            Got::Withdraw(U::InvalidOriginAttribute, 2),
        ),
        // Attribute discard (RFC 7606 §3g, §7.5–7.7; RFC 6793).
        (
            "origin twice",
            update(&[], &attrs_with(5, ORIGIN), NLRI),
            &D4,
            Got::Ok { discarded: vec![1] },
        ),
        (
            "atomic_aggregate length 1",
            update(&[], &attrs_with(6, &[0x40, 6, 1, 0]), NLRI),
            &D4,
            Got::Ok { discarded: vec![6] },
        ),
        (
            "aggregator length 5",
            update(&[], &attrs_with(7, &[0xC0, 7, 5, 0, 0, 0, 0, 1]), NLRI),
            &D4,
            Got::Ok { discarded: vec![7] },
        ),
        (
            "local_pref from eBGP",
            update(&[], &attrs_with(5, &[0x40, 5, 4, 0, 0, 0, 100]), NLRI),
            &D4,
            Got::Ok { discarded: vec![5] },
        ),
        (
            "as4_path malformed",
            update(
                &[],
                &attrs_with(2, &[0x40, 2, 4, 2, 1, 0xFD, 0xE9, 0xC0, 17, 3, 2, 1, 0]),
                NLRI,
            ),
            &D2,
            Got::Ok {
                discarded: vec![17],
            },
        ),
        (
            "as4_path from 4-octet peer",
            update(
                &[],
                &attrs_with(17, &[0xC0, 17, 6, 2, 1, 0, 0, 0xFD, 0xE9]),
                NLRI,
            ),
            &D4,
            Got::Ok {
                discarded: vec![17],
            },
        ),
        // Accepted as is.
        (
            "unknown optional attribute",
            update(&[], &attrs_with(99, &[0x80, 99, 1, 7]), NLRI),
            &D4,
            ok(),
        ),
        (
            "withdraw only, no attributes",
            update(&[24, 203, 0, 113], &[], &[]),
            &D4,
            ok(),
        ),
        (
            "host bits set are ignored",
            update(&[], &attrs_with(0, &[]), &[24, 203, 0, 113]),
            &D4,
            ok(),
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes, ctx, want) in cases {
        let have = got(&bytes, ctx);
        if have != want {
            failures.push(format!("{name}: want {want:?}, got {have:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn notification_data_follows_rfc() {
    let mut short = msg(4, &[]);
    short[17] = 18;
    let Err(n) = Header::parse(&short) else {
        panic!()
    };
    assert_eq!(n.data, vec![0, 18], "bad length carries the length field");
    let Err(n) = Header::parse(&msg(9, &[])) else {
        panic!()
    };
    assert_eq!(n.data, vec![9], "bad type carries the type");
    let Err(DecodeError::SessionReset(n)) = Message::decode(&open(3, 90, [192, 0, 2, 1], &[]), &D4)
    else {
        panic!()
    };
    assert_eq!(
        n.data,
        vec![0, 4],
        "unsupported version carries the version we speak"
    );
    let bytes = update(&[], &attrs_with(99, &[0x40, 99, 1, 0]), NLRI);
    let UpdateOutcome::SessionReset(n) = Update::decode(&bytes[19..], &D4) else {
        panic!()
    };
    assert_eq!(
        n.data,
        vec![0x40, 99, 1, 0],
        "attribute errors carry the attribute"
    );
}

#[test]
fn decoders_never_panic_on_truncations() {
    // Every prefix of a valid, rich UPDATE and OPEN decodes to some value without panicking.
    let rich = update(
        &[24, 198, 51, 100],
        &attrs_with(8, &[0xC0, 8, 4, 0xFF, 0xFF, 0xFF, 0x01]),
        NLRI,
    );
    let o = open(4, 90, [192, 0, 2, 1], &[2, 6, 65, 4, 0, 0, 0xFD, 0xE9]);
    for bytes in [rich, o] {
        for cut in 0..bytes.len() {
            let _ = Message::decode(&bytes[..cut], &D4);
            let _ = frame(&bytes[..cut]);
            if cut >= 19 {
                let _ = Update::decode(&bytes[19..cut], &D4);
            }
        }
    }
}
