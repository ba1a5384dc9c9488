//! The redactor as the proxy drives it: pieces in, pieces out, nothing secret in them.

use super::*;

/// `pieces` through one redactor, joined; every piece must come out with its length.
fn run(pieces: &[&[u8]]) -> Vec<u8> {
    let mut r = Redactor::default();
    let mut out = Vec::new();
    let mut lens = Vec::new();
    for (t, piece) in pieces.iter().enumerate() {
        for (_, bytes) in r.push(t as u64, piece) {
            lens.push(bytes.len());
            out.extend(bytes);
        }
    }
    for (_, bytes) in r.finish() {
        lens.push(bytes.len());
        out.extend(bytes);
    }
    let sent: Vec<usize> = pieces.iter().map(|p| p.len()).filter(|n| *n > 0).collect();
    assert_eq!(lens, sent, "pieces keep their boundaries");
    out
}

fn request(body: &str) -> String {
    format!("POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

fn mount_body(config: &str) -> String {
    serde_json::json!({ "source": "/b", "fs_type": "rafs", "config": config }).to_string()
}

#[test]
fn a_toml_configuration_in_a_mount_request_is_redacted() {
    let config = "[backend]\ntype = \"registry\"\n[backend.registry]\nhost = \"r.example\"\nauth = \"dXNlcjpwYXNz\"\nregistry_token = \"tok3n\"\n";
    let text = request(&mount_body(config));
    let out = String::from_utf8(run(&[text.as_bytes()])).unwrap();
    assert!(!out.contains("dXNlcjpwYXNz") && !out.contains("tok3n"), "{out}");
    assert!(out.contains("r.example"), "only the credentials went: {out}");
    assert_eq!(out.len(), text.len());
}

#[test]
fn escaped_keys_and_far_apart_values_cut_across_writes_are_redacted() {
    // `\u0070assword` in the body, `\\u0061uth` inside the config string, and a key and
    // its value 200 bytes of whitespace apart, cut between them.
    let spaces = " ".repeat(200);
    let inner = format!(r#"{{"backend":{{"\u0061uth"{spaces}:{spaces}"c2VjcmV0"}}}}"#);
    let body = format!(r#"{{"\u0070assword" : "hunter2", "config": {}}}"#, serde_json::to_string(&inner).unwrap());
    let text = request(&body);
    let cut = text.find("c2Vj").unwrap() - 100;
    let out = String::from_utf8(run(&[&text.as_bytes()[..cut], &text.as_bytes()[cut..]])).unwrap();
    assert!(!out.contains("c2Vj") && !out.contains("hunter2"), "{out}");
    assert_eq!(out.len(), text.len());
}

#[test]
fn a_chunked_body_and_authorization_headers_are_redacted() {
    let body = r#"{"auth":"chunkysecret"}"#;
    let (a, b) = body.split_at(10);
    let text = format!(
        "PUT /api/v1/config HTTP/1.1\r\nAuthorization: Basic dXNlcjpw\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let out = String::from_utf8(run(&[text.as_bytes()])).unwrap();
    assert!(!out.contains("chunky") && !out.contains("ysecret") && !out.contains("dXNlcjpw"), "{out}");
    assert!(out.contains("\r\n0\r\n\r\n") && out.contains("Transfer-Encoding: chunked"), "{out}");
}

#[test]
fn a_message_cut_short_by_its_connection_is_masked_where_it_may_hold_a_secret() {
    let text = request(&mount_body(r#"{"auth":"cutshort-secret"}"#));
    let half = &text.as_bytes()[..text.len() - 5];
    let out = String::from_utf8(run(&[half])).unwrap();
    assert!(!out.contains("cutshort"), "{out}");
    assert!(out.starts_with("POST /api/v1/mount"), "the header section is kept: {out}");
    // Without a secret's key in it, an incomplete message is kept as it was.
    let plain = b"GET /api/v1/daemon HTTP/1.1\r\nHost: x\r\n";
    assert_eq!(run(&[plain]), plain);
}

#[test]
fn a_body_that_is_neither_json_nor_toml_is_masked_when_it_may_hold_a_secret() {
    let out = String::from_utf8(run(&[request("password: hunter2, not json").as_bytes()])).unwrap();
    assert!(!out.contains("hunter2"), "{out}");
    let kept = request("just text");
    assert_eq!(run(&[kept.as_bytes()]), kept.as_bytes());
    // A path that merely names `auth` is not a configuration: kept.
    let path = request(r#"{"mountpoint":"/auth","n":1}"#);
    assert_eq!(run(&[path.as_bytes()]), path.as_bytes());
}

#[test]
fn a_body_past_the_hold_limit_is_masked_and_the_next_message_read_again() {
    let big = "x".repeat(MAX_HELD + 10);
    let body = format!(r#"{{"pad":"{big}","auth":"tail-secret"}}"#);
    let first = request(&body);
    let second = request(r#"{"auth":"second-secret","host":"kept"}"#);
    let stream = format!("{first}{second}");
    let bytes = stream.as_bytes();
    let pieces: Vec<&[u8]> = bytes.chunks(64 * 1024).collect();
    let out = run(&pieces);
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains("tail-secret") && !out.contains("second-secret"), "secrets left");
    assert!(out.contains(r#""host":"kept""#), "the next message is read again");
    assert_eq!(out.len(), stream.len());
}

#[test]
fn messages_without_headers_or_with_odd_framing_pass_unharmed() {
    for text in [
        &b"GET /api/v1/daemon HTTP/1.1\r\n\r\n"[..],
        b"GET /api/v1/daemon HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 204 \r\nServer: Nydus API\r\n\r\n",
        b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\xff\xfe garbage \x00",
    ] {
        for cut in 0..=text.len() {
            assert_eq!(run(&[&text[..cut], &text[cut..]]), text, "{:?} cut at {cut}", String::from_utf8_lossy(text));
        }
    }
}

/// Whatever the bytes, the redactor neither panics nor changes a length.
#[test]
fn random_bytes_never_panic_and_keep_their_length() {
    let mut rng = Rng(0x1234_5678);
    let alphabet: &[&[u8]] = &[
        b"\r\n",
        b"\r\n\r\n",
        b"GET / HTTP/1.1",
        b"HTTP/1.1 200 ",
        b"Content-Length: 5",
        b"Transfer-Encoding: chunked",
        b"0",
        b"{\"auth\":\"",
        b"\"}",
        b"\\u0061",
        b"x",
        b"\xff",
        b"5\r\nabcde",
    ];
    for _ in 0..2000 {
        let text: Vec<u8> = (0..rng.below(40)).flat_map(|_| alphabet[rng.below(alphabet.len())].to_vec()).collect();
        let cut = rng.below(text.len() + 1);
        assert_eq!(run(&[&text[..cut], &text[cut..]]).len(), text.len());
    }
}

#[test]
fn pieces_keep_their_stamps_and_wait_for_their_message() {
    let text = request(r#"{"auth":"x"}"#);
    let (a, b) = text.as_bytes().split_at(20);
    let mut r = Redactor::default();
    assert!(r.push(7, a).is_empty(), "held until the message is whole");
    let released = r.push(9, b);
    assert_eq!(released.iter().map(|(t, p)| (*t, p.len())).collect::<Vec<_>>(), vec![(7, a.len()), (9, b.len())]);
}

/// A tiny deterministic generator (xorshift), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// A planted credential: a configuration (JSON or TOML, in a mount request's `config`
/// string or as the body itself) with the secret under one spelling of a secret key,
/// whitespace around it, the whole cut into pieces at random. Fails if any byte of the
/// secret reaches the output unmasked.
#[test]
fn planted_credentials_never_pass_however_spelled_or_cut() {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for seed in 1..=3000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let secret: String = (0..8 + rng.below(32)).map(|_| ALPHABET[rng.below(ALPHABET.len())] as char).collect();
        let space = |rng: &mut Rng| " \n\t".repeat(rng.below(30));
        let (s1, s2) = (space(&mut rng), space(&mut rng));
        let toml = rng.below(2) == 0;
        let config = if toml {
            let key = rng.pick(&[
                "auth",
                "\"auth\"",
                "\"\\u0061uth\"",
                "\"\\U00000061uth\"",
                "registry_token",
                "'proxy_password'",
                "backend.auth",
                "api-key",
            ]);
            match rng.below(3) {
                0 => format!("[backend]\nhost = \"h\"\n{key}{s1}={s2}\"{secret}\"\n"),
                1 => format!("inline = {{ {key}{s1}={s2}'{secret}' }}\n"),
                _ => format!("{key} = \"\"\"\n{secret}\"\"\"\n"),
            }
        } else {
            let key = rng.pick(&[
                "auth",
                "\\u0061uth",
                "AUTH",
                "registry_token",
                "pass\\u0077ord",
                "access_key_secret",
                "api_key",
            ]);
            format!(r#"{{"backend":{{"host":"h","{key}"{s1}:{s2}"{secret}"}}}}"#)
        };
        let body = if rng.below(4) == 0 && !toml { config.clone() } else { mount_body(&config) };
        let text = request(&body);
        let bytes = text.as_bytes();
        // Where the secret's bytes were sent (as written: it needs no escaping).
        let at = text.find(&secret).expect("planted");
        let mut cuts: Vec<usize> = (0..rng.below(8)).map(|_| rng.below(bytes.len())).collect();
        cuts.extend([0, bytes.len()]);
        cuts.sort_unstable();
        cuts.dedup();
        let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
        let out = run(&pieces);
        assert_eq!(out.len(), bytes.len(), "seed {seed}");
        let leaked: Vec<usize> = (at..at + secret.len()).filter(|i| out[*i] != b'*').collect();
        assert!(leaked.is_empty(), "seed {seed}: secret bytes {leaked:?} passed in\n{}", String::from_utf8_lossy(&out));
    }
}

/// The ways an adversarial trial got a credential past the recorder (issue 26's review),
/// each as the pieces it was sent in. None may leave a byte of `hunter2` in clear.
#[test]
fn credentials_found_by_the_adversarial_trial_are_masked() {
    let long_header = format!("PUT /api/v1/daemon HTTP/1.1\r\nX-Pad: {}\r\nAu", "a".repeat(70_000));
    let toml_u8 = request(&mount_body("[backend.config]\n\"\\U00000061uth\" = \"hunter2\"\nhost = \"r\"\n"));
    let echo_body = r#"{ "error": "Invalid header. Reason: x. Header: Authorization: Bearer hunter2" }"#;
    let echo = format!("HTTP/1.1 400 \r\nContent-Length: {}\r\n\r\n{echo_body}", echo_body.len());
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("a TOML key spelled with \\U", vec![toml_u8.into_bytes()]),
        (
            "a chunked trailer",
            vec![
                b"POST /api/v1/mount HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nAuthorization: Bearer hunter2\r\n\r\n"
                    .to_vec(),
            ],
        ),
        (
            "a chunk extension",
            vec![b"POST /api/v1/mount HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;token=hunter2\r\n{}\r\n0\r\n\r\n".to_vec()],
        ),
        (
            "a key cut after garbage",
            vec![
                b"junk\r\nPUT /api/v1/daemon HTTP/1.1\r\nAu".to_vec(),
                b"thorization: Bearer hunter2\r\n\r\n".to_vec(),
            ],
        ),
        ("a key cut after an over-long header", vec![long_header.into_bytes(), b"thorization: Bearer hunter2\r\n\r\n".to_vec()]),
        (
            "a key cut after a body longer than its Content-Length",
            vec![
                b"PUT /api/v1/daemon HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}x\r\n{\"au".to_vec(),
                b"th\":\"hunter2\"}".to_vec(),
            ],
        ),
        (
            "a reply that ends with its connection",
            vec![b"HTTP/1.0 200 OK\r\n\r\n{\r\n  \"to".to_vec(), b"ken\": \"hunter2\"\r\n}\r\n".to_vec()],
        ),
        ("a folded header", vec![b"GET /api/v1/daemon HTTP/1.1\r\nAuthorization: Bearer\r\n hunter2\r\n\r\n".to_vec()]),
        ("an API key header", vec![b"GET /api/v1/daemon HTTP/1.1\r\nX-Api-Key: hunter2\r\n\r\n".to_vec()]),
        ("an api_key in a body", vec![request(r#"{"api_key":"hunter2"}"#).into_bytes()]),
        ("a header echoed in an error reply", vec![echo.into_bytes()]),
    ];
    for (what, pieces) in cases {
        let slices: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let out = run(&slices);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("hunter") && !text.contains("nter2"), "{what}: {text}");
        let sent: usize = pieces.iter().map(Vec::len).sum();
        assert_eq!(out.len(), sent, "{what}");
    }
}

/// What the trial's fixes must not mask: a reply framed by Content-Length, a 204 without
/// one, a path that names a secret word, a garbage stream without a secret word.
#[test]
fn the_fixes_leave_plain_traffic_alone() {
    for text in [
        &b"HTTP/1.1 204 \r\nServer: Nydus API\r\nConnection: keep-alive\r\n\r\nHTTP/1.1 204 \r\n\r\n"[..],
        b"HTTP/1.1 200 \r\nContent-Length: 35\r\n\r\n{\"path\":\"/var/lib/auth-cache/blob\"}",
        b"junk\r\nmore junk that goes on for a while\r\n",
    ] {
        for cut in 0..=text.len() {
            assert_eq!(run(&[&text[..cut], &text[cut..]]), text, "{:?} cut at {cut}", String::from_utf8_lossy(text));
        }
    }
}
