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
    assert_eq!(ZapPolicy::default().amount(&good), Ok(21_000));

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
        assert_eq!(ZapPolicy::default().amount(&event), want, "case {i}");
    }
}

proptest::proptest! {
    /// Any string as an invoice: a verdict, never a panic.
    #[test]
    fn any_invoice_string_is_judged(s in "(ln|LN)?\\\\PC{0,120}") {
        let zapper = Zapper::new(2);
        let _ = ZapPolicy::default().amount(&receipt(&zapper, &"cd".repeat(32), Some(&s), Some("{}")));
    }
}

/// `Invoice::decode` accepts what `Bolt11Invoice::from_str` accepts, with the same
/// amount, on invoices that differ in each checked part.
/// Appendix F: "The zapReceipt event's pubkey MUST be the same as the recipient's
/// lnurl provider's nostrPubkey"; an allowlisted zapper counts for anyone; until the
/// provider is known the receipt waits.
#[test]
fn signers_are_judged_by_the_recipients_lnurl_server() {
    let (server, stranger) = (Keys::generate(), Keys::generate());
    let (bob, carol) = (Keys::generate().public_key(), Keys::generate().public_key());
    let signed = |by: &Keys, to: &PublicKey| {
        EventBuilder::new(Kind::ZapReceipt, "")
            .tag(Tag::public_key(*to))
            .sign_with_keys(by)
            .unwrap()
    };
    let servers: HashMap<PublicKey, Option<PublicKey>> =
        [(bob, Some(server.public_key())), (carol, None)].into();
    let lnurl = Trust {
        lnurl: true,
        servers: servers.clone(),
        ..Default::default()
    };
    let allow = Trust {
        allow: vec![stranger.public_key()],
        ..lnurl.clone()
    };
    let offline = Trust {
        lnurl: false,
        ..allow.clone()
    };
    let any = Trust {
        any: true,
        ..Default::default()
    };
    let nobody = Keys::generate().public_key();
    let cases = [
        (&lnurl, &server, bob, Ok(())),
        (&lnurl, &stranger, bob, Err(ZapReject::UnknownSigner)),
        (&lnurl, &server, carol, Err(ZapReject::UnknownSigner)),
        (&lnurl, &server, nobody, Err(ZapReject::Pending)),
        (&allow, &stranger, nobody, Ok(())),
        (&offline, &server, bob, Err(ZapReject::UnknownSigner)),
        (&offline, &stranger, bob, Ok(())),
        (&any, &stranger, bob, Ok(())),
    ];
    for (i, (trust, by, to, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            signed_by_trusted(&signed(by, &to), Some(trust)),
            want,
            "case {i}"
        );
    }
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
