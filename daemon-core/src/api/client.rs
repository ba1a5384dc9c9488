//! An HTTP/1.1 client for nydusd's API socket.
//!
//! Keep-alive connections are pooled by hyper-util's client over hyperlocal's Unix
//! connector. Every request carries a fixed-length body (`Content-Length`, never chunked):
//! nydusd's HTTP library does not de-chunk bodies and would read the chunk framing as the
//! next request line (`nydusd-api.md` §1.2).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::UnixConnector;

use super::query;
use super::types::{DaemonInfo, ErrorMessage, MountRequest};

/// The Go client's overall request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What kind of failure a [`ClientError`] is, for callers that branch on it. Deserialises
/// from snake_case names (`not_found`, ...) so scenario files can name kinds directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Nothing is mounted there / no such object (nydusd's "doesn't exist", or a 404).
    NotFound,
    /// The object is already there (nydusd's "already exists").
    AlreadyExists,
    /// Any other error status from nydusd.
    Daemon,
    /// No reply within the request deadline.
    Timeout,
    /// Could not connect, or the connection broke before a full reply.
    Connection,
    /// A reply that is not what the API promises (bad JSON, bad framing).
    Decode,
}

/// A failed API call. Every variant names the socket and the request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `connect()` to the socket failed.
    #[error("cannot connect to nydusd API socket {socket} for {method} {path}")]
    Connect {
        /// API socket path.
        socket: PathBuf,
        /// Request method.
        method: Method,
        /// Request path and query.
        path: String,
        /// The connector's error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The connection broke, or the reply could not be framed.
    #[error("connection to nydusd API socket {socket} failed during {method} {path}")]
    Transport {
        /// API socket path.
        socket: PathBuf,
        /// Request method.
        method: Method,
        /// Request path and query.
        path: String,
        /// The HTTP layer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No complete reply within the deadline.
    #[error("{method} {path} on {socket} timed out after {after:?}")]
    Timeout {
        /// API socket path.
        socket: PathBuf,
        /// Request method.
        method: Method,
        /// Request path and query.
        path: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// nydusd answered with an error status.
    #[error("{method} {path}: http response: {status}, error code: {}, error message: {}", .error.code, .error.message)]
    Daemon {
        /// Request method.
        method: Method,
        /// Request path and query.
        path: String,
        /// HTTP status.
        status: u16,
        /// Decoded `{code, message}` body (empty when the body was not that shape).
        error: ErrorMessage,
        /// The raw body, kept for diagnostics when it did not decode.
        raw_body: String,
    },
    /// The reply body is larger than the client's cap; reading stopped there, so a
    /// runaway or hostile daemon cannot make the manager buffer without bound.
    #[error("{method} {path}: reply body of {} exceeds the {limit}-byte cap", size.map(|n| format!("{n} bytes")).unwrap_or_else(|| "more bytes".into()))]
    ReplyTooLarge {
        /// Request method.
        method: Method,
        /// Request path and query.
        path: String,
        /// The announced `Content-Length`, when there was one.
        size: Option<u64>,
        /// The cap.
        limit: usize,
    },
    /// A success reply whose body is not what the endpoint promises.
    #[error("{method} {path}: cannot decode reply with status {status}: {body:?}")]
    Decode {
        /// Request method.
        method: Method,
        /// Request path and query.
        path: String,
        /// HTTP status.
        status: u16,
        /// Raw body.
        body: String,
        /// JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// Classifies the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Connect { .. } | Self::Transport { .. } => ErrorKind::Connection,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Decode { .. } | Self::ReplyTooLarge { .. } => ErrorKind::Decode,
            Self::Daemon { status, error, .. } => {
                if error.message.contains("already exists") {
                    ErrorKind::AlreadyExists
                } else if *status == 404 || error.message.contains("doesn't exist") {
                    ErrorKind::NotFound
                } else {
                    ErrorKind::Daemon
                }
            }
        }
    }

    /// Whether nydusd may have carried the request out although no reply arrived: the
    /// request was sent (or partly sent) and then the deadline passed or the connection
    /// broke. A failed connect is not ambiguous: nothing reached the daemon.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Self::Transport { .. } | Self::Timeout { .. })
    }

    /// The HTTP status nydusd answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Daemon { status, .. } | Self::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// nydusd's error message, if it sent one.
    pub fn daemon_message(&self) -> Option<&str> {
        match self {
            Self::Daemon { error, .. } => Some(&error.message),
            _ => None,
        }
    }
}

/// A reply as received: status and body bytes.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Body bytes (empty for 204).
    pub body: Bytes,
}

/// One request and what came of it, as an [`ExchangeObserver`] sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exchange {
    /// The API socket.
    pub socket: PathBuf,
    /// Request method.
    pub method: String,
    /// Request path and query.
    pub path: String,
    /// Request body (UTF-8, lossy).
    pub request: String,
    /// HTTP status, when a reply came.
    pub status: Option<u16>,
    /// Reply body (UTF-8, lossy), or the client error when no reply came.
    pub reply: String,
}

/// Sees every exchange of the clients it is given to: a test harness records the
/// conversation with the daemon, to show it in timelines and compare daemons.
#[derive(Clone)]
pub struct ExchangeObserver(std::sync::Arc<dyn Fn(Exchange) + Send + Sync>);

impl ExchangeObserver {
    /// Wraps `f`; it runs on the requesting task, so it must be quick.
    pub fn new(f: impl Fn(Exchange) + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }
}

impl std::fmt::Debug for ExchangeObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExchangeObserver")
    }
}

/// A client for one nydusd API socket. Cheap to clone; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct NydusdClient {
    socket: PathBuf,
    http: Client<UnixConnector, Full<Bytes>>,
    timeout: Duration,
    reply_limit: usize,
    observer: Option<ExchangeObserver>,
}

/// The default cap on a reply body. nydusd's largest replies (metrics of many files, a
/// `backend_collection` of many mounts) are tens of KiB.
pub const DEFAULT_REPLY_LIMIT: usize = 4 * 1024 * 1024;

/// How much of a body an error message or an exchange record quotes.
pub const QUOTED_BODY_LIMIT: usize = 4096;

/// `body` as text for an error or a report: at most [`QUOTED_BODY_LIMIT`] bytes of it,
/// with the full size named when it was cut.
pub fn quote_body(body: &[u8]) -> String {
    if body.len() <= QUOTED_BODY_LIMIT {
        return String::from_utf8_lossy(body).into_owned();
    }
    format!("{}… ({} bytes in all)", String::from_utf8_lossy(&body[..QUOTED_BODY_LIMIT]), body.len())
}

impl NydusdClient {
    /// A client for `socket` with the default 30 s request timeout. Does not connect yet.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(10)
            .pool_idle_timeout(Duration::from_secs(10))
            .build(UnixConnector);
        Self {
            socket: socket.into(),
            http,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            reply_limit: DEFAULT_REPLY_LIMIT,
            observer: None,
        }
    }

    /// The same client with another cap on reply bodies.
    pub fn with_reply_limit(mut self, limit: usize) -> Self {
        self.reply_limit = limit;
        self
    }

    /// The same client, reporting every exchange to `observer`.
    pub fn with_observer(mut self, observer: Option<ExchangeObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The API socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request and returns the reply whatever its status.
    pub async fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<RawResponse, ClientError> {
        self.request_with_timeout(method, path, body, self.timeout).await
    }

    /// [`NydusdClient::request`] with an explicit deadline for this call only.
    pub async fn request_with_timeout(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<RawResponse, ClientError> {
        let Some(observer) = &self.observer else { return self.exchange(method, path, body, timeout).await };
        let request = String::from_utf8_lossy(body.as_deref().unwrap_or_default()).into_owned();
        let outcome = self.exchange(method.clone(), path, body, timeout).await;
        let (status, reply) = match &outcome {
            Ok(r) => (Some(r.status.as_u16()), quote_body(&r.body)),
            Err(e) => (None, e.to_string()),
        };
        (observer.0)(Exchange {
            socket: self.socket.clone(),
            method: method.to_string(),
            path: path.to_owned(),
            request,
            status,
            reply,
        });
        outcome
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<RawResponse, ClientError> {
        let uri: hyper::Uri = hyperlocal::Uri::new(&self.socket, path).into();
        let mut builder = Request::builder().method(method.clone()).uri(uri);
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let bytes = body.map(Bytes::from).unwrap_or_default();
        // Explicit length even when zero: Go sends `Content-Length: 0` on body-less PUT and
        // POST, and nydusd treats that as "no body".
        builder = builder.header(hyper::header::CONTENT_LENGTH, bytes.len());
        let request = builder.body(Full::new(bytes)).map_err(|e| ClientError::Transport {
            socket: self.socket.clone(),
            method: method.clone(),
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|source| {
                if source.is_connect() {
                    ClientError::Connect {
                        socket: self.socket.clone(),
                        method: method.clone(),
                        path: path.to_owned(),
                        source,
                    }
                } else {
                    ClientError::Transport {
                        socket: self.socket.clone(),
                        method: method.clone(),
                        path: path.to_owned(),
                        source: Box::new(source),
                    }
                }
            })?;
            let status = response.status();
            let too_large = |size| ClientError::ReplyTooLarge {
                method: method.clone(),
                path: path.to_owned(),
                size,
                limit: self.reply_limit,
            };
            let announced = response
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if announced.is_some_and(|n| n > self.reply_limit as u64) {
                return Err(too_large(announced));
            }
            let limited = http_body_util::Limited::new(response.into_body(), self.reply_limit);
            let body = limited.collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    too_large(None)
                } else {
                    ClientError::Transport {
                        socket: self.socket.clone(),
                        method: method.clone(),
                        path: path.to_owned(),
                        source: e,
                    }
                }
            })?;
            Ok(RawResponse { status, body: body.to_bytes() })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| ClientError::Timeout {
            socket: self.socket.clone(),
            method: method.clone(),
            path: path.to_owned(),
            after: timeout,
        })?
    }

    /// Sends a request and maps non-2xx replies to [`ClientError::Daemon`], as the Go client
    /// does (200 and 204 are success).
    pub async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Bytes, ClientError> {
        let reply = self.request(method.clone(), path, body).await?;
        interpret_reply(method, path, reply)
    }

    /// `GET /api/v1/daemon`.
    pub async fn get_daemon_info(&self) -> Result<DaemonInfo, ClientError> {
        self.get_json("/api/v1/daemon").await
    }

    /// `POST /api/v1/mount?mountpoint=<mountpoint>`.
    pub async fn mount(&self, mountpoint: &str, request: &MountRequest) -> Result<(), ClientError> {
        let body = serde_json::to_vec(request).expect("a MountRequest always serialises");
        self.call(Method::POST, &mount_path(mountpoint), Some(body)).await.map(drop)
    }

    /// `DELETE /api/v1/mount?mountpoint=<mountpoint>`.
    pub async fn umount(&self, mountpoint: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &mount_path(mountpoint), None).await.map(drop)
    }

    /// `PUT /api/v1/daemon/start`.
    pub async fn start(&self) -> Result<(), ClientError> {
        self.call(Method::PUT, "/api/v1/daemon/start", None).await.map(drop)
    }

    /// `PUT /api/v1/daemon/exit`.
    pub async fn exit(&self) -> Result<(), ClientError> {
        self.call(Method::PUT, "/api/v1/daemon/exit", None).await.map(drop)
    }

    /// `PUT /api/v1/daemon/fuse/takeover`.
    pub async fn takeover(&self) -> Result<(), ClientError> {
        self.call(Method::PUT, "/api/v1/daemon/fuse/takeover", None).await.map(drop)
    }

    /// `PUT /api/v1/daemon/fuse/sendfd`.
    pub async fn send_fd(&self) -> Result<(), ClientError> {
        self.call(Method::PUT, "/api/v1/daemon/fuse/sendfd", None).await.map(drop)
    }

    /// A GET whose 200 body decodes as `T`.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.call(Method::GET, path, None).await?;
        decode(path, &body)
    }

    /// `GET /api/v1/metrics[?id=<id>]`: FS counters (of the only instance without an id).
    pub async fn fs_metrics(&self, id: Option<&str>) -> Result<serde_json::Value, ClientError> {
        self.get_json(&with_id("/api/v1/metrics", id)).await
    }

    /// `GET /api/v1/metrics/blobcache[?id=<id>]`.
    pub async fn cache_metrics(&self, id: Option<&str>) -> Result<serde_json::Value, ClientError> {
        self.get_json(&with_id("/api/v1/metrics/blobcache", id)).await
    }

    /// `GET /api/v1/metrics/inflight`: `None` for 204 (nothing in flight).
    pub async fn inflight_metrics(&self) -> Result<Option<serde_json::Value>, ClientError> {
        let path = "/api/v1/metrics/inflight";
        let body = self.call(Method::GET, path, None).await?;
        if body.is_empty() {
            return Ok(None);
        }
        decode(path, &body).map(Some)
    }

    /// `PUT /api/v1/config?id=<id>` with `{"registry_auth": <auth>}`.
    pub async fn update_registry_auth(&self, id: &str, auth: &str) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&serde_json::json!({ "registry_auth": auth })).expect("json");
        self.call(Method::PUT, &with_id("/api/v1/config", Some(id)), Some(body)).await.map(drop)
    }

    /// `PUT /api/v2/blobs` with a blob-cache entry (the fscache instance configuration).
    pub async fn bind_blob(&self, entry: &[u8]) -> Result<(), ClientError> {
        self.call(Method::PUT, "/api/v2/blobs", Some(entry.to_vec())).await.map(drop)
    }

    /// `DELETE /api/v2/blobs`, with the Go client's query rules: `domain_id=<d>` plus
    /// `blob_id=<b>` unless b equals d; only `blob_id=<b>` when the domain is empty.
    pub async fn unbind_blob(&self, domain_id: &str, blob_id: &str) -> Result<(), ClientError> {
        let path = if domain_id.is_empty() {
            format!("/api/v2/blobs?blob_id={}", query::encode(blob_id))
        } else if blob_id == domain_id {
            format!("/api/v2/blobs?domain_id={}", query::encode(domain_id))
        } else {
            format!("/api/v2/blobs?domain_id={}&blob_id={}", query::encode(domain_id), query::encode(blob_id))
        };
        self.call(Method::DELETE, &path, None).await.map(drop)
    }
}

/// How a reply reads: 200 and 204 are success (the body), anything else is
/// [`ClientError::Daemon`] with nydusd's `{code, message}` decoded when it has that shape.
#[expect(clippy::result_large_err, reason = "the async methods return this error unboxed too")]
pub fn interpret_reply(method: Method, path: &str, reply: RawResponse) -> Result<Bytes, ClientError> {
    if reply.status == StatusCode::OK || reply.status == StatusCode::NO_CONTENT {
        return Ok(reply.body);
    }
    let raw_body = quote_body(&reply.body);
    let error = serde_json::from_slice::<ErrorMessage>(&reply.body).unwrap_or_default();
    Err(ClientError::Daemon { method, path: path.to_owned(), status: reply.status.as_u16(), error, raw_body })
}

/// Decodes a 200 reply of a GET, keeping the body for the error.
#[expect(clippy::result_large_err, reason = "the async methods return this error unboxed too")]
pub fn decode<T: serde::de::DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|source| ClientError::Decode {
        method: Method::GET,
        path: path.to_owned(),
        status: 200,
        body: quote_body(body),
        source,
    })
}

fn with_id(path: &str, id: Option<&str>) -> String {
    match id {
        Some(id) => format!("{path}?id={}", query::encode(id)),
        None => path.to_owned(),
    }
}

fn mount_path(mountpoint: &str) -> String {
    format!("/api/v1/mount?mountpoint={}", query::encode(mountpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon_error(status: u16, message: &str) -> ClientError {
        ClientError::Daemon {
            method: Method::POST,
            path: "/api/v1/mount?mountpoint=/a".into(),
            status,
            error: ErrorMessage::undefined(message),
            raw_body: String::new(),
        }
    }

    #[rstest::rstest]
    #[case::exists(
        500,
        r#"Mount(MountFilesystem(Other("object or filesystem already exists")))"#,
        ErrorKind::AlreadyExists
    )]
    #[case::missing(500, r#"Mount(MountFilesystem(Other("object or filesystem doesn't exist")))"#, ErrorKind::NotFound)]
    #[case::no_route(404, "NoRoute", ErrorKind::NotFound)]
    #[case::bad_request(400, "BadRequest", ErrorKind::Daemon)]
    #[case::unexpected_event(400, r#"Configure(DaemonAbnormal(UnexpectedEvent("Start")))"#, ErrorKind::Daemon)]
    fn daemon_errors_are_classified_from_nydusd_messages(
        #[case] status: u16,
        #[case] message: &str,
        #[case] kind: ErrorKind,
    ) {
        assert_eq!(daemon_error(status, message).kind(), kind);
    }

    #[test]
    fn daemon_error_text_matches_the_go_client_format() {
        let err = daemon_error(400, "BadRequest");
        assert_eq!(
            err.to_string(),
            "POST /api/v1/mount?mountpoint=/a: http response: 400, error code: UNDEFINED, error message: BadRequest"
        );
    }

    #[tokio::test]
    async fn connecting_to_a_missing_socket_is_a_connection_error() {
        let dir = tempfile::tempdir().unwrap();
        let client = NydusdClient::new(dir.path().join("absent.sock"));
        let err = client.get_daemon_info().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    }

    #[tokio::test]
    async fn a_listener_that_never_answers_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("mute.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let client = NydusdClient::new(&sock).with_timeout(Duration::from_millis(100));
        let err = client.start().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        drop(accept.await);
    }

    /// Serves one connection with `head` and then `body_len` bytes of `x`, written in
    /// pieces, and returns how many body bytes the peer let it write.
    async fn serve_large(sock: &Path, head: String, body_len: usize) -> tokio::task::JoinHandle<usize> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::UnixListener::bind(sock).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            if stream.write_all(head.as_bytes()).await.is_err() {
                return 0;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut written = 0;
            while written < body_len {
                match stream.write_all(&chunk).await {
                    Ok(()) => written += chunk.len(),
                    Err(_) => break,
                }
            }
            written
        })
    }

    #[tokio::test]
    async fn a_reply_announced_larger_than_the_cap_is_refused_before_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("big.sock");
        let len = 40 * 1024 * 1024;
        let server = serve_large(&sock, format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n"), len).await;
        let client = NydusdClient::new(&sock).with_reply_limit(1024 * 1024);
        let err = client.get_daemon_info().await.unwrap_err();
        match &err {
            ClientError::ReplyTooLarge { size, limit, .. } => {
                assert_eq!((*size, *limit), (Some(len as u64), 1024 * 1024))
            }
            other => panic!("expected ReplyTooLarge, got {other}"),
        }
        assert_eq!(err.kind(), ErrorKind::Decode);
        assert!(err.to_string().contains("41943040 bytes exceeds the 1048576-byte cap"), "{err}");
        drop(client);
        // Before the fix all 40 MB were read (and buffered) before decoding.
        assert!(server.await.unwrap() < len, "the body was not read to its end");
    }

    #[tokio::test]
    async fn a_chunked_reply_past_the_cap_stops_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("chunked.sock");
        // Close-delimited: no length announced, so only the cap ends the read.
        let len = 8 * 1024 * 1024;
        let _server = serve_large(&sock, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".into(), len).await;
        let client = NydusdClient::new(&sock).with_reply_limit(256 * 1024);
        let err = client.get_daemon_info().await.unwrap_err();
        assert!(matches!(err, ClientError::ReplyTooLarge { size: None, limit: 262144, .. }), "{err}");
    }

    #[test]
    fn errors_quote_a_bounded_prefix_of_a_body() {
        let body = vec![b'y'; 1_000_000];
        let err = interpret_reply(
            Method::GET,
            "/api/v1/daemon",
            RawResponse { status: StatusCode::BAD_GATEWAY, body: body.into() },
        )
        .unwrap_err();
        let ClientError::Daemon { raw_body, .. } = &err else { panic!("{err}") };
        assert!(raw_body.len() < QUOTED_BODY_LIMIT + 100, "{} bytes quoted", raw_body.len());
        assert!(raw_body.ends_with("(1000000 bytes in all)"), "{raw_body}");
        let err = decode::<DaemonInfo>("/api/v1/daemon", &vec![b'z'; 1_000_000]).unwrap_err();
        assert!(err.to_string().len() < QUOTED_BODY_LIMIT + 400, "{} bytes in the message", err.to_string().len());
    }
}
