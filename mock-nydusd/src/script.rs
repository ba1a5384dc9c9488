//! Scripted misbehaviour: rules `when → then` applied to API requests, and start-up
//! directives. A script is YAML (or JSON, which YAML reads too), given by `--mock-script`
//! or replaced at run time through the control socket.
//!
//! ```yaml
//! startup:
//!   socket_delay_ms: 300            # create the API socket late
//!   hold: { state: INIT, ms: 1000 } # report INIT for a second, then carry on
//!   die_after: { ms: 5000, signal: SIGKILL }
//! rules:
//!   - name: third-info-is-slow
//!     when: { method: GET, path: /api/v1/daemon, call: { nth: 3 } }
//!     then: [ { delay_ms: 1500 } ]
//!   - name: die-during-takeover
//!     when: { path: /api/v1/daemon/fuse/takeover }
//!     then: [ reply, { signal: SIGKILL } ]
//! ```
//!
//! The first rule whose `when` holds decides. Its `then` actions run in order; unless one
//! of them answers (`reply`, `respond`, `raw`), throws the reply away (`discard_reply`) or
//! ends the exchange (`hang`, `close`, an exit or a fatal signal), the daemon answers
//! normally after the last action.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// A whole script.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// What happens while the daemon starts.
    #[serde(default, skip_serializing_if = "Startup::is_empty")]
    pub startup: Startup,
    /// Request rules, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<Rule>")]
    pub rules: Vec<Spanned<Rule>>,
    /// Faults in the answers to the kernel's on-demand fscache requests (a singleton with
    /// `--fscache` on a kernel with on-demand fscache), tried in order; the first that
    /// matches applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fscache: Vec<FscacheRule>,
}

/// A fault in answering one kind of the kernel's on-demand fscache requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FscacheRule {
    /// The request: `open` (an erofs mount, or a device of its image) or `read` (a range
    /// of a blob the cache file lacks).
    pub on: FscacheRequest,
    /// Only requests for this blob (the fsid); every blob when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_id: Option<String>,
    /// Which requests of this kind, counted by this process over every blob from 1 (as a
    /// request rule's `call`); every one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Call>,
    /// Only in the N-th process of the daemon (its successors are not affected); every
    /// process when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub process: Option<u32>,
    /// What the daemon does instead of answering.
    pub action: FscacheAction,
}

/// The kinds of on-demand requests a rule can catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FscacheRequest {
    /// OPEN: a cookie the kernel wants, answered with `copen`.
    Open,
    /// READ: a range the kernel wants written into the cache file.
    Read,
}

/// What an fscache rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FscacheAction {
    /// OPEN: `copen` with -EIO, the mount fails with EIO. READ: completed without writing
    /// the range, which is still missing from the cache file, so the kernel fails the read
    /// (the reader gets an error).
    Fail,
    /// No answer: the request stays in flight, the reader waits, until the daemon dies
    /// (the kernel ends it) or a successor restores it and answers it.
    Never,
}

impl FscacheRule {
    /// Whether the rule catches the `nth` request of kind `on` for `blob_id` in process
    /// `process`.
    pub fn catches(&self, on: FscacheRequest, blob_id: &str, nth: u64, process: u32) -> bool {
        self.on == on
            && self.blob_id.as_deref().is_none_or(|b| b == blob_id)
            && self.call.is_none_or(|call| call.holds(nth))
            && self.process.is_none_or(|p| p == process)
    }
}

/// Start-up directives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("not" = { "required": ["no_socket", "socket_delay_ms"], "properties": { "no_socket": { "const": true } } }))]
pub struct Startup {
    /// Create the API socket this long after the start-up state is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_delay_ms: Option<u64>,
    /// Never create the API socket.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_socket: bool,
    /// Report this state for a while once the socket exists, then the real one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// Die this long after start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub die_after: Option<Death>,
}

impl Startup {
    fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// `startup.hold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    /// The state to report.
    pub state: State,
    /// For how long.
    pub ms: u64,
}

/// `startup.die_after`: after `ms`, exit with `exit` or die by `signal` (SIGKILL if neither).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("not" = { "required": ["exit", "signal"] }))]
pub struct Death {
    /// Delay from start.
    pub ms: u64,
    /// Exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 255))]
    pub exit: Option<i32>,
    /// Signal to raise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<SignalName>,
}

pub use nydusd_api::State;

/// A YAML parse error as `(line, column, message)`, 1-based (0 when unknown), the message
/// without serde-saphyr's source snippet: how script errors are located, and how the
/// harness locates errors in scenario files, which embed scripts.
pub use crate::yaml::describe as describe_yaml_error;

/// Signals a script may raise on the daemon itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SignalName {
    /// Killed outright: socket left, nothing cleaned up.
    #[serde(rename = "SIGKILL")]
    Kill,
    /// abort(): what a nydusd panic does.
    #[serde(rename = "SIGABRT")]
    Abort,
    /// A crash.
    #[serde(rename = "SIGSEGV")]
    Segv,
    /// Graceful stop.
    #[serde(rename = "SIGTERM")]
    Term,
    /// Graceful stop.
    #[serde(rename = "SIGINT")]
    Int,
    /// Frozen until SIGCONT.
    #[serde(rename = "SIGSTOP")]
    Stop,
}

impl SignalName {
    /// The signal.
    pub fn signal(self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal;
        match self {
            Self::Kill => Signal::SIGKILL,
            Self::Abort => Signal::SIGABRT,
            Self::Segv => Signal::SIGSEGV,
            Self::Term => Signal::SIGTERM,
            Self::Int => Signal::SIGINT,
            Self::Stop => Signal::SIGSTOP,
        }
    }

    /// Whether the process is gone once it is raised.
    pub fn is_fatal(self) -> bool {
        matches!(self, Self::Kill | Self::Abort | Self::Segv)
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Shown in the journal and in errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Which requests it applies to (all when empty).
    #[serde(default)]
    pub when: When,
    /// What to do.
    #[schemars(length(min = 1))]
    pub then: Vec<Action>,
    /// How often the rule must fire over the scenario (all processes of its daemon): a
    /// number, or `{ min, max }`. A harness checks it when the steps have passed and
    /// names each rule that fired too seldom with the request that came closest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<Times>,
}

/// How often a rule must fire: exactly `n`, or between `min` and `max` (each optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Times {
    /// Exactly this often.
    Exactly(u64),
    /// At least `min` (default 0) and at most `max` (default: no bound).
    Range {
        /// At least this often (default 0).
        #[serde(default)]
        min: u64,
        /// At most this often (default: no bound).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u64>,
    },
}

impl Times {
    /// Whether firing `count` times is what it asks.
    pub fn allows(self, count: u64) -> bool {
        match self {
            Self::Exactly(n) => count == n,
            Self::Range { min, max } => count >= min && max.is_none_or(|m| count <= m),
        }
    }
}

impl std::fmt::Display for Times {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let times = |n: u64| if n == 1 { "1 time".to_owned() } else { format!("{n} times") };
        match self {
            Self::Exactly(n) => write!(f, "exactly {}", times(*n)),
            Self::Range { min, max: Some(max) } => write!(f, "{min} to {}", times(*max)),
            Self::Range { min, max: None } => write!(f, "at least {}", times(*min)),
        }
    }
}

/// What a request's body must be: the text exactly, text it contains, or JSON whose
/// every field given here has the value given (other fields may be there too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BodyMatch {
    /// The body is exactly this text.
    Equals(String),
    /// The body contains this text.
    Contains(String),
    /// The body is JSON holding these fields with these values (recursively).
    Json(#[schemars(description = "The fields the body's JSON must hold, with their values.")] serde_json::Value),
}

impl BodyMatch {
    fn matches(&self, body: Option<&[u8]>) -> bool {
        let body = body.unwrap_or_default();
        match self {
            Self::Equals(text) => body == text.as_bytes(),
            Self::Contains(text) => text.is_empty() || body.windows(text.len()).any(|w| w == text.as_bytes()),
            Self::Json(subset) => {
                serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|value| json_holds(&value, subset))
            }
        }
    }
}

/// Whether `value` has every field of `subset` with its value: objects recursively,
/// anything else equal.
fn json_holds(value: &serde_json::Value, subset: &serde_json::Value) -> bool {
    match (value, subset) {
        (serde_json::Value::Object(have), serde_json::Value::Object(want)) => {
            want.iter().all(|(k, w)| have.get(k).is_some_and(|h| json_holds(h, w)))
        }
        _ => value == subset,
    }
}

/// Conditions, all of which must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// HTTP method; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Exact path (without query); any when absent or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(?:\*|/.*)$"))]
    pub path: Option<String>,
    /// Query parameters the request must carry with these values (decoded), e.g.
    /// `{ mountpoint: /c }`; others may be there too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<std::collections::BTreeMap<String, String>>,
    /// What the request's body must be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyMatch>,
    /// Reported state at the time of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// Which of the requests matching the above (counted from 1) fire the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Call>,
    /// Only from this many ms after start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<u64>,
    /// Only before this many ms after start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_ms: Option<u64>,
    /// Only in this process of the daemon, counted from 1 in the order they were started
    /// (`--mock-process`): 1 is the first, 2 the first replacement after a restart or
    /// failover, and so on. Every process when absent. Call counters are per process
    /// either way: each new process starts counting from zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub process: Option<u32>,
}

impl When {
    /// Whether the raw query string `query` carries every parameter `query` names, with
    /// its value (decoded).
    pub fn query_holds(&self, query: &str) -> bool {
        self.query.as_ref().is_none_or(|wanted| {
            wanted.iter().all(|(k, v)| crate::query::first_value(query, k).as_deref() == Some(v.as_str()))
        })
    }
}

/// Methods nydusd's HTTP library accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Put,
    Post,
    Delete,
    Patch,
    Head,
}

impl Method {
    /// The method as sent on the wire (`GET`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Put => "PUT",
            Self::Post => "POST",
            Self::Delete => "DELETE",
            Self::Patch => "PATCH",
            Self::Head => "HEAD",
        }
    }
}

/// Call-number condition over the requests a rule's other conditions match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Call {
    /// Exactly the n-th.
    Nth(#[schemars(range(min = 1))] u64),
    /// Every n-th (n, 2n, ...).
    Every(#[schemars(range(min = 1))] u64),
    /// Every one after the first n.
    After(u64),
}

impl Call {
    fn holds(self, count: u64) -> bool {
        match self {
            Self::Nth(n) => count == n,
            Self::Every(n) => n > 0 && count.is_multiple_of(n),
            Self::After(n) => count > n,
        }
    }
}

/// One step of a rule's `then`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Wait, holding the request lock as a slow nydusd handler does (other connections wait too).
    DelayMs(u64),
    /// Let the daemon handle the request and write its reply now.
    Reply,
    /// Let the daemon handle the request and throw its reply away: the work is done, and
    /// the client gets what the next actions say (`respond`, `raw`, `close`), or nothing
    /// more on this connection when none answers or ends it: the lost reply.
    DiscardReply,
    /// Write this reply instead of the daemon's (the daemon does not see the request).
    Respond(Respond),
    /// Write these bytes verbatim.
    Raw(String),
    /// Never answer on this connection again; other connections are served.
    Hang,
    /// Close the connection.
    Close,
    /// Close every open API connection, the liveness monitor's idle one included, while
    /// the process lives on and accepts new ones (a client sees a hang-up, not a death).
    /// Connections the process has accepted are closed; one still waiting in the accept
    /// queue is accepted afterwards and lives.
    HangUpAll,
    /// Move to this state (the internal state machine follows).
    State(State),
    /// Exit at once with this code, leaving the socket behind.
    Exit(#[schemars(range(min = 0, max = 255))] i32),
    /// Raise this signal on the daemon.
    Signal(SignalName),
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Self::DelayMs(_) => "delay_ms",
            Self::Reply => "reply",
            Self::DiscardReply => "discard_reply",
            Self::Respond(_) => "respond",
            Self::Raw(_) => "raw",
            Self::Hang => "hang",
            Self::Close => "close",
            Self::HangUpAll => "hang_up_all",
            Self::State(_) => "state",
            Self::Exit(_) => "exit",
            Self::Signal(_) => "signal",
        }
    }

    /// Whether nothing after this action can run.
    fn ends_exchange(&self) -> bool {
        match self {
            Self::Hang | Self::Close | Self::HangUpAll | Self::Exit(_) => true,
            Self::Signal(s) => s.is_fatal(),
            _ => false,
        }
    }

    /// Whether this action answers the request.
    pub fn answers(&self) -> bool {
        matches!(self, Self::Reply | Self::Respond(_) | Self::Raw(_))
    }
}

/// A scripted reply framed like nydusd's; `content_length` overrides the header to
/// produce truncated or over-long bodies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    /// Status code.
    pub status: u16,
    /// Body text (need not be JSON).
    #[serde(default)]
    pub body: String,
    /// `Content-Length` to send instead of the body's length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_length: Option<usize>,
}

impl Respond {
    /// The reply on the wire, framed as nydusd frames its own: what the mock writes, and
    /// what the injecting proxy writes in front of a real nydusd.
    pub fn encode(&self) -> Vec<u8> {
        let mut response = crate::http::Response::json(self.status, self.body.clone());
        if let Some(length) = self.content_length {
            response = response.with_content_length(length);
        }
        response.encode()
    }
}

/// A script that cannot be used; names where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    /// File name or `control socket`.
    pub origin: String,
    /// 1-based line and column, when known.
    pub location: Option<(u64, u64)>,
    /// The rule, as `rule N` plus its name when it has one.
    pub rule: Option<String>,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some((line, column)) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if let Some(rule) = &self.rule {
            write!(f, "{rule}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScriptError {}

/// `rule 2 (name)`, or `rule 2`: how errors, the journal's readers and reports name a rule.
pub fn rule_label(index: usize, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("rule {} ({name})", index + 1),
        None => format!("rule {}", index + 1),
    }
}

/// Where each rule starts, to attribute a parse error to the rule it falls in.
#[derive(Deserialize)]
struct RuleIndex {
    #[serde(default)]
    rules: Vec<Spanned<RuleHeader>>,
}

#[derive(Deserialize)]
struct RuleHeader {
    #[serde(default)]
    name: Option<serde_saphyr::Spanned<String>>,
}

impl Script {
    /// Reads a script file (a regular file of at most [`MAX_SCRIPT_FILE_BYTES`]).
    pub fn load(path: &Path) -> Result<Self, ScriptError> {
        let text = read_bounded(path, MAX_SCRIPT_FILE_BYTES).map_err(|e| ScriptError {
            origin: path.display().to_string(),
            location: None,
            rule: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates script text, YAML or JSON; `origin` names it in errors. JSON
    /// (text starting with `{`) is read by a JSON parser: a replay's script of a large
    /// session has millions of nodes, past the budget the YAML reader keeps against
    /// hostile documents, and JSON has no aliases to blow up.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ScriptError> {
        if text.trim_start().starts_with('{') {
            let script: Script = serde_json::from_str(text).map_err(|e| ScriptError {
                origin: origin.to_owned(),
                location: Some((e.line() as u64, e.column() as u64)),
                rule: None,
                message: e.to_string(),
            })?;
            script.validate(origin)?;
            return Ok(script);
        }
        Self::parse_yaml(text, origin)
    }

    fn parse_yaml(text: &str, origin: &str) -> Result<Self, ScriptError> {
        let script: Script = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column, message) = crate::yaml::describe(&e, text);
            let location = (line > 0).then_some((line, column));
            let rule = location.and_then(|(line, _)| Self::rule_at(text, line));
            ScriptError { origin: origin.to_owned(), location, rule, message }
        })?;
        script.validate(origin)?;
        Ok(script)
    }

    fn rule_at(text: &str, line: u64) -> Option<String> {
        let index: RuleIndex = serde_saphyr::from_str(text).ok()?;
        let (i, header) = index.rules.iter().enumerate().rfind(|(_, r)| r.referenced.line() <= line)?;
        Some(rule_label(i, header.value.name.as_ref().map(|n| n.value.as_str())))
    }

    /// Checks what the types cannot: counts of zero, paths, unreachable actions.
    pub fn validate(&self, origin: &str) -> Result<(), ScriptError> {
        for (i, spanned) in self.rules.iter().enumerate() {
            let rule = &spanned.value;
            let known = spanned.referenced.line() > 0;
            let error = |message: String| ScriptError {
                origin: origin.to_owned(),
                location: known.then(|| (spanned.referenced.line(), spanned.referenced.column())),
                rule: Some(rule_label(i, rule.name.as_deref())),
                message,
            };
            if let Some(Call::Nth(0) | Call::Every(0)) = rule.when.call {
                return Err(error("when.call: calls are counted from 1, so 0 never matches".into()));
            }
            if rule.when.process == Some(0) {
                return Err(error("when.process: processes are counted from 1, so 0 never matches".into()));
            }
            if let Some(path) = &rule.when.path
                && path != "*"
                && !path.starts_with('/')
            {
                return Err(error(format!("when.path: {path:?} must start with `/` (or be `*` for any path)")));
            }
            if let (Some(after), Some(before)) = (rule.when.after_ms, rule.when.before_ms)
                && after >= before
            {
                return Err(error(format!("when.after_ms ({after}) must be less than when.before_ms ({before})")));
            }
            if rule.then.is_empty() {
                return Err(error("then: needs at least one action".into()));
            }
            match rule.times {
                Some(Times::Range { min, max: Some(max) }) if min > max => {
                    return Err(error(format!("times: min ({min}) must not be more than max ({max})")));
                }
                Some(Times::Range { min: 0, max: None }) => {
                    return Err(error("times: says nothing (any count holds); give a number, `min` or `max`".into()));
                }
                _ => {}
            }
            if let Some((at, code)) = rule.then.iter().enumerate().find_map(|(i, a)| match a {
                Action::Exit(code) if !(0..=255).contains(code) => Some((i, *code)),
                _ => None,
            }) {
                return Err(error(format!(
                    "then[{}]: exit {code} is not an exit status (0-255; 256 would exit 0)",
                    at + 1
                )));
            }
            if let Some(end) = rule.then.iter().position(Action::ends_exchange)
                && let Some(next) = rule.then.get(end + 1)
            {
                return Err(error(format!(
                    "then[{}]: `{}` can never run: `{}` before it ends the exchange",
                    end + 1,
                    next.name(),
                    rule.then[end].name()
                )));
            }
        }
        let startup_error = |message: &str| ScriptError {
            origin: origin.to_owned(),
            location: None,
            rule: None,
            message: message.to_owned(),
        };
        if self.startup.no_socket && self.startup.socket_delay_ms.is_some() {
            return Err(startup_error("startup: `no_socket` and `socket_delay_ms` contradict each other"));
        }
        if let Some(death) = &self.startup.die_after
            && death.exit.is_some()
            && death.signal.is_some()
        {
            return Err(startup_error("startup.die_after: give `exit` or `signal`, not both"));
        }
        if let Some(code) = self.startup.die_after.as_ref().and_then(|d| d.exit)
            && !(0..=255).contains(&code)
        {
            return Err(startup_error(&format!(
                "startup.die_after.exit: {code} is not an exit status (0-255; 256 would exit 0)"
            )));
        }
        Ok(())
    }
}

/// The largest script sent through the control socket.
pub const MAX_SCRIPT_BYTES: u64 = 1024 * 1024;

/// The largest script file read (`--mock-script`): a replay's script has a rule per
/// recorded request, as large as the recording it plays (at most 256 MiB, read back
/// bounded), written as YAML. A 4 000-call session already made 16 MB, and a 1 MiB limit
/// here stopped replays of real sessions.
pub const MAX_SCRIPT_FILE_BYTES: u64 = 1024 * 1024 * 1024;

/// Reads `path` as text when it is a regular file of at most `limit` bytes: a FIFO, a
/// device (`/dev/zero`) or a directory is refused before it is opened, so reading can
/// neither block nor run on without end, and a file that grows past the limit while it is
/// read is refused too.
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if std::os::unix::fs::FileTypeExt::is_fifo(&kind) {
            "a FIFO"
        } else if std::os::unix::fs::FileTypeExt::is_char_device(&kind)
            || std::os::unix::fs::FileTypeExt::is_block_device(&kind)
        {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}, not a regular file")));
    }
    let too_large =
        |size: u64| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{size} bytes; the limit is {limit}"));
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut text = String::new();
    std::fs::File::open(path)?.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(too_large(text.len() as u64));
    }
    Ok(text)
}

/// A request as rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// Method.
    pub method: &'a str,
    /// Path without query.
    pub path: &'a str,
    /// Raw query string without `?`.
    pub query: &'a str,
    /// Body, if any.
    pub body: Option<&'a [u8]>,
    /// Reported state.
    pub state: State,
    /// Milliseconds since the daemon started.
    pub since_start_ms: u64,
    /// Which process of its daemon this is (`--mock-process`).
    pub process: u32,
}

/// A loaded script plus the per-rule call counters.
///
/// Rules that name a method, an exact path and a call number (and at most a process),
/// as a replay's script has one per recorded request, are looked up by that key instead
/// of tried one by one: a request costs the same whether the script has ten rules or a
/// hundred thousand (trying them all made a replay of a large session quadratic).
#[derive(Debug, Default)]
pub struct ScriptRunner {
    script: Script,
    counts: Vec<u64>,
    /// Keyed rules by their shared filter.
    keyed: std::collections::HashMap<KeyFilter, KeyedRules>,
    /// Every other rule, by index, in order.
    scanned: Vec<usize>,
}

/// The filter keyed rules share: method, exact path, process (none: any).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct KeyFilter {
    method: &'static str,
    path: String,
    process: Option<u32>,
}

/// The rules of one filter: how many requests matched it, and the first rule for each
/// call number.
#[derive(Debug, Default)]
struct KeyedRules {
    count: u64,
    by_call: std::collections::HashMap<u64, usize>,
}

/// The rule that fired for a request.
#[derive(Debug, Clone)]
pub struct Fired {
    /// 0-based rule index.
    pub index: usize,
    /// Rule name.
    pub name: Option<String>,
    /// Its call count at this request.
    pub call: u64,
    /// Actions to run.
    pub actions: Vec<Action>,
}

impl ScriptRunner {
    /// Runs `script` from fresh counters.
    pub fn new(script: Script) -> Self {
        let counts = vec![0; script.rules.len()];
        let mut keyed: std::collections::HashMap<KeyFilter, KeyedRules> = Default::default();
        let mut scanned = Vec::new();
        for (i, spanned) in script.rules.iter().enumerate() {
            let when = &spanned.value.when;
            let content = when.query.is_some() || when.body.is_some();
            match (when.method, &when.path, when.call, &when.state, when.after_ms, when.before_ms) {
                (Some(method), Some(path), Some(Call::Nth(n)), None, None, None) if path != "*" && !content => {
                    let filter = KeyFilter { method: method.as_str(), path: path.clone(), process: when.process };
                    keyed.entry(filter).or_default().by_call.entry(n).or_insert(i);
                }
                _ => scanned.push(i),
            }
        }
        Self { script, counts, keyed, scanned }
    }

    /// The current script.
    pub fn script(&self) -> &Script {
        &self.script
    }

    /// Counts the request against every rule whose filter matches, and returns the first
    /// rule whose call condition holds too.
    pub fn on_request(&mut self, request: Incoming<'_>) -> Option<Fired> {
        // The keyed rule that holds, if any: the lowest index among the filters that match.
        let mut keyed: Option<(usize, u64)> = None;
        for process in [None, Some(request.process)] {
            let filter = KeyFilter { method: method_name(request.method), path: request.path.to_owned(), process };
            if let Some(rules) = self.keyed.get_mut(&filter) {
                rules.count += 1;
                if let Some(&i) = rules.by_call.get(&rules.count)
                    && keyed.is_none_or(|(k, _)| i < k)
                {
                    keyed = Some((i, rules.count));
                }
            }
        }
        let mut fired: Option<Fired> = None;
        for &i in &self.scanned {
            let spanned = &self.script.rules[i];
            let when = &spanned.value.when;
            let matches = when.method.is_none_or(|m| m.as_str() == request.method)
                && when.path.as_deref().is_none_or(|p| p == "*" || p == request.path)
                && when.state.is_none_or(|s| s == request.state)
                && when.after_ms.is_none_or(|t| request.since_start_ms >= t)
                && when.before_ms.is_none_or(|t| request.since_start_ms < t)
                && when.process.is_none_or(|p| p == request.process)
                && when.query_holds(request.query)
                && when.body.as_ref().is_none_or(|b| b.matches(request.body));
            if !matches {
                continue;
            }
            self.counts[i] += 1;
            let call = self.counts[i];
            if fired.is_none() && when.call.is_none_or(|c| c.holds(call)) {
                fired = Some(Fired {
                    index: i,
                    name: spanned.value.name.clone(),
                    call,
                    actions: spanned.value.then.clone(),
                });
            }
        }
        match (keyed, fired) {
            (Some((i, call)), fired) if fired.as_ref().is_none_or(|f| i < f.index) => {
                let rule = &self.script.rules[i].value;
                Some(Fired { index: i, name: rule.name.clone(), call, actions: rule.then.clone() })
            }
            (_, fired) => fired,
        }
    }
}

/// A method as keyed rules name it (`Method::as_str`); another is keyed by nothing.
fn method_name(method: &str) -> &'static str {
    [Method::Get, Method::Put, Method::Post, Method::Delete, Method::Patch, Method::Head]
        .into_iter()
        .map(Method::as_str)
        .find(|m| *m == method)
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &'static str, path: &'static str) -> Incoming<'static> {
        Incoming { method, path, query: "", body: None, state: State::Running, since_start_ms: 10, process: 1 }
    }

    /// A rule matches a query parameter decoded, and a body exactly, by a part, or as a
    /// JSON subset; a request lacking any of it is not counted against the rule.
    #[test]
    fn rules_match_the_query_and_the_body() {
        let script = Script::parse(
            "rules:\n  - when: { query: { mountpoint: /c d } }\n    then: [close]\n  - when: { body: { json: { fs_type: rafs, config: { a: 1 } } } }\n    then: [close]\n  - when: { body: { contains: needle } }\n    then: [close]\n  - when: { body: { equals: \"\" } }\n    then: [close]\n",
            "t",
        )
        .unwrap();
        let mut runner = ScriptRunner::new(script);
        let mut fire = |query: &'static str, body: Option<&'static [u8]>| {
            runner.on_request(Incoming { query, body, ..request("POST", "/api/v1/mount") }).map(|f| f.index + 1)
        };
        assert_eq!(fire("x=1&mountpoint=%2Fc%20d", Some(b"{}")), Some(1));
        assert_eq!(fire("mountpoint=/c", Some(b"{}")), None);
        assert_eq!(fire("", Some(br#"{"fs_type":"rafs","config":{"a":1,"b":2},"source":"/s"}"#)), Some(2));
        assert_eq!(fire("", Some(br#"{"fs_type":"rafs","config":{"a":2}}"#)), None);
        assert_eq!(fire("", Some(b"not json, a needle in it")), Some(3));
        assert_eq!(fire("", None), Some(4));
    }

    #[test]
    fn times_say_how_often_and_a_range_must_be_one() {
        let times = |text: &str| serde_json::from_str::<Times>(text).unwrap();
        assert!(times("1").allows(1) && !times("1").allows(0) && !times("1").allows(2));
        assert!(times(r#"{"min":1}"#).allows(7) && !times(r#"{"min":1}"#).allows(0));
        assert!(times(r#"{"max":2}"#).allows(0) && !times(r#"{"max":2}"#).allows(3));
        assert_eq!(times("1").to_string(), "exactly 1 time");
        assert_eq!(times(r#"{"min":2,"max":3}"#).to_string(), "2 to 3 times");
        let e =
            Script::parse("rules:\n  - when: {}\n    then: [close]\n    times: { min: 3, max: 2 }\n", "t").unwrap_err();
        assert!(e.to_string().contains("times: min (3) must not be more than max (2)"), "{e}");
    }

    #[test]
    fn the_example_in_the_module_docs_parses() {
        let doc = include_str!("script.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```yaml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.strip_prefix("//! ").unwrap_or("").to_owned() + "\n")
            .collect();
        let script = Script::parse(&example, "docs").unwrap();
        assert_eq!(script.rules.len(), 2);
        assert_eq!(script.startup.hold, Some(Hold { state: State::Init, ms: 1000 }));
    }

    #[test]
    fn call_conditions_count_matching_requests_from_one() {
        let script = Script::parse(
            "rules:\n  - when: {path: /a, call: {nth: 2}}\n    then: [close]\n  - when: {call: {every: 2}}\n    then: [hang]\n",
            "t",
        )
        .unwrap();
        let mut runner = ScriptRunner::new(script);
        assert!(runner.on_request(request("GET", "/a")).is_none());
        assert_eq!(runner.on_request(request("GET", "/a")).unwrap().index, 0);
        // The second rule saw both /a requests and this one: its 3rd call, not even.
        assert!(runner.on_request(request("GET", "/b")).is_none());
        assert_eq!(runner.on_request(request("PUT", "/b")).unwrap().index, 1);
        let mut after =
            ScriptRunner::new(Script::parse("rules: [{when: {call: {after: 1}}, then: [close]}]", "t").unwrap());
        assert!(after.on_request(request("GET", "/")).is_none());
        assert!(after.on_request(request("GET", "/")).is_some());
    }

    #[test]
    fn state_and_time_filters() {
        let script =
            Script::parse("rules: [{when: {state: INIT, after_ms: 5, before_ms: 20}, then: [reply]}]", "t").unwrap();
        let mut runner = ScriptRunner::new(script);
        assert!(runner.on_request(request("GET", "/")).is_none());
        let init = |ms| Incoming {
            method: "GET",
            path: "/",
            query: "",
            body: None,
            state: State::Init,
            since_start_ms: ms,
            process: 1,
        };
        assert!(runner.on_request(init(4)).is_none());
        assert!(runner.on_request(init(5)).is_some());
        assert!(runner.on_request(init(20)).is_none());
    }

    #[test]
    fn json_scripts_are_accepted() {
        let script = Script::parse(
            r#"{"rules":[{"name":"x","when":{"method":"GET"},"then":[{"respond":{"status":500,"body":"{"}}]}]}"#,
            "t",
        )
        .unwrap();
        assert_eq!(
            script.rules[0].value.then[0],
            Action::Respond(Respond { status: 500, body: "{".into(), content_length: None })
        );
        let round_trip = Script::parse(&serde_json::to_string(&script).unwrap(), "t").unwrap();
        assert_eq!(round_trip.rules[0].value, script.rules[0].value);
    }

    #[rstest::rstest]
    #[case::unknown_action(
        "rules:\n  - name: ok\n    then: [reply]\n  - name: boom\n    then: [explode]\n",
        "t:5:12: rule 2 (boom): unknown variant `explode`"
    )]
    #[case::unknown_condition(
        "rules:\n  - when: {methd: GET}\n    then: [reply]\n",
        "t:2:12: rule 1: unknown field `methd`, expected one of method, path"
    )]
    #[case::bad_state(
        "rules:\n  - when: {state: DEAD}\n    then: [reply]\n",
        "t:2:19: rule 1: unknown variant `DEAD`, expected one of INIT, READY, RUNNING, STOPPED"
    )]
    #[case::bad_signal("rules:\n  - then: [{signal: SIGHUP}]\n", "t:2:21: rule 1: unknown variant `SIGHUP`")]
    #[case::nth_zero(
        "rules:\n  - name: z\n    when: {call: {nth: 0}}\n    then: [reply]\n",
        "t:2:5: rule 1 (z): when.call: calls are counted from 1"
    )]
    #[case::relative_path(
        "rules:\n  - when: {path: api}\n    then: [reply]\n",
        "t:2:5: rule 1: when.path: \"api\" must start with `/`"
    )]
    #[case::unreachable(
        "rules:\n  - then: [hang, reply]\n",
        "t:2:5: rule 1: then[1]: `reply` can never run: `hang` before it ends the exchange"
    )]
    #[case::empty_then("rules:\n  - then: []\n", "t:2:5: rule 1: then: needs at least one action")]
    #[case::missing_then("rules:\n  - name: n\n    when: {}\n", "rule 1 (n): missing field `then`")]
    #[case::startup_field("startup:\n  socket_delay: 3\n", "t:2:3: unknown field `socket_delay`")]
    #[case::startup_conflict(
        "startup: {no_socket: true, socket_delay_ms: 5}\n",
        "t: startup: `no_socket` and `socket_delay_ms` contradict each other"
    )]
    #[case::exit_past_255(
        "rules:\n  - then: [{exit: 256}]\n",
        "t:2:5: rule 1: then[1]: exit 256 is not an exit status"
    )]
    #[case::negative_exit("rules:\n  - then: [{exit: -1}]\n", "rule 1: then[1]: exit -1 is not an exit status")]
    #[case::die_after_exit_past_255(
        "startup: {die_after: {ms: 1, exit: 300}}\n",
        "t: startup.die_after.exit: 300 is not an exit status"
    )]
    #[case::process_zero(
        "rules:\n  - when: {process: 0}\n    then: [close]\n",
        "when.process: processes are counted from 1"
    )]
    fn malformed_scripts_name_the_rule_and_the_field(#[case] text: &str, #[case] expected: &str) {
        let error = Script::parse(text, "t").unwrap_err().to_string();
        assert!(error.contains(expected), "got: {error}\nwanted: {expected}");
    }

    /// The keyed lookup decides as trying every rule in order would, for any mix of
    /// keyed and other rules (the reference below is the loop the runner had).
    #[test]
    fn keyed_rules_decide_as_trying_every_rule_in_order_would() {
        fn reference(rules: &[Rule], counts: &mut [u64], r: &Incoming<'_>) -> Option<(usize, u64)> {
            let mut fired = None;
            for (i, rule) in rules.iter().enumerate() {
                let when = &rule.when;
                let matches = when.method.is_none_or(|m| m.as_str() == r.method)
                    && when.path.as_deref().is_none_or(|p| p == "*" || p == r.path)
                    && when.process.is_none_or(|p| p == r.process);
                if !matches {
                    continue;
                }
                counts[i] += 1;
                if fired.is_none() && when.call.is_none_or(|c| c.holds(counts[i])) {
                    fired = Some((i, counts[i]));
                }
            }
            fired
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let methods = [Method::Get, Method::Post];
        let paths = ["/a", "/b"];
        for _ in 0..200 {
            let rules: Vec<Rule> = (0..1 + next(12))
                .map(|_| Rule {
                    name: None,
                    when: When {
                        method: (next(4) > 0).then(|| methods[next(2) as usize]),
                        path: (next(4) > 0).then(|| paths[next(2) as usize].to_owned()),
                        call: match next(4) {
                            0 => None,
                            1 => Some(Call::Every(1 + next(3))),
                            _ => Some(Call::Nth(1 + next(4))),
                        },
                        process: (next(3) == 0).then(|| 1 + next(2) as u32),
                        ..When::default()
                    },
                    then: vec![Action::Reply],
                    times: None,
                })
                .collect();
            let script = Script {
                startup: Startup::default(),
                rules: rules
                    .iter()
                    .cloned()
                    .map(|r| Spanned::new(r, serde_saphyr::Location::UNKNOWN, serde_saphyr::Location::UNKNOWN))
                    .collect(),
                fscache: Vec::new(),
            };
            let mut runner = ScriptRunner::new(script);
            let mut counts = vec![0; rules.len()];
            for _ in 0..20 {
                let method = methods[next(2) as usize].as_str();
                let path = paths[next(2) as usize];
                let r = Incoming {
                    method,
                    path,
                    query: "",
                    body: None,
                    state: State::Running,
                    since_start_ms: 0,
                    process: 1 + next(2) as u32,
                };
                let want = reference(&rules, &mut counts, &r);
                let got = runner.on_request(r).map(|f| (f.index, f.call));
                assert_eq!(got, want, "rules {rules:?}");
            }
        }
    }
}
