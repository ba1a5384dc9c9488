//! Every difference between two recordings of a session, a recording and its replay
//! above all: per connection, the requests (byte for byte), each reply's status, headers
//! and body (JSON compared as JSON, without the volatile fields `harness diff` ignores),
//! what was cut short or closed, and how the daemon ended. Timing is not a difference; it
//! is reported beside them.

use serde::Serialize;
use serde_json::Value;

use super::http::{Message, Session};
use super::recording::Recording;

/// Where a difference in how the daemon ended is reported.
pub const THE_DAEMON: &str = "the daemon";

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `connection N request M: METHOD target`, or what else differs.
    pub at: String,
    /// What differs.
    pub what: String,
    pub recorded: String,
    pub replayed: String,
}

/// The comparison of two recordings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    /// Requests compared.
    pub exchanges: usize,
    pub differences: Vec<Difference>,
    /// The largest difference between a recorded and a replayed reply delay, in ms
    /// (recorded delays scaled by the speed).
    pub max_delay_drift_ms: f64,
}

impl Comparison {
    /// The report's text.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for d in &self.differences {
            out.push_str(&format!(
                "DIFF {}: {}\n  recorded: {}\n  replayed: {}\n",
                d.at, d.what, d.recorded, d.replayed
            ));
        }
        out.push_str(&format!(
            "compared {} exchanges: {} differences; reply delays within {:.1} ms of the recording\n",
            self.exchanges,
            self.differences.len(),
            self.max_delay_drift_ms
        ));
        out
    }
}

/// Compares `recorded` with `replayed`; reply delays of the recording are divided by
/// `speed`; `volatile` are JSON pointers removed from bodies (`*`: any key).
pub fn compare(recorded: &Recording, replayed: &Recording, speed: f64, volatile: &[String]) -> Comparison {
    let (a, b) = (Session::of(recorded), Session::of(replayed));
    let mut out = Comparison::default();
    let mut differ = |at: String, what: &str, recorded: String, replayed: String| {
        out.differences.push(Difference { at, what: what.to_owned(), recorded, replayed });
    };
    let mut drift: f64 = 0.0;
    let mut exchanges = 0;
    for (id, ca) in &a.connections {
        let Some(cb) = b.connections.get(id) else {
            differ(format!("connection {id}"), "not opened in the replay", "opened".into(), "absent".into());
            continue;
        };
        if ca.refused != cb.refused {
            differ(format!("connection {id}"), "refused", ca.refused.to_string(), cb.refused.to_string());
        }
        let (answers_a, answers_b) = (ca.answers(), cb.answers());
        for (seq, ra) in ca.requests.iter().enumerate() {
            exchanges += 1;
            let at = format!("connection {id} request {}: {}", seq + 1, ra.request_line());
            match cb.requests.get(seq) {
                None => differ(at.clone(), "request not sent", text(&ra.raw), "absent".into()),
                Some(rb) if rb.raw != ra.raw => differ(at.clone(), "request bytes", text(&ra.raw), text(&rb.raw)),
                Some(_) => {}
            }
            match (answers_a[seq], answers_b.get(seq).copied().flatten()) {
                (Some(x), Some(y)) => {
                    compare_replies(&at, x, y, volatile, &mut differ);
                    if let Some(rb) = cb.requests.get(seq) {
                        let recorded_ms = x.first_ns.saturating_sub(ra.last_ns) as f64 / 1e6 / speed;
                        let replayed_ms = y.first_ns.saturating_sub(rb.last_ns) as f64 / 1e6;
                        drift = drift.max((recorded_ms - replayed_ms).abs());
                    }
                }
                (Some(x), None) => differ(at, "reply", x.start.clone(), "none".into()),
                (None, Some(y)) => differ(at, "reply", "none".into(), y.start.clone()),
                (None, None) => {}
            }
        }
        if cb.requests.len() > ca.requests.len() {
            differ(
                format!("connection {id}"),
                "requests",
                ca.requests.len().to_string(),
                cb.requests.len().to_string(),
            );
        }
        if ca.replies.len() != cb.replies.len() {
            differ(
                format!("connection {id}"),
                "whole replies",
                ca.replies.len().to_string(),
                cb.replies.len().to_string(),
            );
        }
        if ca.unframed_reply != cb.unframed_reply {
            differ(format!("connection {id}"), "reply cut short", text(&ca.unframed_reply), text(&cb.unframed_reply));
        }
        if ca.daemon_closed_ns.is_some() != cb.daemon_closed_ns.is_some() {
            let closed = |c: Option<u64>| if c.is_some() { "closed by the daemon" } else { "left open" }.to_owned();
            differ(format!("connection {id}"), "end", closed(ca.daemon_closed_ns), closed(cb.daemon_closed_ns));
        }
    }
    for id in b.connections.keys().filter(|id| !a.connections.contains_key(id)) {
        differ(format!("connection {id}"), "opened only in the replay", "absent".into(), "opened".into());
    }
    let end = |e: Option<(u64, Option<i32>, Option<i32>)>| match e {
        None => "not seen".to_owned(),
        Some((_, Some(code), _)) => format!("exit code {code}"),
        Some((_, None, Some(signal))) => format!("killed by signal {signal}"),
        Some(_) => "ended".to_owned(),
    };
    if end(a.exit) != end(b.exit) {
        differ(THE_DAEMON.into(), "how it ended", end(a.exit), end(b.exit));
    }
    out.exchanges = exchanges;
    out.max_delay_drift_ms = drift;
    out
}

/// [`compare`] without the volatile fields `harness diff` ignores (the built-in
/// docs/diff-explained.yaml): what a replay is held to.
pub fn compare_replay(recorded: &Recording, replayed: &Recording, speed: f64) -> Comparison {
    compare(recorded, replayed, speed, &crate::explained::Explained::shipped().volatile)
}

fn compare_replies(
    at: &str,
    x: &Message,
    y: &Message,
    volatile: &[String],
    differ: &mut impl FnMut(String, &str, String, String),
) {
    if x.status() != y.status() {
        differ(at.to_owned(), "status", x.start.clone(), y.start.clone());
    }
    if x.headers != y.headers {
        let show = |m: &Message| m.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect::<Vec<_>>().join(", ");
        differ(at.to_owned(), "headers", show(x), show(y));
    }
    let (bx, by) = (body(x, volatile), body(y, volatile));
    if bx != by {
        differ(at.to_owned(), "body", bx.to_string(), by.to_string());
    }
}

/// The body as JSON without its volatile fields, or as text.
fn body(m: &Message, volatile: &[String]) -> Value {
    let text = String::from_utf8_lossy(&m.body);
    match serde_json::from_str::<Value>(&text) {
        Ok(mut value) => {
            for pointer in volatile {
                crate::explained::remove_pointer(&mut value, pointer);
            }
            value
        }
        Err(_) => Value::String(text.into_owned()),
    }
}

fn text(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{Direction, Event, Side};

    fn recording(events: Vec<Event>) -> Recording {
        Recording::of_events(events.into_iter().enumerate().map(|(t, e)| (t as u64, e)).collect())
    }

    fn session(reply: &str, end: Event) -> Recording {
        recording(vec![
            Event::Open { conn: 1 },
            Event::data(1, Direction::Request, b"GET /api/v1/daemon HTTP/1.1\r\n\r\n"),
            Event::data(1, Direction::Reply, reply.as_bytes()),
            end,
        ])
    }

    #[test]
    fn each_kind_of_difference_is_named_and_volatile_fields_are_not_one() {
        let reply = |body: &str| format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let ok = &reply(r#"{"state":"RUNNING","version":1}"#);
        let killed = Event::DaemonExit { pid: 1, code: None, signal: Some(9), socket_left: true };
        let a = session(ok, killed.clone());
        let same_but_version = &reply(r#"{"version":2,"state":"RUNNING"}"#);
        let c = compare(&a, &session(same_but_version, killed.clone()), 1.0, &["/version".to_owned()]);
        assert_eq!((c.exchanges, c.differences.len()), (1, 0), "{}", c.report());

        let other = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nX: y\r\n\r\n\"no\"";
        let c = compare(&a, &session(other, Event::Close { conn: 1, side: Side::Daemon }), 1.0, &[]);
        let what: Vec<&str> = c.differences.iter().map(|d| d.what.as_str()).collect();
        assert_eq!(what, ["status", "headers", "body", "end", "how it ended"], "{}", c.report());
        assert_eq!(c.differences[0].at, "connection 1 request 1: GET /api/v1/daemon");
        assert_eq!(c.differences[4].recorded, "killed by signal 9");
    }
}
