use super::*;
use nostr_sdk::{EventBuilder, EventId, Keys, Tag, Timestamp};
use nostr_sync_tools::dataset::Zapper;

/// A receipt with these parts (a field `None` is left out).
fn receipt(zapper: &Zapper, p: &str, bolt11: Option<&str>, description: Option<&str>) -> Event {
    let mut b = EventBuilder::new(Kind::ZapReceipt, "")
        .tag(Tag::parse(["p", p]).unwrap())
        .tag(Tag::parse(["e", &"ab".repeat(32)]).unwrap());
    if let Some(i) = bolt11 {
        b = b.tag(Tag::parse(["bolt11", i]).unwrap());
    }
    if let Some(d) = description {
        b = b.tag(Tag::parse(["description", d]).unwrap());
    }
    b.sign_with_keys(&zapper.keys).unwrap()
}

#[test]
fn receipts_count_only_when_they_hold_together() {
    let zapper = Zapper::new(1);
    let sender = Keys::generate();
    let recipient = Keys::generate().public_key();
    let target = (EventId::from_hex(&"ab".repeat(32)).unwrap(), recipient);
    let t = Timestamp::from(1_700_000_000);
    let good = zapper.receipt(&sender, target, 21_000, t);
    assert_eq!(zap_of(&good).map(|z| z.msats), Ok(21_000));

    let request = |msats: &str| {
        EventBuilder::new(Kind::ZapRequest, "")
            .tag(Tag::public_key(recipient))
            .tag(Tag::event(target.0))
            .tag(Tag::parse(["amount", msats]).unwrap())
            .sign_with_keys(&sender)
            .unwrap()
            .as_json()
    };
    let p = recipient.to_hex();
    let req = request("21000");
    let inv = zapper.invoice(&req, 21_000, t);
    let other_inv = zapper.invoice("something else", 21_000, t);
    let req_5 = request("5000");
    let inv_for_5 = zapper.invoice(&req_5, 21_000, t);
    let truncated = &inv[..inv.len() - 5];
    let unsigned = req.replace("\"sig\":\"", "\"sig\":\"00");
    let cases: Vec<(Event, Result<i64, ZapReject>)> = vec![
        (receipt(&zapper, &p, Some(&inv), Some(&req)), Ok(21_000)),
        (
            receipt(&zapper, &p, None, Some(&req)),
            Err(ZapReject::NoInvoice),
        ),
        (
            receipt(&zapper, &p, Some("lnbc5\u{e9}1pvjluez"), Some(&req)),
            Err(ZapReject::BadInvoice),
        ),
        (
            receipt(&zapper, &p, Some(truncated), Some(&req)),
            Err(ZapReject::BadInvoice),
        ),
        (
            receipt(&zapper, &p, Some("lnbc210000001pvjluez"), Some(&req)),
            Err(ZapReject::BadInvoice),
        ),
        (
            receipt(&zapper, &p, Some(&inv), None),
            Err(ZapReject::BadRequest),
        ),
        (
            receipt(&zapper, &p, Some(&inv), Some("{}")),
            Err(ZapReject::BadRequest),
        ),
        (
            receipt(&zapper, &p, Some(&inv), Some(&unsigned)),
            Err(ZapReject::BadRequest),
        ),
        (
            receipt(&zapper, &p, Some(&other_inv), Some(&req)),
            Err(ZapReject::HashMismatch),
        ),
        (
            receipt(&zapper, &p, Some(&inv_for_5), Some(&req_5)),
            Err(ZapReject::AmountMismatch),
        ),
        (
            receipt(
                &zapper,
                &Keys::generate().public_key().to_hex(),
                Some(&inv),
                Some(&req),
            ),
            Err(ZapReject::TagMismatch),
        ),
    ];
    for (i, (event, want)) in cases.into_iter().enumerate() {
        assert_eq!(zap_of(&event).map(|z| z.msats), want, "case {i}");
    }
}

proptest::proptest! {
    /// Any string as an invoice: a verdict, never a panic.
    #[test]
    fn any_invoice_string_is_judged(s in "(ln|LN)?\\\\PC{0,120}") {
        let zapper = Zapper::new(2);
        let _ = zap_of(&receipt(&zapper, &"cd".repeat(32), Some(&s), Some("{}")));
    }
}

/// `Invoice::decode` accepts what `Bolt11Invoice::from_str` accepts, with the same
/// amount, on invoices that differ in each checked part.
/// `(name, value)` tags, as a case gives them.
type Tags = Vec<[String; 2]>;

/// A policy, a receipt, when it arrived, its target's and server's facts, the verdict.
type JudgeCase<'a> = (
    &'a ZapPolicy,
    Event,
    i64,
    Option<&'a TargetFacts>,
    Option<&'a ServerFacts>,
    Result<i64, ZapReject>,
);

/// A receipt signed by `by` whose request (by `sender`) and receipt carry `request`
/// and `receipt` tags (`p`, `e`, `a`), for 21 sats.
fn tagged(by: &Keys, request: &[[&str; 2]], receipt: &[[&str; 2]]) -> Event {
    let zapper = Zapper::with_keys(by.clone(), 5);
    let t = Timestamp::from(1_700_000_000);
    let req = EventBuilder::new(Kind::ZapRequest, "")
        .tags(request.iter().map(|t| Tag::parse(*t).unwrap()))
        .tag(Tag::parse(["amount", "21000"]).unwrap())
        .sign_with_keys(&Keys::generate())
        .unwrap()
        .as_json();
    let invoice = zapper.invoice(&req, 21_000, t);
    EventBuilder::new(Kind::ZapReceipt, "")
        .tags(receipt.iter().map(|t| Tag::parse(*t).unwrap()))
        .tag(Tag::parse(["bolt11", &invoice]).unwrap())
        .tag(Tag::parse(["description", &req]).unwrap())
        .custom_created_at(t)
        .sign_with_keys(by)
        .unwrap()
}

/// NIP-57: "The zap request event MUST have only one p tag", "0 or 1 e tags", and the
/// receipt's `p`, `e` and `a` are the request's. The target is the `e`, else the `a`.
#[test]
fn one_rule_names_the_recipient_and_the_target() {
    let server = Keys::generate();
    let bob = Keys::generate().public_key().to_hex();
    let carol = Keys::generate().public_key().to_hex();
    let (x, y) = ("ab".repeat(32), "cd".repeat(32));
    let address = format!("30023:{bob}:Post");
    let p = |k: &str| ["p", k].map(str::to_owned);
    let cases: Vec<(Tags, Tags, Result<Target, ZapReject>)> = vec![
        (
            vec![p(&bob), ["e".into(), x.clone()]],
            vec![p(&bob), ["e".into(), x.clone()]],
            Ok(Target::Event(x.clone())),
        ),
        // The count went to the last `e`, the check compared the first.
        (
            vec![p(&bob), ["e".into(), x.clone()]],
            vec![p(&bob), ["e".into(), x.clone()], ["e".into(), y.clone()]],
            Err(ZapReject::TagMismatch),
        ),
        (
            vec![p(&bob), ["e".into(), x.clone()]],
            vec![p(&bob), ["e".into(), y.clone()]],
            Err(ZapReject::TagMismatch),
        ),
        (
            vec![p(&bob), p(&carol), ["e".into(), x.clone()]],
            vec![p(&bob), p(&carol), ["e".into(), x.clone()]],
            Err(ZapReject::TagMismatch),
        ),
        (
            vec![p(&bob), ["e".into(), x.clone()]],
            vec![p(&bob), p(&bob), ["e".into(), x.clone()]],
            Err(ZapReject::TagMismatch),
        ),
        (
            vec![["p".into(), "junk".into()], ["e".into(), x.clone()]],
            vec![["p".into(), "junk".into()], ["e".into(), x.clone()]],
            Err(ZapReject::TagMismatch),
        ),
        (
            vec![p(&bob), ["a".into(), address.clone()]],
            vec![p(&bob), ["a".into(), address.clone()]],
            Ok(Target::Address(address.clone())),
        ),
        (
            vec![p(&bob), ["a".into(), address.clone()]],
            vec![p(&bob), ["a".into(), address.to_lowercase()]],
            Err(ZapReject::TagMismatch),
        ),
        (
            vec![
                p(&bob),
                ["e".into(), x.clone()],
                ["a".into(), address.clone()],
            ],
            vec![
                p(&bob),
                ["e".into(), x.clone()],
                ["a".into(), address.clone()],
            ],
            Ok(Target::Event(x.clone())),
        ),
        (vec![p(&bob)], vec![p(&bob)], Err(ZapReject::NoTarget)),
        (
            vec![p(&bob), ["e".into(), "short".into()]],
            vec![p(&bob), ["e".into(), "short".into()]],
            Err(ZapReject::NoTarget),
        ),
    ];
    for (i, (request, receipt, want)) in cases.into_iter().enumerate() {
        let request: Vec<[&str; 2]> = request.iter().map(|t| [&*t[0], &*t[1]]).collect();
        let receipt: Vec<[&str; 2]> = receipt.iter().map(|t| [&*t[0], &*t[1]]).collect();
        let got = zap_of(&tagged(&server, &request, &receipt)).map(|z| z.target);
        assert_eq!(got, want, "case {i}");
    }
}

/// A zap counts for its target only when it pays the target's author or one of the
/// target's `zap` splits (appendix G), or for an address, the address's pubkey; and
/// only when signed by a key the recipient's server named (appendix F) or an
/// allowlisted zapper. It waits for a target not stored and for a server not asked
/// since the receipt arrived.
#[test]
fn receipts_are_judged_against_their_target_and_server() {
    let (server, old_server, stranger) = (Keys::generate(), Keys::generate(), Keys::generate());
    let (bob, split) = (
        Keys::generate().public_key().to_hex(),
        Keys::generate().public_key().to_hex(),
    );
    let x = "ab".repeat(32);
    let bobs = TargetFacts {
        author: bob.clone(),
        splits: vec![],
    };
    let shared = TargetFacts {
        author: Keys::generate().public_key().to_hex(),
        splits: vec![split.clone(), bob.clone()],
    };
    let strangers = TargetFacts {
        author: Keys::generate().public_key().to_hex(),
        splits: vec![],
    };
    let known = ServerFacts {
        keys: vec![
            server.public_key().to_hex(),
            old_server.public_key().to_hex(),
        ],
        checked_at: 1_000,
    };
    let to_x = |by: &Keys, p: &str| {
        let tags = [["p", p], ["e", x.as_str()]];
        tagged(by, &tags, &tags)
    };
    let lnurl = ZapPolicy {
        any: false,
        allow: vec![],
        lnurl: true,
    };
    let allow = ZapPolicy {
        allow: vec![stranger.public_key()],
        ..lnurl.clone()
    };
    let offline = ZapPolicy {
        lnurl: false,
        ..allow.clone()
    };
    let address = format!("30023:{bob}:d");
    let to_address = |p: &str| {
        let tags = [["p", p], ["a", address.as_str()]];
        tagged(&server, &tags, &tags)
    };
    let ok = Ok(21_000);
    let any = any_signer();
    let wrong = Err(ZapReject::WrongRecipient);
    let (unknown, pending) = (Err(ZapReject::UnknownSigner), Err(ZapReject::Pending));
    #[rustfmt::skip]
    let cases: Vec<JudgeCase> = vec![
        (&lnurl, to_x(&server, &bob), 900, Some(&bobs), Some(&known), ok),
        (&lnurl, to_x(&old_server, &bob), 900, Some(&bobs), Some(&known), ok),
        (&lnurl, to_x(&server, &split), 900, Some(&shared), Some(&known), ok),
        (&lnurl, to_x(&server, &bob), 900, Some(&shared), Some(&known), ok),
        // The forged zap: the attacker's own server, on somebody else's note.
        (&lnurl, to_x(&server, &bob), 900, Some(&strangers), Some(&known), wrong),
        (&any, to_x(&stranger, &bob), 900, Some(&strangers), None, wrong),
        (&lnurl, to_x(&server, &bob), 900, None, Some(&known), Err(ZapReject::AwaitingTarget)),
        (&lnurl, to_x(&stranger, &bob), 900, Some(&bobs), Some(&known), unknown),
        // Arrived after the server's last answer: it may have changed provider.
        (&lnurl, to_x(&stranger, &bob), 1_000, Some(&bobs), Some(&known), pending),
        (&lnurl, to_x(&server, &bob), 900, Some(&bobs), None, pending),
        (&allow, to_x(&stranger, &bob), 900, Some(&bobs), None, ok),
        (&offline, to_x(&server, &bob), 900, Some(&bobs), Some(&known), unknown),
        (&offline, to_x(&stranger, &bob), 900, Some(&bobs), None, ok),
        (&lnurl, to_address(&bob), 900, None, Some(&known), ok),
        (&lnurl, to_address(&split), 900, None, Some(&known), wrong),
    ];
    for (i, (policy, receipt, first_seen, target, server, want)) in cases.into_iter().enumerate() {
        let got = policy
            .judge(&receipt, first_seen, target, server)
            .map(|z| z.msats);
        assert_eq!(got, want, "case {i}");
    }
}

fn any_signer() -> ZapPolicy {
    ZapPolicy::default()
}

/// Appendix G: `["zap", pubkey, relay, weight]`.
#[test]
fn split_tags_name_recipients() {
    let (a, b) = ("aa".repeat(32), "BB".repeat(32));
    let note = EventBuilder::text_note("x")
        .tag(Tag::parse(["zap", &a, "wss://r", "1"]).unwrap())
        .tag(Tag::parse(["zap", &b]).unwrap())
        .tag(Tag::parse(["zap", "short"]).unwrap())
        .tag(Tag::parse(["p", &"cc".repeat(32)]).unwrap())
        .sign_with_keys(&Keys::generate())
        .unwrap();
    assert_eq!(
        split_recipients(note.tags.iter().map(|t| t.as_slice())),
        vec![a, b.to_lowercase()]
    );
    let facts = TargetFacts::of(&note);
    assert!(facts.pays(&note.pubkey.to_hex()));
    assert!(!facts.pays(&"cc".repeat(32)));
}

#[test]
fn decode_agrees_with_the_full_invoice_parser() {
    use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
    use lightning_invoice::{Bolt11Invoice, Currency, InvoiceBuilder, PaymentSecret};
    let secp = Secp256k1::new();
    let node = SecretKey::from_slice(&[7u8; 32]).unwrap();
    let other = SecretKey::from_slice(&[9u8; 32]).unwrap();
    let node_pk = PublicKey::from_secret_key(&secp, &node);
    let hash = sha256::Hash::hash(b"request");
    let base = || {
        InvoiceBuilder::new(Currency::Bitcoin)
            .amount_milli_satoshis(21_000)
            .payment_hash(sha256::Hash::hash(b"payment"))
            .duration_since_epoch(std::time::Duration::from_secs(1_700_000_000))
            .min_final_cltv_expiry_delta(144)
    };
    let signed = |raw: lightning_invoice::RawBolt11Invoice, key: &SecretKey| {
        raw.sign::<_, ()>(|m| Ok(secp.sign_ecdsa_recoverable(m, key)))
            .unwrap()
            .to_string()
    };
    let with_secret = || {
        base()
            .description_hash(hash)
            .payment_secret(PaymentSecret([1; 32]))
    };
    let valid = signed(with_secret().build_raw().unwrap(), &node);
    let cases = [
        ("valid", valid.clone()),
        (
            "stated key, signed by it",
            signed(
                with_secret().payee_pub_key(node_pk).build_raw().unwrap(),
                &node,
            ),
        ),
        (
            "stated key, signed by another",
            signed(
                with_secret().payee_pub_key(node_pk).build_raw().unwrap(),
                &other,
            ),
        ),
        (
            "no payment secret",
            signed(base().description_hash(hash).build_raw().unwrap(), &node),
        ),
        (
            "description in clear",
            signed(
                base()
                    .description("request".into())
                    .payment_secret(PaymentSecret([1; 32]))
                    .build_raw()
                    .unwrap(),
                &node,
            ),
        ),
        ("truncated", valid[..valid.len() - 3].to_string()),
        ("one character of the signature altered: bad checksum", {
            let mut v = valid.clone().into_bytes();
            let i = v.len() - 20;
            v[i] = if v[i] == b'q' { b'p' } else { b'q' };
            String::from_utf8(v).unwrap()
        }),
    ];
    for (name, invoice) in cases {
        let want = Bolt11Invoice::from_str(&invoice)
            .ok()
            .map(|i| i.amount_milli_satoshis());
        let got = Invoice::decode(&invoice).map(|i| i.msats);
        assert_eq!(got, want, "{name}");
    }
    assert!(Invoice::decode(&valid).is_some(), "the valid case is valid");
}
