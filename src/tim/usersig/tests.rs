//! Tests of UserSig generation and verification, and of the secret key's sources and modes.

use super::*;

const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const APP: u64 = 1_400_000_000;
const T0: UnixTime = 1_700_000_000;

fn key() -> SecretKey {
    SecretKey::new(KEY).unwrap()
}

#[test]
fn published_vectors() {
    // (identifier, expire, TLS.sig) from reference section 2.
    let cases = [
        (
            "xiaojun",
            15_552_000,
            "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4=",
        ),
        (
            "administrator",
            86_400,
            "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60=",
        ),
    ];
    for (identifier, expire, want) in cases {
        assert_eq!(tls_sig(APP, &key(), identifier, T0, expire), want);
        let sig = generate(APP, &key(), identifier, expire, T0);
        let d = verify(&sig, APP, &key(), identifier, T0).unwrap();
        assert_eq!(d.sig, want);
    }
}

#[test]
fn generated_sig_decodes_by_hand() {
    let sig = generate(APP, &key(), "administrator", 86_400, T0);
    assert!(
        sig.chars()
            .all(|c| c.is_ascii_alphanumeric() || "*-_".contains(c)),
        "only the service's URL-safe alphabet: {sig}"
    );
    let b64: String = sig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let z = STANDARD.decode(b64).unwrap();
    // RFC 1950: CMF byte says deflate with a 32K window, and the header checksum holds.
    assert_eq!(z[0], 0x78);
    assert_eq!((u16::from(z[0]) * 256 + u16::from(z[1])) % 31, 0);
    let mut json = String::new();
    ZlibDecoder::new(z.as_slice())
        .read_to_string(&mut json)
        .unwrap();
    let v: Value = serde_json::from_str(&json).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 6);
    assert_eq!(v["TLS.ver"], Value::String("2.0".into()));
    assert_eq!(v["TLS.identifier"], Value::String("administrator".into()));
    assert!(v["TLS.sdkappid"].is_u64());
    assert_eq!(v["TLS.sdkappid"].as_u64(), Some(APP));
    assert!(v["TLS.expire"].is_u64());
    assert_eq!(v["TLS.expire"].as_u64(), Some(86_400));
    assert!(v["TLS.time"].is_i64());
    assert_eq!(v["TLS.time"].as_i64(), Some(T0));
    assert_eq!(
        v["TLS.sig"],
        Value::String("yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60=".into())
    );
}

#[test]
fn round_trip() {
    let sig = generate(APP, &key(), "admin", 3600, T0);
    let d = verify(&sig, APP, &key(), "admin", T0 + 10).unwrap();
    assert_eq!(
        d,
        Decoded {
            ver: "2.0".into(),
            identifier: "admin".into(),
            sdkappid: APP,
            time: T0,
            expire: 3600,
            sig: tls_sig(APP, &key(), "admin", T0, 3600),
        }
    );
}

/// Builds a sig from an arbitrary JSON document, to test what verify does with odd content.
fn encode_doc(doc: &Value) -> String {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
    z.write_all(doc.to_string().as_bytes()).unwrap();
    url_safe(&STANDARD.encode(z.finish().unwrap()))
}

#[test]
fn refusals_map_to_service_codes() {
    let good = generate(APP, &key(), "admin", 3600, T0);
    let other_key = SecretKey::new("another-key").unwrap();
    let forged_time = {
        // Same HMAC, but TLS.time pushed forward to extend validity: must fail the HMAC.
        let d = verify(&good, APP, &key(), "admin", T0).unwrap();
        encode_doc(&json!({"TLS.ver": "2.0", "TLS.identifier": "admin",
            "TLS.sdkappid": APP, "TLS.expire": 3600, "TLS.time": T0 + 100, "TLS.sig": d.sig}))
    };
    let k0 = key();
    let cases: Vec<(&str, String, u64, &SecretKey, &str, UnixTime, i64)> = vec![
        ("expired", good.clone(), APP, &k0, "admin", T0 + 3601, 70001),
        (
            "last valid second",
            good.clone(),
            APP,
            &k0,
            "admin",
            T0 + 3600,
            0,
        ),
        (
            "wrong identifier",
            good.clone(),
            APP,
            &k0,
            "root",
            T0,
            70013,
        ),
        (
            "wrong sdkappid",
            good.clone(),
            APP + 1,
            &k0,
            "admin",
            T0,
            70014,
        ),
        (
            "wrong key",
            good.clone(),
            APP,
            &other_key,
            "admin",
            T0,
            70009,
        ),
        ("forged time", forged_time, APP, &k0, "admin", T0, 70009),
        (
            "garbage",
            "%%%not a sig%%%".into(),
            APP,
            &k0,
            "admin",
            T0,
            70003,
        ),
        ("empty", String::new(), APP, &k0, "admin", T0, 70003),
        (
            "base64 but not zlib",
            "aGVsbG8_".into(),
            APP,
            &k0,
            "admin",
            T0,
            70003,
        ),
        (
            "zlib but not JSON",
            {
                let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
                z.write_all(b"not json").unwrap();
                url_safe(&STANDARD.encode(z.finish().unwrap()))
            },
            APP,
            &k0,
            "admin",
            T0,
            70003,
        ),
        (
            "missing field",
            encode_doc(&json!({"TLS.ver": "2.0", "TLS.identifier": "admin"})),
            APP,
            &k0,
            "admin",
            T0,
            70003,
        ),
        (
            "sdkappid of the wrong type",
            encode_doc(&json!({"TLS.ver": "2.0", "TLS.identifier": "admin",
                "TLS.sdkappid": true, "TLS.expire": 1, "TLS.time": 1, "TLS.sig": "x"})),
            APP,
            &k0,
            "admin",
            T0,
            70003,
        ),
    ];
    for (name, sig, app, k, ident, now, want) in cases {
        let got = verify(&sig, app, k, ident, now).map_or_else(|e| e.code(), |_| 0);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn tampered_sig_is_refused() {
    let good = generate(APP, &key(), "admin", 3600, T0);
    // Flip one character in the middle: the result is either undecodable or fails the HMAC.
    let mut chars: Vec<char> = good.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let err = verify(&tampered, APP, &key(), "admin", T0).unwrap_err();
    assert!(
        matches!(err.code(), 70003 | 70009),
        "tampered sig gave {err:?}"
    );
}

#[test]
fn numeric_strings_are_tolerated() {
    let sig = tls_sig(APP, &key(), "admin", T0, 60);
    let s = encode_doc(&json!({"TLS.ver": "2.0", "TLS.identifier": "admin",
        "TLS.sdkappid": APP.to_string(), "TLS.expire": "60", "TLS.time": T0.to_string(),
        "TLS.sig": sig}));
    verify(&s, APP, &key(), "admin", T0).unwrap();
}

/// The key's text is the HMAC key: anything but 64 lower-case hex digits is almost certainly
/// a copy mistake, warned about without quoting the key.
#[test]
fn a_key_that_is_not_64_lower_case_hex_digits_is_warned_about() {
    assert_eq!(key().shape_warning(), None);
    let short = SecretKey::parse(&KEY.as_bytes()[..63], "test").unwrap();
    let warning = short.shape_warning().expect("63 digits");
    assert!(warning.contains("has 63 hexadecimal digits"), "{warning}");
    let double = SecretKey::parse(format!("{KEY}{KEY}").as_bytes(), "test").unwrap();
    assert!(double.shape_warning().unwrap().contains("128 hexadecimal"));
    let upper = SecretKey::parse(KEY.to_uppercase().as_bytes(), "test").unwrap();
    let warning = upper.shape_warning().expect("upper case");
    assert!(warning.contains("upper-case letters"), "{warning}");
    assert!(!warning.contains("hexadecimal digits, not"), "{warning}");
    for w in [short, double, upper]
        .iter()
        .filter_map(SecretKey::shape_warning)
    {
        assert!(
            !w.contains(&KEY[..8]) && !w.contains(&KEY[..8].to_uppercase()),
            "{w}"
        );
    }
}

#[test]
fn secret_key_never_prints() {
    let k = key();
    assert_eq!(format!("{k:?}"), "SecretKey(***)");
    assert_eq!(format!("{:#?}", Some(&k)), "Some(\n    SecretKey(***),\n)");
}

#[test]
fn secret_sources_precedence_and_trimming() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret.key");
    std::fs::write(&file, "aaaa\n").unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("secret-key"), "  cccc \r\n").unwrap();

    let load = |f: Option<&Path>, e: Option<&str>, c: Option<&Path>| {
        SecretKey::from_sources(f, e.map(str::to_owned), c)
    };
    let all = load(Some(&file), Some("bbbb"), Some(&creds)).unwrap();
    assert_eq!(all.expose(), "aaaa");
    let env = load(None, Some("bbbb\n"), Some(&creds)).unwrap();
    assert_eq!(env.expose(), "bbbb");
    let cred = load(None, None, Some(&creds)).unwrap();
    assert_eq!(cred.expose(), "cccc");
    assert!(matches!(load(None, None, None), Err(SecretError::Missing)));
}

#[test]
fn secret_source_errors_name_the_file_not_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.key");
    std::fs::write(&empty, " \n").unwrap();
    let e = SecretKey::from_sources(Some(&empty), None, None).unwrap_err();
    assert!(matches!(e, SecretError::Empty { .. }));
    assert!(e.to_string().contains("empty.key"), "{e}");

    let missing = dir.path().join("missing.key");
    let e = SecretKey::from_sources(Some(&missing), Some("abcd".into()), None).unwrap_err();
    assert!(
        matches!(e, SecretError::Read { .. }),
        "a named file is not skipped"
    );
    assert!(e.to_string().contains("missing.key"), "{e}");

    let binary = dir.path().join("binary.key");
    std::fs::write(&binary, [0xff, 0xfe, b'h', b'u', b'n', b't', b'e', b'r']).unwrap();
    let e = SecretKey::from_sources(Some(&binary), None, None).unwrap_err();
    assert!(e.to_string().contains("binary.key"), "{e}");
    assert!(!format!("{e} {e:?}").contains("hunter"), "{e:?}");

    let e = SecretKey::from_sources(None, Some("\n".into()), None).unwrap_err();
    assert!(e.to_string().contains(SECRET_KEY_ENV), "{e}");

    let creds = dir.path().join("nocreds");
    let e = SecretKey::from_sources(None, None, Some(&creds)).unwrap_err();
    assert!(e.to_string().contains("secret-key"), "{e}");
    assert!(SecretKey::new("  ").is_err());
}

/// Issue 7, "the secret key": each way a pasted key goes wrong is refused with its reason,
/// from every source, and no message carries any part of the key.
#[test]
fn secret_key_refuses_bom_quotes_prefix_second_line_and_non_hex_without_printing_it() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"\xEF\xBB\xBF5bd2850fff",
            "starts with a UTF-8 byte-order mark",
        ),
        (b"\"5bd2850fff\"\n", "is wrapped in quotes"),
        (b"'5bd2850fff'", "is wrapped in quotes"),
        (b"KEY=5bd2850fff\n", "starts with a `NAME=` prefix"),
        (
            b"export SECRET_KEY=5bd2850fff",
            "starts with a `NAME=` prefix",
        ),
        (b"5bd2850fff\n5bd2850fff\n", "contains a second line"),
        (b"5bd2850fff # prod", "is not hex: character 11 is a space"),
        (
            b"5bd2850fffKz",
            "is not hex: character 11 is a letter other than a-f",
        ),
        (
            b"5bd2850fff\xC2\xA0",
            "is not hex: character 11 is a non-ASCII space",
        ),
        (b"5bd2-850fff", "is not hex: character 5 is '-'"),
        (b"0x5bd2850fff", "starts with 0x"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    for (text, reason) in cases {
        let file = dir.path().join("k");
        std::fs::write(&file, text).unwrap();
        std::fs::write(creds.join(CREDENTIAL_NAME), text).unwrap();
        let from_file = SecretKey::from_sources(Some(&file), None, None);
        let from_creds = SecretKey::from_sources(None, None, Some(&creds));
        let env = String::from_utf8(text.to_vec()).unwrap();
        let from_env = SecretKey::from_sources(None, Some(env), None);
        for (source, result) in [
            ("k", from_file),
            ("secret-key", from_creds),
            (SECRET_KEY_ENV, from_env),
        ] {
            let e = result.unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(shown.contains(reason), "{text:?}: {shown}");
            assert!(shown.contains(source), "{text:?}: {shown}");
            for secret in ["5bd2", "850f", "Kz"] {
                assert!(!shown.contains(secret), "{text:?} leaked: {shown}");
            }
        }
    }
}

#[test]
fn secret_key_accepts_hex_with_a_trailing_newline_and_keeps_the_vectors() {
    let k = SecretKey::parse(format!("{KEY}\n").as_bytes(), "test").unwrap();
    assert_eq!(k, key());
    let k = SecretKey::parse(format!("  {}\r\n", KEY.to_uppercase()).as_bytes(), "t").unwrap();
    assert_eq!(
        k.expose(),
        KEY.to_uppercase(),
        "case is kept: it is hashed as written"
    );
    // Reference section 2's vectors, with the key read the way users supply it.
    let pasted = SecretKey::parse(format!("{KEY}\n").as_bytes(), "t").unwrap();
    let sig = tls_sig(APP, &pasted, "xiaojun", T0, 15_552_000);
    assert_eq!(sig, "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4=");
}

#[test]
fn secret_key_file_must_be_a_small_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = SecretKey::from_sources(Some(Path::new("/dev/zero")), None, None).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let big = dir.path().join("big.key");
    std::fs::write(&big, "a".repeat(1 << 20)).unwrap();
    let e = SecretKey::from_sources(Some(&big), None, None).unwrap_err();
    assert!(e.to_string().contains("larger than the limit"), "{e}");
}

#[test]
fn key_file_permission_warning_is_for_others_group_writes_and_foreign_groups() {
    let own = Some(10001);
    // (mode, the file's group, loose)
    let cases = [
        (0o600, 10001, false),
        (0o400, 0, false),
        // The Kubernetes Secret mount: root-owned, group fsGroup = the process's group.
        (0o440, 10001, false),
        (0o640, 10001, false),
        (0o440, 100, true),
        (0o640, 100, true),
        (0o660, 10001, true),
        (0o604, 10001, true),
        (0o644, 10001, true),
        (0o444, 10001, true),
    ];
    for (mode, gid, loose) in cases {
        assert_eq!(is_loose(mode, gid, own), loose, "{mode:o} gid {gid}");
    }
    // When the process's group cannot be told, any group bit is loose.
    assert!(is_loose(0o440, 10001, None));
    assert_eq!(
        effective_gid_from_status("Name:\tx\nGid:\t5\t10001\t10001\t10001\n"),
        Some(10001)
    );
    assert_eq!(effective_gid_from_status("Name:\tx\n"), None);
}
