//! Record a nydusd API session and replay it on the mock.
//!
//! * [`proxy`]: `harness record`, a transparent proxy on nydusd's API socket that records
//!   every byte that passes, in both directions, with when and on which connection.
//! * [`recording`]: the recording file, read and written.
//! * [`redact`]: credentials masked by parsing each HTTP message (JSON, TOML, chunks), wherever it is cut.
//! * [`supervisor`]: the supervisor socket relayed, fds included, recorded by size.
//! * [`http`]: a recording's byte streams cut into HTTP exchanges.
//! * [`generate`]: the mock script that plays a recorded daemon, and the scenario around it.
//! * [`replay`]: the recorded client side sent again, as recorded, and what comes back kept.
//! * [`replay_dir`]: `harness replay DIR`: the files it writes (never through a link), the mock on
//!   the script, the replay's bounds and every failure's cause.
//! * [`compare`]: every difference between a recording and its replay, without the volatile
//!   fields of [`explained`] (`docs/diff-explained.yaml`).
//! * [`inject`]: the injector, the mock's script rules applied in front of a real nydusd
//!   (the harness's real target), with its start-up faults and the mock's journal.
//! * `argv`: the socket flags of a daemon's command line the recorder moves.
//!
//! Clients connect to the proxy's socket as if it were nydusd's; each connection gets one
//! of its own to the daemon. Whatever one side writes is written to the other as it was
//! read, in the same pieces and order, so keep-alive, pipelining and a request split
//! across writes reach nydusd as the client sent them. The proxy adds no bytes.
//!
//! # The recording (`DIR/recording.jsonl`)
//!
//! One JSON object per line, each with `t_ns` (CLOCK_MONOTONIC nanoseconds) and `event`.
//! Lines are in time order within a connection's direction; a request's pieces are
//! written once the request is whole (to redact it), so across connections and
//! directions readers order lines by `t_ns` ([`Recording::read`] does). The file is
//! created 0600, in a directory that is 0700.
//!
//! | event | fields | what |
//! |---|---|---|
//! | `recording` | `version` (1), `upstream`, `listen`, `command` and `pid` (when the recorder started the daemon) | the first line |
//! | `daemon_listening` | `socket`, `after_ns` | (`record -- <command>`) the started daemon accepts on its moved API socket, `after_ns` after it started; clients are let in from then on |
//! | `open` | `conn` | a client connected, and its connection to the daemon is open |
//! | `upstream_refused` | `conn`, `error` | the daemon's socket refused it; the client's connection is closed |
//! | `data` | `conn`, `dir` (`request` or `reply`), `len`, `text` or `base64` | bytes read on one side and written to the other |
//! | `close` | `conn`, `side` (`client` or `daemon`) | that side closed its end; the other is shut down for writing |
//! | `supervisor_open` | `conn` | (`--supervisor`) the daemon connected to the supervisor socket; its own numbering |
//! | `supervisor_refused` | `conn`, `error` | the real supervisor's socket refused it |
//! | `supervisor_data` | `conn`, `flow` (`to_supervisor` or `to_daemon`), `len`, `fds` | a piece's size and fd count; the content is not kept |
//! | `supervisor_close` | `conn`, `from` | the side sending that way closed its end |
//! | `daemon_exit` | `pid`, `code`, `signal`, `socket_left` | the daemon the recorder started ended (`record -- <command>`) |
//!
//! A chunk is `text` when it is UTF-8, else `base64`. Credentials (`auth`,
//! `registry_token`, passwords, access keys, tokens, `Authorization`), in bodies, in
//! configurations inside them (JSON or TOML) and in headers, are replaced by as many `*`
//! in the recording only (so lengths stay true), however they are spelled and cut; what
//! passes through is never changed ([`redact`]). A replay writes its own recording in the
//! same format, as its client saw the session.

mod argv;
pub mod compare;
mod error;
pub mod explained;
pub mod generate;
pub mod http;
pub mod inject;
pub mod proxy;
pub mod recording;
pub mod redact;
pub mod replay;
pub mod replay_dir;
pub mod supervisor;

pub use argv::move_apisock;
pub use error::RecordError;
pub use proxy::{RecordOptions, record_command, serve};
pub use recording::{FORMAT_VERSION, Recording};
pub use redact::Redactor;
