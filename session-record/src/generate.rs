//! The mock script that plays a recorded daemon: one rule per recorded request, in the
//! order the requests came, answering with the recorded status and body after the
//! recorded delay, and failing where the daemon failed (a dropped connection, a reply cut
//! short, a death with its signal at the same point of the sequence).
//!
//! Rules name the request by method, path and call number (`call: { nth }` among requests
//! of that method and path), so a client that sends the session's requests in the same
//! order, whatever their timing, gets the recorded answers. Requests the recording does
//! not hold are answered by the mock itself.

use mock_nydusd::script::{Action, Call, Death, Method, Respond, Rule, Script, SignalName, Startup, When};
use serde_saphyr::{Location, Spanned};

use super::http::{Exchange, Session};
use super::recording::{Event, Recording};

/// The script, and what of the recording it could not express.
#[derive(Debug, Clone)]
pub struct Generated {
    pub script: Script,
    /// Each thing left out, and why.
    pub notes: Vec<String>,
}

/// Delays are divided by `speed` (2.0: twice as fast).
pub fn script(recording: &Recording, speed: f64) -> Generated {
    let session = Session::of(recording);
    let exchanges = session.exchanges();
    let mut notes = Vec::new();
    let supervisor_pieces =
        recording.entries.iter().filter(|e| matches!(e.event, Event::SupervisorData { .. })).count();
    if supervisor_pieces > 0 {
        notes.push(format!(
            "{supervisor_pieces} pieces on the supervisor socket: the recording keeps their sizes and fds only; the mock sends and takes states of its own"
        ));
    }
    let mut counts: std::collections::BTreeMap<(String, String), u64> = Default::default();
    let mut rules = Vec::new();
    let death = session.exit.map(|(t, code, signal)| (t, death_action(code, signal, &mut notes)));
    // The death follows the last request that came before it.
    let last_before_death = death.as_ref().and_then(|(t, _)| exchanges.iter().rposition(|e| e.request.first_ns <= *t));
    for (index, exchange) in exchanges.iter().enumerate() {
        let request = exchange.request;
        let Some(method) = method(request.method()) else {
            notes.push(format!(
                "{} on connection {}: the mock's rules cannot name method {}; the mock answers it itself",
                request.request_line(),
                exchange.conn,
                request.method()
            ));
            continue;
        };
        let n = counts.entry((request.method().to_owned(), request.path().to_owned())).or_default();
        *n += 1;
        let dies_here = last_before_death == Some(index);
        let then = actions(&session, exchange, death.as_ref().filter(|_| dies_here), speed, &mut notes);
        if then.is_empty() {
            continue;
        }
        let rule = Rule {
            name: Some(name(exchange)),
            when: When {
                method: Some(method),
                path: Some(request.path().to_owned()),
                call: Some(Call::Nth(*n)),
                process: Some(1),
                ..When::default()
            },
            then,
            times: None,
        };
        rules.push(Spanned::new(rule, Location::UNKNOWN, Location::UNKNOWN));
    }
    let mut startup = Startup::default();
    if let (Some((t, action)), None) = (&death, last_before_death) {
        let ms = ms(t.saturating_sub(recording.header_ns), speed);
        startup.die_after = Some(match action {
            Action::Exit(code) => Death { ms, exit: Some(*code), signal: None },
            Action::Signal(signal) => Death { ms, exit: None, signal: Some(*signal) },
            _ => Death { ms, exit: None, signal: None },
        });
    }
    Generated { script: Script { startup, rules, fscache: Vec::new() }, notes }
}

/// What the mock does for one recorded exchange: the reply after its recorded delay, then
/// the daemon's death (`death`, when it follows this exchange) or its hang-up.
fn actions(
    session: &Session,
    exchange: &Exchange<'_>,
    death: Option<&(u64, Action)>,
    speed: f64,
    notes: &mut Vec<String>,
) -> Vec<Action> {
    let request = exchange.request;
    let mut then = Vec::new();
    let connection = &session.connections[&exchange.conn];
    let last_on_connection = exchange.seq + 1 == connection.requests.len();
    match (exchange.reply, exchange.partial_reply) {
        (Some(reply), _) => {
            push_delay(&mut then, ms(reply.first_ns.saturating_sub(request.last_ns), speed));
            match reply.body_text() {
                Some(body) => then.push(Action::Respond(Respond {
                    status: reply.status().unwrap_or(500),
                    body: body.to_owned(),
                    content_length: None,
                })),
                None => notes.push(format!(
                    "{}: the reply body is not text; the mock answers it itself",
                    request.request_line()
                )),
            }
            if death.is_some() {
                let (t, action) = death.cloned().expect("a death");
                push_delay(&mut then, ms(t.saturating_sub(reply.last_ns), speed));
                then.push(action);
            } else if let Some(closed) = connection.daemon_closed_ns.filter(|_| last_on_connection)
                && session.exit.is_none_or(|(t, ..)| closed < t)
                && connection.client_closed_ns.is_none_or(|c| closed < c)
            {
                // The daemon hung up first; one that answers a client's hang-up needs no rule.
                push_delay(&mut then, ms(closed.saturating_sub(reply.last_ns), speed));
                then.push(Action::Close);
            }
        }
        (None, Some(partial)) => {
            then.push(Action::Raw(String::from_utf8_lossy(partial).into_owned()));
            then.push(Action::Close);
        }
        (None, None) if death.is_some() => {
            let (t, action) = death.cloned().expect("a death");
            push_delay(&mut then, ms(t.saturating_sub(request.last_ns), speed));
            then.push(action);
        }
        (None, None) => match connection.daemon_closed_ns {
            Some(closed) => {
                push_delay(&mut then, ms(closed.saturating_sub(request.last_ns), speed));
                then.push(Action::Close);
            }
            None => then.push(Action::Hang),
        },
    }
    then
}

/// `ns` as whole milliseconds at `speed`.
fn ms(ns: u64, speed: f64) -> u64 {
    ((ns as f64 / 1e6) / speed).round() as u64
}

/// The scenario that replays `recording` with `harness run`: the mock (as `release`)
/// playing the script in `script_file` beside it (too large, for a long session, to sit
/// in a scenario file), the recorded client side sent again by `replay_client` from
/// `recording.jsonl` beside it, and the recorded death checked by `wait_exit`. Its
/// deadline is the session's length at `speed`, plus 30 s.
pub fn scenario(
    recording: &Recording,
    script_file: &str,
    speed: f64,
    release: &str,
) -> Result<String, serde_saphyr::ser::Error> {
    let first = recording.header_ns;
    let last = recording.entries.last().map_or(first, |e| e.t_ns);
    // Saturating (`as` does): the replay's cap was checked before.
    let session_ms = ((last.saturating_sub(first) as f64 / 1e6) / speed).ceil() as u64;
    let mut steps = vec![
        serde_json::json!({ "start": { "daemon": "d1" } }),
        serde_json::json!({ "replay_client": { "daemon": "d1", "recording": super::recording::FILE_NAME, "speed": speed } }),
    ];
    if let Some((_, code, signal)) = recording.daemon_exit() {
        let status = match (code, signal.and_then(signal_name)) {
            (Some(code), _) => Some(serde_json::json!({ "code": code })),
            (None, Some(name)) => Some(serde_json::json!({ "signal": name })),
            (None, None) => None,
        };
        let mut wait = serde_json::json!({ "daemon": "d1", "timeout_ms": 5_000 });
        if let Some(status) = status {
            wait["status"] = status;
        }
        steps.push(serde_json::json!({ "wait_exit": wait }));
    }
    let scenario = serde_json::json!({
        "version": 1,
        "name": format!("replay of {}", recording.path.display()),
        "description": "The recorded daemon, played by the mock from its script; the recorded client side sent again, and every difference from the recorded replies fails the run (written by `harness replay`).",
        "tags": ["replay"],
        "targets": ["mock"],
        "mock_nydusd": release,
        "timeout_ms": session_ms.saturating_add(30_000),
        "daemons": [{ "id": "d1", "mode": "shared", "script_file": script_file }],
        "steps": steps,
    });
    serde_saphyr::to_string(&scenario)
}

/// The scenario spelling of a death signal (scenario files name these three only; for
/// another, `wait_exit` checks that the daemon ended, not how).
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        9 => "SIGKILL",
        15 => "SIGTERM",
        2 => "SIGINT",
        _ => return None,
    })
}

fn name(exchange: &Exchange<'_>) -> String {
    format!("connection {} request {}: {}", exchange.conn, exchange.seq + 1, exchange.request.request_line())
}

fn push_delay(then: &mut Vec<Action>, ms: u64) {
    if ms > 0 {
        then.push(Action::DelayMs(ms));
    }
}

fn method(name: &str) -> Option<Method> {
    Some(match name {
        "GET" => Method::Get,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        _ => return None,
    })
}

/// The action that ends the mock as the daemon ended.
fn death_action(code: Option<i32>, signal: Option<i32>, notes: &mut Vec<String>) -> Action {
    if let Some(code) = code {
        return Action::Exit(code.clamp(0, 255));
    }
    let name = match signal {
        Some(9) => SignalName::Kill,
        Some(6) => SignalName::Abort,
        Some(11) => SignalName::Segv,
        Some(15) => SignalName::Term,
        Some(2) => SignalName::Int,
        other => {
            notes.push(format!(
                "the daemon died by signal {other:?}, which a mock script cannot raise; it dies by SIGKILL"
            ));
            SignalName::Kill
        }
    };
    Action::Signal(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{Direction, Event, Side};

    fn data(conn: u64, dir: Direction, text: &str) -> Event {
        Event::data(conn, dir, text.as_bytes())
    }

    fn recording(events: Vec<(u64, Event)>) -> Recording {
        Recording::of_events(events)
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn replies_delays_drops_and_the_death_become_rules_in_request_order() {
        use Direction::*;
        let r = recording(vec![
            (0, Event::Open { conn: 1 }),
            (MS, data(1, Request, "GET /api/v1/daemon HTTP/1.1\r\n\r\n")),
            (4 * MS, data(1, Reply, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")),
            (5 * MS, data(1, Request, "DELETE /api/v1/mount?mountpoint=/x HTTP/1.1\r\n\r\n")),
            (6 * MS, data(1, Reply, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3\r\n\r\n\"e\"")),
            (7 * MS, Event::Open { conn: 2 }),
            (8 * MS, data(2, Request, "GET /api/v1/daemon HTTP/1.1\r\n\r\n")),
            (9 * MS, Event::Close { conn: 2, side: Side::Daemon }),
            (10 * MS, data(1, Request, "GET /api/v1/metrics HTTP/1.1\r\n\r\n")),
            (30 * MS, Event::DaemonExit { pid: 1, code: None, signal: Some(9), socket_left: true }),
        ]);
        let generated = script(&r, 2.0);
        assert!(generated.notes.is_empty(), "{:?}", generated.notes);
        let rules: Vec<&Rule> = generated.script.rules.iter().map(|r| &r.value).collect();
        assert_eq!(rules.len(), 4);
        assert_eq!(rules[0].when.call, Some(Call::Nth(1)));
        // 3 ms at half the time, rounded.
        assert_eq!(rules[0].then[0], Action::DelayMs(2));
        assert!(matches!(&rules[0].then[1], Action::Respond(Respond { status: 200, body, .. }) if body == "{}"));
        assert!(matches!(&rules[1].then[..], [Action::DelayMs(1), Action::Respond(Respond { status: 500, .. })]));
        assert_eq!(rules[1].when.path.as_deref(), Some("/api/v1/mount"));
        assert_eq!(rules[2].when.call, Some(Call::Nth(2)));
        assert_eq!(rules[2].then, [Action::DelayMs(1), Action::Close]);
        assert_eq!(rules[3].then, [Action::DelayMs(10), Action::Signal(SignalName::Kill)]);
        // The script reads back as the mock reads scripts.
        let yaml = serde_saphyr::to_string(&generated.script).unwrap();
        let back = Script::parse(&yaml, "generated").unwrap();
        assert_eq!(back.rules.len(), 4);
    }

    #[test]
    fn a_death_before_any_request_is_a_startup_death() {
        let r =
            recording(vec![(50 * MS, Event::DaemonExit { pid: 1, code: Some(3), signal: None, socket_left: false })]);
        let generated = script(&r, 1.0);
        assert_eq!(generated.script.startup.die_after, Some(Death { ms: 50, exit: Some(3), signal: None }));
    }
}
