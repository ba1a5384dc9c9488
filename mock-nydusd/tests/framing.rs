//! How requests that arrive in pieces, over-long lines and odd headers are answered, byte
//! for byte, as nydusd answers them.
//!
//! Every case runs against the mock (`mock::…`). Where a real nydusd is at hand (`$NYDUSD`,
//! `nydusd` on PATH or `~/.cargo/bin/nydusd`, with root and /dev/fuse) the same cases run
//! against it too (`nydusd::…`), so the expectations below are checked against the real
//! thing, not only written down from `real-nydusd-framing.md`; elsewhere those are listed
//! as ignored with the reason.
//!
//! Each piece is sent once the replies to the previous ones have arrived, so a case never
//! races the server's grace for partial reads: a piece that ends mid-request always draws
//! the spurious 500, as nydusd's 50 ms pauses drew it in the reference transcripts.

mod common;
#[path = "common/real_nydusd.rs"]
mod real_nydusd;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use testkit::MockProcess;

/// The reply nydusd's HTTP library gives a read that ends mid-request (verbatim from
/// `real-nydusd-framing.md`, both builds).
const PARTIAL_READ_500: &str = "HTTP/1.1 500 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 46\r\n\r\nResource temporarily unavailable (os error 11)";

const EVENTS: &[u8] = b"GET /api/v1/daemon/events HTTP/1.1\r\n\r\n";

/// One reply, as expected.
#[derive(Debug, Clone)]
enum Expect {
    /// From the API layer (`Server: Nydus API`), with this status; its body is the wire
    /// tests' business.
    Api(u16),
    /// From the HTTP library, these exact bytes.
    Library(String),
}

/// The library's 400 with `reason`, as dbs-uhttp frames it.
fn library_400(reason: &str) -> Expect {
    let body = format!("{{ \"error\": \"{reason}\nAll previous unanswered requests will be dropped.\" }}");
    Expect::Library(format!(
        "HTTP/1.1 400 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

fn partial_read_500() -> Expect {
    Expect::Library(PARTIAL_READ_500.to_owned())
}

/// The 400 for an over-long `X-Long` header line: the whole 1024-byte buffer, which then
/// holds the line's first 1024 bytes (1145 bytes of body, as in the reference).
fn x_long_400() -> Expect {
    let reason = format!("Invalid header. Reason: Invalid content length. Header: X-Long: {}", "a".repeat(1016));
    library_400(&reason)
}

fn x_long(length: usize) -> Vec<u8> {
    [b"GET /api/v1/daemon HTTP/1.1\r\nX-Long: ".as_slice(), &vec![b'a'; length], b"\r\n\r\n"].concat()
}

/// `bytes` cut into `n` nearly equal pieces.
fn pieces(bytes: &[u8], n: usize) -> Vec<Vec<u8>> {
    bytes.chunks(bytes.len().div_ceil(n)).map(<[u8]>::to_vec).collect()
}

/// A case: pieces, each with the replies it draws.
struct Case {
    name: &'static str,
    steps: Vec<(Vec<u8>, Vec<Expect>)>,
}

fn x_long_case(name: &'static str, length: usize, n: usize, replies: Vec<Vec<Expect>>) -> Case {
    Case { name, steps: pieces(&x_long(length), n).into_iter().zip(replies).collect() }
}

fn cases() -> Vec<Case> {
    let put_level = |length: &str| {
        format!("PUT /api/v1/daemon HTTP/1.1\r\n{length}\r\n\r\n{{\"log_level\":\"info\"}}").into_bytes()
    };
    let mut x_long_5000 = vec![x_long_400(); 138];
    x_long_5000.push(Expect::Api(200));
    vec![
        // The six cases of `real-nydusd-framing.md`.
        x_long_case("x_long_100_in_1_write", 100, 1, vec![vec![Expect::Api(200)]]),
        x_long_case("x_long_100_in_2_writes", 100, 2, vec![vec![partial_read_500()], vec![Expect::Api(200)]]),
        x_long_case(
            "x_long_100_in_3_writes",
            100,
            3,
            vec![vec![partial_read_500()], vec![partial_read_500()], vec![Expect::Api(200)]],
        ),
        x_long_case(
            "x_long_1100_in_1_write",
            1100,
            1,
            vec![vec![x_long_400(), x_long_400(), x_long_400(), Expect::Api(200)]],
        ),
        x_long_case(
            "x_long_1100_in_2_writes",
            1100,
            2,
            vec![vec![partial_read_500()], vec![x_long_400(), Expect::Api(200)]],
        ),
        x_long_case("x_long_5000_in_1_write", 5000, 1, vec![x_long_5000]),
        // The same parser, probed further.
        Case {
            name: "a_pipelined_request_with_a_partial_tail_draws_no_500",
            steps: vec![
                ([EVENTS, &EVENTS[..10]].concat(), vec![Expect::Api(200)]),
                (EVENTS[10..].to_vec(), vec![Expect::Api(200)]),
            ],
        },
        Case {
            name: "a_body_in_two_writes_draws_a_500_then_its_reply",
            steps: {
                let whole = put_level("Content-Length: 20");
                let (head, tail) = whole.split_at(whole.len() - 5);
                vec![(head.to_vec(), vec![partial_read_500()]), (tail.to_vec(), vec![Expect::Api(204)])]
            },
        },
        Case {
            name: "the_last_content_length_wins_and_a_plus_sign_is_accepted",
            steps: vec![(put_level("Content-Length: 999\r\nContent-Length: +20"), vec![Expect::Api(204)])],
        },
        Case {
            name: "a_negative_content_length_is_refused_and_breaks_the_connection",
            steps: vec![
                (
                    put_level("Content-Length:-20"),
                    vec![library_400("Invalid header. Reason: Invalid value. Key:Content-Length; Value:-20")],
                ),
                (
                    EVENTS.to_vec(),
                    vec![library_400(
                        "Invalid header. Reason: Header is incorrectly formatted. Key: GET /api/v1/daemon/events HTTP/1.1",
                    )],
                ),
            ],
        },
        Case {
            name: "after_a_bad_header_the_next_request_line_is_read_as_a_header",
            steps: vec![
                (
                    b"GET / HTTP/1.1\r\nBadHeader\r\n\r\n".to_vec(),
                    vec![library_400("Invalid header. Reason: Header is incorrectly formatted. Key: BadHeader")],
                ),
                (
                    EVENTS.to_vec(),
                    vec![library_400(
                        "Invalid header. Reason: Header is incorrectly formatted. Key: GET /api/v1/daemon/events HTTP/1.1",
                    )],
                ),
            ],
        },
        Case {
            name: "after_a_bad_method_the_connection_still_serves",
            steps: vec![
                (
                    b"FOO / HTTP/1.1\r\n\r\n".to_vec(),
                    vec![library_400("Invalid HTTP Method: Unsupported HTTP method.")],
                ),
                (EVENTS.to_vec(), vec![Expect::Api(200)]),
            ],
        },
        Case {
            name: "expect_continue_draws_a_100_before_the_500_of_the_missing_body",
            steps: {
                let whole = put_level("Expect: 100-continue\r\nContent-Length: 20");
                let (head, body) = whole.split_at(whole.len() - 20);
                vec![
                    (
                        head.to_vec(),
                        vec![
                            Expect::Library(
                                "HTTP/1.1 100 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n".into(),
                            ),
                            partial_read_500(),
                        ],
                    ),
                    (body.to_vec(), vec![Expect::Api(204)]),
                ]
            },
        },
        Case {
            name: "an_over_long_request_line_is_refused_twice",
            steps: vec![(
                [b"GET /".as_slice(), &[b'a'; 1100], b" HTTP/1.1\r\n\r\n"].concat(),
                vec![library_400("Invalid request."), library_400("Invalid request.")],
            )],
        },
        Case {
            name: "a_bare_lf_request_waits_for_a_crlf_that_ends_a_bad_version",
            steps: vec![
                (b"GET /api/v1/daemon/events HTTP/1.1\n\n".to_vec(), vec![partial_read_500()]),
                (EVENTS.to_vec(), vec![library_400("Invalid HTTP Version: Unsupported HTTP version.")]),
            ],
        },
        Case {
            name: "a_body_over_51200_bytes_is_refused_at_the_end_of_the_headers",
            steps: vec![(
                b"PUT /api/v1/daemon HTTP/1.1\r\nContent-Length: 60000\r\n\r\n".to_vec(),
                vec![library_400(
                    "Request payload with size 60000 is larger than the limit of 51200 allowed by server.",
                )],
            )],
        },
        Case {
            name: "a_refused_encoding_is_a_library_400",
            steps: vec![(
                b"GET /api/v1/daemon/events HTTP/1.1\r\nAccept-Encoding: identity;q=0\r\n\r\n".to_vec(),
                vec![library_400("Invalid header. Reason: Invalid value. Key:Accept-Encoding; Value:identity;q=0")],
            )],
        },
    ]
}

/// One reply read off the wire.
struct Reply {
    bytes: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    fn status(&self) -> Option<u16> {
        self.bytes.get(9..12).and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
    }

    fn is_the_apis(&self) -> bool {
        self.text().contains("\r\nServer: Nydus API\r\n")
    }
}

fn read_reply(stream: &mut UnixStream) -> Result<Reply, String> {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => bytes.push(byte[0]),
            other => {
                return Err(format!("no complete reply head ({other:?}) after {:?}", String::from_utf8_lossy(&bytes)));
            }
        }
    }
    let head = String::from_utf8_lossy(&bytes).into_owned();
    let length = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).map_or(Ok(0), |v| v.trim().parse());
    let mut body = vec![0u8; length.map_err(|e| format!("bad Content-Length in {head:?}: {e}"))?];
    stream.read_exact(&mut body).map_err(|e| format!("body of {head:?}: {e}"))?;
    bytes.extend_from_slice(&body);
    Ok(Reply { bytes })
}

fn check(reply: &Reply, expect: &Expect) -> Result<(), String> {
    let fits = match expect {
        Expect::Api(status) => reply.is_the_apis() && reply.status() == Some(*status),
        Expect::Library(bytes) => reply.bytes == bytes.as_bytes(),
    };
    if fits { Ok(()) } else { Err(format!("expected {expect:?}\n     got {:?}", reply.text())) }
}

fn run_case(sock: &Path, case: &Case) -> Result<(), Failed> {
    run_case_on(UnixStream::connect(sock)?, case)
}

fn run_case_on(mut stream: UnixStream, case: &Case) -> Result<(), Failed> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    for (i, (piece, replies)) in case.steps.iter().enumerate() {
        stream.write_all(piece)?;
        for (j, expect) in replies.iter().enumerate() {
            let reply = read_reply(&mut stream).map_err(|e| format!("piece {}, reply {}: {e}", i + 1, j + 1))?;
            check(&reply, expect).map_err(|e| format!("piece {}, reply {}: {e}", i + 1, j + 1))?;
        }
    }
    // Nothing more may follow.
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut extra = [0u8; 256];
    match stream.read(&mut extra) {
        Ok(n) if n > 0 => {
            Err(format!("unexpected bytes after the last reply: {:?}", String::from_utf8_lossy(&extra[..n])))?
        }
        _ => Ok(()),
    }
}

/// `--mock-no-partial-read-500`: pieces 50 ms apart, as in the reference, draw only the
/// request's own reply.
fn without_the_partial_read_500_pieces_draw_one_reply() -> Result<(), Failed> {
    let mock = MockProcess::start(common::mock(), &["--mock-no-partial-read-500"]);
    let mut stream = UnixStream::connect(&mock.sock)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    for piece in pieces(&x_long(100), 3) {
        stream.write_all(&piece)?;
        std::thread::sleep(Duration::from_millis(50));
    }
    check(&read_reply(&mut stream)?, &Expect::Api(200))?;
    // No 500 came before the reply, and nothing follows it.
    run_case_on(stream, &Case { name: "nothing_more", steps: Vec::new() })
}

fn main() {
    let args = Arguments::from_args();
    let real = real_nydusd::usable(host_facts::installed_nydusd());
    if let Err(reason) = &real {
        eprintln!("nydusd::… cases skipped: {reason}");
    }
    let mut trials = Vec::new();
    for case in cases() {
        let name = case.name;
        trials.push(Trial::test(format!("mock::{name}"), move || {
            let mock = MockProcess::start(common::mock(), &[]);
            run_case(&mock.sock, &case)
        }));
    }
    trials.push(Trial::test(
        "mock::without_the_partial_read_500_pieces_draw_one_reply",
        without_the_partial_read_500_pieces_draw_one_reply,
    ));
    for case in cases() {
        let real = real.clone();
        let ignored = real.is_err();
        let trial = Trial::test(format!("nydusd::{}", case.name), move || {
            let binary = real.map_err(|reason| format!("skipped: {reason}"))?;
            let dir = tempfile::tempdir()?;
            let daemon = real_nydusd::RealNydusd::start_in(&binary, dir.path())?;
            run_case(&daemon.sock(), &case)
        });
        trials.push(trial.with_ignored_flag(ignored));
    }
    libtest_mimic::run(&args, trials).exit();
}
