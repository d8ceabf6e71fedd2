//! Hrana over WebSocket (HRANA_3_SPEC.md, "Hrana over WebSocket"), subprotocols `hrana1`,
//! `hrana2` and `hrana3` (JSON text messages) and `hrana3-protobuf` (the same as `hrana3` in
//! binary protobuf messages, [`super::protobuf`]), answering as sqld does: it prefers
//! `hrana3-protobuf` when a client offers it.
//!
//! One socket is one session on one actor: `hello` authorizes it (the JWT is the bearer token),
//! then `request` messages open streams and run statements on them. Each stream is a task owning
//! a [`Stream`] (the same as Hrana over HTTP: it pins the actor while a transaction is open), so
//! the requests of one stream run in order and different streams run side by side; replies go
//! back through one channel to the socket task, which alone writes to the socket.
//!
//! Invariants:
//! - the bytes of a message are charged to the socket's account as they arrive
//!   ([`super::socket`]), before tungstenite buffers them;
//! - every request message is charged to a fresh [`RequestMemory`] (its text and what parsing
//!   may allocate) before it is parsed; the account travels with the request and its reply until
//!   the reply has been written, so answers stay inside the request pool as over HTTP;
//! - SQL texts stored with `store_sql` belong to the session (as in sqld) and are charged to the
//!   session's account until closed; a statement naming one gets a copy, charged to its request;
//! - protocol errors close the socket with a close frame (1007 for a message that does not
//!   parse, 1003 for a binary message on a JSON socket or a text one on a protobuf socket, 1008
//!   otherwise) whose reason says why; statement errors are `response_error` and the stream
//!   goes on; a host failure (`overloaded`, `timeout`...) is a `response_error` with Roost's
//!   code and breaks that stream only (its transaction is rolled back; later requests on it get
//!   `STREAM_BROKEN`);
//! - a socket is closed when it sends no request for `hrana_ws_idle_ms` while no request is
//!   pending (`hrana_stream_idle_ms` while one of its streams holds a transaction), when a ping
//!   stays unanswered for `hrana_ws_ping_ms`, and when the server drains; closing it drops its
//!   streams, which roll back and release their actors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::super::body::{buffer_error, encode, parse_bytes_bound};
use super::super::error::ApiError;
use super::super::{Phase, ServerConfig};
use super::exec::{self, Ctx, Encoding};
use super::proto::{self, Batch, HError, Reply, Stmt, StreamRequest};
use super::protobuf::{self as pb, WsRequest as PbRequest};
use super::socket::{Meter, Socket, Upgrade};
use super::stream::{stored_sql_bytes, Stream};
use super::Hrana;
use crate::actor_id::ActorId;
use crate::host::{BufferError, RequestMemory};

/// Subprotocols served, most preferred first (sqld's order).
const PROTOCOLS: [&str; 4] = ["hrana3-protobuf", "hrana3", "hrana2", "hrana1"];

/// The version and encoding of a subprotocol served.
fn protocol(name: &str) -> (u8, Encoding) {
    match name {
        "hrana3-protobuf" => (3, Encoding::Protobuf),
        "hrana3" => (3, Encoding::Json),
        "hrana2" => (2, Encoding::Json),
        _ => (1, Encoding::Json),
    }
}

/// Requests queued on one stream before the socket stops reading (backpressure).
const STREAM_QUEUE: usize = 16;

/// Close codes (RFC 6455).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_UNSUPPORTED: u16 = 1003;
const CLOSE_INVALID: u16 = 1007;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMsg {
    Hello {
        #[serde(default)]
        jwt: Option<String>,
    },
    Request {
        request_id: i32,
        request: WsRequest,
    },
}

/// Only the request id of a message, for refusing a request that could not be charged.
#[derive(Deserialize)]
struct RequestIdOnly {
    #[serde(default)]
    request_id: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WsRequest {
    OpenStream {
        stream_id: i32,
    },
    CloseStream {
        stream_id: i32,
    },
    Execute {
        stream_id: i32,
        stmt: Stmt,
    },
    Batch {
        stream_id: i32,
        batch: Batch,
    },
    Sequence {
        stream_id: i32,
        #[serde(default)]
        sql: Option<String>,
        #[serde(default)]
        sql_id: Option<i32>,
    },
    Describe {
        stream_id: i32,
        #[serde(default)]
        sql: Option<String>,
        #[serde(default)]
        sql_id: Option<i32>,
    },
    StoreSql {
        sql_id: i32,
        sql: String,
    },
    CloseSql {
        sql_id: i32,
    },
    GetAutocommit {
        stream_id: i32,
    },
    OpenCursor {
        stream_id: i32,
        cursor_id: i32,
        batch: Batch,
    },
    CloseCursor {
        cursor_id: i32,
    },
    FetchCursor {
        cursor_id: i32,
        max_count: u32,
    },
}

/// Why a socket is closed by the server.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
struct Closing {
    code: u16,
    reason: String,
}

impl Closing {
    fn protocol(reason: impl Into<String>) -> Self {
        Self { code: CLOSE_POLICY, reason: reason.into() }
    }
}

impl Closing {
    /// Why the socket could not read on. When the meter refused the bytes, the socket had no
    /// room in the request pool: the reason says whether waiting can help.
    fn unreadable(error: WsError, meter: &Meter) -> Self {
        let (code, reason) = match (meter.refused(), error) {
            (Some(BufferError::Full { retry_after_ms }), _) => (
                CLOSE_TRY_AGAIN_LATER,
                format!(
                    "overloaded: request memory is in use by other requests; retry after {retry_after_ms} ms"
                ),
            ),
            (Some(BufferError::TooLarge { bytes_max }), _) => {
                (CLOSE_TOO_BIG, format!("message needs more than the {bytes_max}-byte request memory"))
            }
            (None, WsError::Capacity(error)) => (CLOSE_TOO_BIG, format!("cannot read a message: {error}")),
            (None, WsError::Utf8(error)) => (CLOSE_INVALID, format!("cannot read a message: {error}")),
            (None, error) => (CLOSE_PROTOCOL, format!("cannot read a message: {error}")),
        };
        Self { code, reason }
    }
}

/// A socket's timers: when it was last heard from, when it last sent or was answered a request,
/// and the ping it has not answered yet.
struct Clock {
    ping_every: Duration,
    idle: Duration,
    idle_in_transaction: Duration,
    last_heard: Instant,
    last_request: Instant,
    ping_sent: Option<Instant>,
}

impl Clock {
    fn new(config: &ServerConfig) -> Self {
        let now = Instant::now();
        Self {
            ping_every: Duration::from_millis(config.hrana_ws_ping_ms.max(1)),
            idle: Duration::from_millis(config.hrana_ws_idle_ms),
            idle_in_transaction: Duration::from_millis(config.hrana_stream_idle_ms),
            last_heard: now,
            last_request: now,
            ping_sent: None,
        }
    }

    /// Checks often enough for the shortest timer, at most every second.
    fn tick_period(&self) -> Duration {
        (self.ping_every / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// Any frame answers a ping; a data message is a request.
    fn heard(&mut self, request: bool) {
        self.last_heard = Instant::now();
        self.ping_sent = None;
        if request {
            self.last_request = self.last_heard;
        }
    }

    fn answered(&mut self) {
        self.last_request = Instant::now();
    }
}

/// A message for the socket task to write (text or binary as the session's encoding says).
struct Outgoing {
    bytes: Vec<u8>,
    /// The request's account, held until the message is written.
    _memory: Option<RequestMemory>,
    /// The reply ends a request (the socket counts pending requests).
    answers: bool,
    /// Close the socket after this message (or instead of it, when `bytes` is empty).
    close: Option<Closing>,
}

/// Work for a stream's task.
enum Job {
    Request { request_id: i32, request: StreamRequest, memory: RequestMemory },
    OpenCursor { request_id: i32, batch: Batch, memory: RequestMemory },
    FetchCursor { request_id: i32, max_count: u32, memory: RequestMemory },
    CloseCursor { request_id: i32 },
    Close { request_id: i32 },
}

struct StreamHandle {
    jobs: mpsc::Sender<Job>,
    in_transaction: Arc<AtomicBool>,
    cursor: Option<i32>,
}

/// Upgrades `GET /db/{id}` (or `GET /` with `x-namespace`) to a Hrana socket on `actor`.
pub(super) fn upgrade(hrana: Hrana, actor: ActorId, headers: &HeaderMap, upgrade: Upgrade) -> Response {
    // The server's order decides among the offered subprotocols (sqld's behaviour).
    let chosen = PROTOCOLS.into_iter().find(|p| upgrade.offered().iter().any(|o| o == p));
    // A client that names no subprotocol speaks Hrana 1 (as sqld assumes).
    let (version, encoding) = match chosen {
        Some(name) => protocol(name),
        None if upgrade.offered().is_empty() => (1, Encoding::Json),
        None => {
            return ApiError::bad_request(format!(
                "no supported WebSocket subprotocol; this server speaks {}",
                PROTOCOLS.join(", ")
            ))
            .into_response()
        }
    };
    let config = hrana.app.config();
    let Ok(permit) = hrana.sockets.clone().try_acquire_owned() else {
        return ApiError::overloaded("too many Hrana WebSocket connections are open", config.retry_after_ms)
            .into_response();
    };
    let bytes_max = config.body_bytes_max;
    let bearer = headers.get(header::AUTHORIZATION).cloned();
    let account = hrana.app.host().request_memory();
    let session = move |socket, meter| async move {
        Session::new(hrana, actor, (version, encoding), bearer, permit).run(socket, meter).await;
    };
    match upgrade.accept(chosen, bytes_max, account, session) {
        Ok(response) => response,
        Err(error) => buffer_error(error, "opening a Hrana socket").into_response(),
    }
}

/// One socket's state, owned by its task.
struct Session {
    hrana: Hrana,
    actor: ActorId,
    ctx: Ctx,
    bearer: Option<HeaderValue>,
    authorized: bool,
    streams: HashMap<i32, StreamHandle>,
    /// Stored SQL texts and their account.
    sqls: HashMap<i32, String>,
    sqls_memory: RequestMemory,
    /// Cursor id -> stream id.
    cursors: HashMap<i32, i32>,
    replies: mpsc::UnboundedSender<Outgoing>,
    replies_rx: mpsc::UnboundedReceiver<Outgoing>,
    /// Requests received and not answered yet.
    pending: usize,
    _permit: OwnedSemaphorePermit,
}

impl Session {
    fn new(
        hrana: Hrana,
        actor: ActorId,
        (version, encoding): (u8, Encoding),
        bearer: Option<HeaderValue>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let (replies, replies_rx) = mpsc::unbounded_channel();
        let sqls_memory = hrana.app.host().request_memory();
        Self {
            ctx: hrana.ctx(version, encoding),
            hrana,
            actor,
            bearer,
            authorized: false,
            streams: HashMap::new(),
            sqls: HashMap::new(),
            sqls_memory,
            cursors: HashMap::new(),
            replies,
            replies_rx,
            pending: 0,
            _permit: permit,
        }
    }

    async fn run(mut self, mut socket: Socket, meter: Arc<Meter>) {
        let mut clock = Clock::new(self.hrana.app.config());
        let mut tick = tokio::time::interval(clock.tick_period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let closing = loop {
            tokio::select! {
                message = socket.next() => {
                    let message = match message {
                        None => break None,
                        Some(Ok(message)) => message,
                        Some(Err(error)) => break Some(Closing::unreadable(error, &meter)),
                    };
                    meter.message_read();
                    clock.heard(matches!(message, Message::Text(_) | Message::Binary(_)));
                    match self.on_message(message) {
                        Ok(true) => {}
                        Ok(false) => break Some(Closing { code: CLOSE_NORMAL, reason: String::new() }),
                        Err(closing) => break Some(closing),
                    }
                }
                Some(out) = self.replies_rx.recv() => {
                    if out.answers {
                        self.pending -= 1;
                        clock.answered();
                    }
                    let encoding = self.ctx.encoding;
                    if !out.bytes.is_empty() && send_out(&mut socket, out.bytes, encoding).await.is_err() {
                        break None;
                    }
                    if let Some(closing) = out.close {
                        break Some(closing);
                    }
                }
                _ = tick.tick() => match self.on_tick(&mut clock) {
                    Ok(false) => {}
                    Ok(true) => {
                        if socket.send(Message::Ping(Default::default())).await.is_err() {
                            break None;
                        }
                    }
                    Err(closing) => break Some(closing),
                }
            }
        };
        if let Some(closing) = closing {
            if closing.code != CLOSE_NORMAL {
                let (code, reason) = (closing.code, &closing.reason);
                tracing::debug!(actor = %self.actor, code, %reason, "closing a Hrana socket");
            }
            let frame = CloseFrame {
                code: CloseCode::from(closing.code),
                reason: Utf8Bytes::from(truncated(closing.reason)),
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
        }
        // Dropping the handles ends the stream tasks, which roll back and release their actors.
    }

    /// The periodic checks: `Ok(true)` to send a ping, `Err` to close the socket.
    fn on_tick(&self, clock: &mut Clock) -> Result<bool, Closing> {
        if matches!(self.hrana.app.lifecycle().phase(), Phase::Draining | Phase::Failed) {
            return Err(Closing { code: CLOSE_GOING_AWAY, reason: "the server is shutting down".into() });
        }
        let now = Instant::now();
        let limit = if self.in_transaction() { clock.idle_in_transaction } else { clock.idle };
        if self.pending == 0 && now - clock.last_request >= limit {
            return Err(Closing { code: CLOSE_NORMAL, reason: format!("idle for {} ms", limit.as_millis()) });
        }
        match clock.ping_sent {
            Some(sent) if now - sent >= clock.ping_every => {
                let reason = format!("ping unanswered for {} ms", clock.ping_every.as_millis());
                Err(Closing { code: CLOSE_POLICY, reason })
            }
            None if now - clock.last_heard >= clock.ping_every => {
                clock.ping_sent = Some(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn in_transaction(&self) -> bool {
        self.streams.values().any(|s| s.in_transaction.load(Ordering::Acquire))
    }

    /// Handles one message; `Ok(false)` ends the session normally.
    fn on_message(&mut self, message: Message) -> Result<bool, Closing> {
        let bytes = match (message, self.ctx.encoding) {
            (Message::Text(text), Encoding::Json) => text.into(),
            (Message::Binary(bytes), Encoding::Protobuf) => bytes,
            (Message::Text(_) | Message::Binary(_), encoding) => {
                let reason = match encoding {
                    Encoding::Json => "binary messages need the hrana3-protobuf subprotocol",
                    Encoding::Protobuf => "text messages need a JSON subprotocol (hrana1..hrana3)",
                };
                return Err(Closing { code: CLOSE_UNSUPPORTED, reason: reason.into() });
            }
            (Message::Close(_), _) => return Ok(false),
            // Pongs to client pings are sent by the socket itself; raw frames are not handed
            // out when reading.
            (Message::Ping(_) | Message::Pong(_) | Message::Frame(_), _) => return Ok(true),
        };
        let memory = self.hrana.app.host().request_memory();
        if let Err(error) = memory.charge(self.decode_bound(&bytes)) {
            let Some(request_id) = request_id_only(&bytes, self.ctx.encoding) else {
                return Err(Closing::protocol("request memory is busy; cannot read a message"));
            };
            let error = buffer_error(error, "reading a Hrana message");
            self.pending += 1;
            self.reply(request_id, "", Err(api_hrana_error(&error)), None);
            return Ok(true);
        }
        let message = match self.ctx.encoding {
            Encoding::Json => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
            Encoding::Protobuf => pb::decode::<pb::ClientMsg>(&bytes)
                .map_err(|e| e.message)
                .and_then(|m| from_protobuf(m).map_err(|e| e.message)),
        };
        let message =
            message.map_err(|e| Closing { code: CLOSE_INVALID, reason: format!("invalid message: {e}") })?;
        match message {
            ClientMsg::Hello { jwt } => self.hello(jwt),
            ClientMsg::Request { request_id, request } => {
                if !self.authorized {
                    return Err(Closing::protocol("a request came before a successful hello"));
                }
                self.pending += 1;
                self.request(request_id, request, memory)?;
                Ok(true)
            }
        }
    }

    /// What decoding a message may take, beyond the message.
    fn decode_bound(&self, bytes: &[u8]) -> u64 {
        match self.ctx.encoding {
            Encoding::Json => parse_bytes_bound(bytes),
            Encoding::Protobuf => pb::parse_bytes_bound(bytes),
        }
    }

    fn hello(&mut self, jwt: Option<String>) -> Result<bool, Closing> {
        if self.authorized && self.ctx.version < 2 {
            return Err(Closing::protocol("a repeated hello needs hrana2"));
        }
        let mut headers = HeaderMap::new();
        let bearer = match jwt {
            Some(jwt) => HeaderValue::from_str(&format!("Bearer {jwt}")).ok(),
            None => self.bearer.clone(),
        };
        if let Some(value) = bearer {
            headers.insert(header::AUTHORIZATION, value);
        }
        match self.hrana.app.auth().check_actor(&headers, &self.actor) {
            Ok(()) => {
                self.authorized = true;
                self.send(match self.ctx.encoding {
                    Encoding::Json => encode(&json!({"type": "hello_ok"})),
                    Encoding::Protobuf => pb::hello_ok(),
                });
                Ok(true)
            }
            Err(error) => {
                let error = HError::new("AUTH_JWT_INVALID", error.message);
                self.send(match self.ctx.encoding {
                    Encoding::Json => encode(&json!({"type": "hello_error", "error": error.json()})),
                    Encoding::Protobuf => pb::hello_error(&error),
                });
                // sqld ends the session after a failed hello.
                let _ = self.replies.send(Outgoing {
                    bytes: Vec::new(),
                    _memory: None,
                    answers: false,
                    close: Some(Closing { code: CLOSE_NORMAL, reason: "authentication failed".into() }),
                });
                Ok(true)
            }
        }
    }

    fn needs(&self, version: u8, what: &str) -> Result<(), Closing> {
        if self.ctx.version < version {
            return Err(Closing::protocol(format!("{what} needs hrana{version}")));
        }
        Ok(())
    }

    fn request(&mut self, request_id: i32, request: WsRequest, memory: RequestMemory) -> Result<(), Closing> {
        use WsRequest as R;
        match request {
            R::OpenStream { stream_id } => self.open_stream(request_id, stream_id),
            R::CloseStream { stream_id } => {
                let stream = self.streams.remove(&stream_id).ok_or_else(|| no_stream(stream_id))?;
                if let Some(cursor) = stream.cursor {
                    self.cursors.remove(&cursor);
                }
                self.queue(&stream, Job::Close { request_id })
            }
            R::Execute { stream_id, mut stmt } => {
                self.inline_stmt(&mut stmt, &memory)?;
                self.to_stream(stream_id, request_id, StreamRequest::Execute { stmt }, memory)
            }
            R::Batch { stream_id, mut batch } => {
                self.inline_batch(&mut batch, &memory)?;
                self.to_stream(stream_id, request_id, StreamRequest::Batch { batch }, memory)
            }
            R::Sequence { stream_id, mut sql, mut sql_id } => {
                self.needs(2, "`sequence`")?;
                self.inline(&mut sql, &mut sql_id, &memory)?;
                self.to_stream(stream_id, request_id, StreamRequest::Sequence { sql, sql_id }, memory)
            }
            R::Describe { stream_id, mut sql, mut sql_id } => {
                self.needs(2, "`describe`")?;
                self.inline(&mut sql, &mut sql_id, &memory)?;
                self.to_stream(stream_id, request_id, StreamRequest::Describe { sql, sql_id }, memory)
            }
            R::StoreSql { sql_id, sql } => {
                self.needs(2, "`store_sql`")?;
                self.store_sql(request_id, sql_id, sql)
            }
            R::CloseSql { sql_id } => {
                self.needs(2, "`close_sql`")?;
                if let Some(sql) = self.sqls.remove(&sql_id) {
                    self.sqls_memory.release(stored_sql_bytes(&sql));
                }
                self.respond(request_id, "close_sql", None);
                Ok(())
            }
            R::GetAutocommit { stream_id } => {
                self.needs(3, "`get_autocommit`")?;
                self.to_stream(stream_id, request_id, StreamRequest::GetAutocommit {}, memory)
            }
            R::OpenCursor { stream_id, cursor_id, mut batch } => {
                self.needs(3, "`open_cursor`")?;
                self.inline_batch(&mut batch, &memory)?;
                self.open_cursor(request_id, stream_id, cursor_id, batch, memory)
            }
            R::CloseCursor { cursor_id } => {
                self.needs(3, "`close_cursor`")?;
                let stream_id = self.cursors.remove(&cursor_id).ok_or_else(|| no_cursor(cursor_id))?;
                let stream = self.streams.get_mut(&stream_id).ok_or_else(|| no_stream(stream_id))?;
                stream.cursor = None;
                let stream = &self.streams[&stream_id];
                self.queue(stream, Job::CloseCursor { request_id })
            }
            R::FetchCursor { cursor_id, max_count } => {
                self.needs(3, "`fetch_cursor`")?;
                let stream_id = *self.cursors.get(&cursor_id).ok_or_else(|| no_cursor(cursor_id))?;
                let stream = self.streams.get(&stream_id).ok_or_else(|| no_stream(stream_id))?;
                self.queue(stream, Job::FetchCursor { request_id, max_count, memory })
            }
        }
    }

    fn open_stream(&mut self, request_id: i32, stream_id: i32) -> Result<(), Closing> {
        if self.streams.contains_key(&stream_id) {
            return Err(Closing::protocol(format!("stream {stream_id} already exists")));
        }
        let stream = match self.hrana.streams.open(self.actor.clone(), self.hrana.app.host().clone()) {
            Ok(stream) => stream,
            Err(error) => {
                self.reply(request_id, "", Err(api_hrana_error(&error)), None);
                return Ok(());
            }
        };
        let (jobs, jobs_rx) = mpsc::channel(STREAM_QUEUE);
        let in_transaction = Arc::new(AtomicBool::new(false));
        let task = StreamTask {
            stream: Some(stream),
            ctx: self.ctx,
            replies: self.replies.clone(),
            in_transaction: in_transaction.clone(),
            cursor: None,
        };
        tokio::spawn(task.run(jobs_rx));
        self.streams.insert(stream_id, StreamHandle { jobs, in_transaction, cursor: None });
        self.respond(request_id, "open_stream", None);
        Ok(())
    }

    fn open_cursor(
        &mut self,
        request_id: i32,
        stream_id: i32,
        cursor_id: i32,
        batch: Batch,
        memory: RequestMemory,
    ) -> Result<(), Closing> {
        if self.cursors.contains_key(&cursor_id) {
            return Err(Closing::protocol(format!("cursor {cursor_id} already exists")));
        }
        let stream = self.streams.get_mut(&stream_id).ok_or_else(|| no_stream(stream_id))?;
        if stream.cursor.is_some() {
            return Err(Closing::protocol(format!("stream {stream_id} already has an open cursor")));
        }
        stream.cursor = Some(cursor_id);
        self.cursors.insert(cursor_id, stream_id);
        let stream = &self.streams[&stream_id];
        self.queue(stream, Job::OpenCursor { request_id, batch, memory })
    }

    fn store_sql(&mut self, request_id: i32, sql_id: i32, sql: String) -> Result<(), Closing> {
        if self.sqls.contains_key(&sql_id) {
            return Err(Closing::protocol(format!("SQL text {sql_id} is already stored")));
        }
        if let Some(error) = exec::store_refused(self.sqls.len(), &sql, &self.ctx) {
            self.reply(request_id, "", Err(error), None);
            return Ok(());
        }
        if let Err(error) = self.sqls_memory.charge(stored_sql_bytes(&sql)) {
            let error = buffer_error(error, "storing a SQL text");
            self.reply(request_id, "", Err(api_hrana_error(&error)), None);
            return Ok(());
        }
        self.sqls.insert(sql_id, sql);
        self.respond(request_id, "store_sql", None);
        Ok(())
    }

    /// Replaces a stored `sql_id` by a copy of its text, charged to the request.
    fn inline(
        &self,
        sql: &mut Option<String>,
        sql_id: &mut Option<i32>,
        memory: &RequestMemory,
    ) -> Result<(), Closing> {
        let Some(id) = *sql_id else { return Ok(()) };
        self.needs(2, "`sql_id`")?;
        if sql.is_some() {
            return Err(Closing::protocol("a statement has both `sql` and `sql_id`"));
        }
        let text =
            self.sqls.get(&id).ok_or_else(|| Closing::protocol(format!("SQL text {id} is not stored")))?;
        memory
            .charge(text.len() as u64)
            .map_err(|_| Closing::protocol("request memory is busy; cannot copy a stored SQL text"))?;
        *sql = Some(text.clone());
        *sql_id = None;
        Ok(())
    }

    fn inline_stmt(&self, stmt: &mut Stmt, memory: &RequestMemory) -> Result<(), Closing> {
        self.inline(&mut stmt.sql, &mut stmt.sql_id, memory)
    }

    fn inline_batch(&self, batch: &mut Batch, memory: &RequestMemory) -> Result<(), Closing> {
        batch.steps.iter_mut().try_for_each(|step| self.inline_stmt(&mut step.stmt, memory))
    }

    fn to_stream(
        &self,
        stream_id: i32,
        request_id: i32,
        request: StreamRequest,
        memory: RequestMemory,
    ) -> Result<(), Closing> {
        let stream = self.streams.get(&stream_id).ok_or_else(|| no_stream(stream_id))?;
        self.queue(stream, Job::Request { request_id, request, memory })
    }

    fn queue(&self, stream: &StreamHandle, job: Job) -> Result<(), Closing> {
        // A full queue means the client sends faster than the stream runs: refusing is a
        // protocol matter for this client, not a reason to block every other stream.
        stream.jobs.try_send(job).map_err(|_| {
            Closing::protocol(format!("more than {STREAM_QUEUE} requests are queued on one stream"))
        })
    }

    fn respond(&self, request_id: i32, kind: &str, memory: Option<RequestMemory>) {
        self.reply(request_id, kind, Ok(empty_response(kind, self.ctx.encoding)), memory);
    }

    /// Answers request `request_id` of `kind` (which only protobuf needs, and only for `Ok`).
    fn reply(&self, request_id: i32, kind: &str, reply: Reply, memory: Option<RequestMemory>) {
        let _ = self.replies.send(reply_message(self.ctx.encoding, request_id, kind, &reply, memory));
    }

    /// A message that answers no request (`hello_ok`, `hello_error`).
    fn send(&self, bytes: Vec<u8>) {
        let _ = self.replies.send(Outgoing { bytes, _memory: None, answers: false, close: None });
    }
}

fn no_stream(stream_id: i32) -> Closing {
    Closing::protocol(format!("stream {stream_id} does not exist"))
}

fn no_cursor(cursor_id: i32) -> Closing {
    Closing::protocol(format!("cursor {cursor_id} does not exist"))
}

/// A host failure as a Hrana error: Roost's code, as HTTP answers carry it.
fn api_hrana_error(error: &ApiError) -> HError {
    HError::new(error.code, error.message.clone())
}

/// The response of `kind` that carries nothing but its kind.
fn empty_response(kind: &str, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Json => encode(&json!({"type": kind})),
        // The envelope's field number says the kind; the message itself is empty.
        Encoding::Protobuf => Vec::new(),
    }
}

/// `response_ok` / `response_error` around a reply to a request of `kind`.
fn reply_message(
    encoding: Encoding,
    request_id: i32,
    kind: &str,
    reply: &Reply,
    memory: Option<RequestMemory>,
) -> Outgoing {
    let bytes = match (encoding, reply) {
        (Encoding::Protobuf, reply) => pb::ws_reply(request_id, kind, reply),
        (Encoding::Json, Ok(bytes)) => {
            proto::wrap(&json!({"type": "response_ok", "request_id": request_id}), "response", bytes)
        }
        (Encoding::Json, Err(error)) => {
            encode(&json!({"type": "response_error", "request_id": request_id, "error": error.json()}))
        }
    };
    Outgoing { bytes, _memory: memory, answers: true, close: None }
}

/// Sends a text message (JSON) or a binary one (protobuf).
async fn send_out(
    socket: &mut Socket,
    bytes: Vec<u8>,
    encoding: Encoding,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let message = match encoding {
        Encoding::Json => Message::Text(Utf8Bytes::from(String::from_utf8(bytes).expect("JSON is UTF-8"))),
        Encoding::Protobuf => Message::Binary(bytes.into()),
    };
    socket.send(message).await
}

/// A close reason fits in a control frame (125 bytes, 2 of them the code).
fn truncated(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    reason
}

/// A stream's task: runs its jobs in order.
struct StreamTask {
    /// `None` once a host failure broke the stream.
    stream: Option<Stream>,
    ctx: Ctx,
    replies: mpsc::UnboundedSender<Outgoing>,
    in_transaction: Arc<AtomicBool>,
    /// The open cursor's newline-delimited entries, how far they were fetched, and the
    /// account that holds them.
    cursor: Option<(Vec<u8>, usize, RequestMemory)>,
}

impl StreamTask {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.recv().await {
            // The socket is gone: nobody reads the answers.
            if self.replies.is_closed() {
                break;
            }
            let close = matches!(job, Job::Close { .. });
            let out = self.serve(job).await;
            let _ = self.replies.send(out);
            if let Some(stream) = self.stream.as_mut() {
                stream.release_outside_transaction();
            }
            let in_transaction = self.stream.as_ref().is_some_and(Stream::in_transaction);
            self.in_transaction.store(in_transaction, Ordering::Release);
            if close {
                break;
            }
        }
        if let Some(stream) = self.stream.take() {
            stream.close().await;
        }
    }

    async fn serve(&mut self, job: Job) -> Outgoing {
        let encoding = self.ctx.encoding;
        let ok = |request_id: i32, kind: &str| {
            reply_message(encoding, request_id, kind, &Ok(empty_response(kind, encoding)), None)
        };
        match job {
            Job::Close { request_id } => ok(request_id, "close_stream"),
            Job::CloseCursor { request_id } => {
                self.cursor = None;
                ok(request_id, "close_cursor")
            }
            Job::FetchCursor { request_id, max_count, memory } => self.fetch(request_id, max_count, memory),
            Job::OpenCursor { request_id, batch, memory } => {
                let Some(stream) = self.stream.as_mut() else { return broken(encoding, request_id) };
                match exec::cursor(stream, batch, &self.ctx, &memory).await {
                    Ok(entries) => {
                        self.cursor = Some((entries, 0, memory));
                        ok(request_id, "open_cursor")
                    }
                    Err(error) => self.failed(request_id, error).await,
                }
            }
            Job::Request { request_id, request, memory } => {
                let Some(stream) = self.stream.as_mut() else { return broken(encoding, request_id) };
                let kind = request.kind();
                match exec::handle(stream, request, &self.ctx, &memory).await {
                    Ok(reply) => reply_message(encoding, request_id, kind, &reply, Some(memory)),
                    Err(error) => self.failed(request_id, error).await,
                }
            }
        }
    }

    /// A request that failed outside SQL: a protocol error closes the socket; a host failure
    /// breaks this stream (rolled back) and is answered.
    async fn failed(&mut self, request_id: i32, error: ApiError) -> Outgoing {
        if let Some(stream) = self.stream.take() {
            stream.close().await;
        }
        if error.code == "bad_request" {
            return Outgoing {
                bytes: Vec::new(),
                _memory: None,
                answers: true,
                close: Some(Closing::protocol(error.message)),
            };
        }
        reply_message(self.ctx.encoding, request_id, "", &Err(api_hrana_error(&error)), None)
    }

    /// Up to `max_count` entries of the open cursor.
    fn fetch(&mut self, request_id: i32, max_count: u32, memory: RequestMemory) -> Outgoing {
        let encoding = self.ctx.encoding;
        let Some((entries, at, _)) = self.cursor.as_mut() else {
            let error = HError::new("CURSOR_CLOSED", "the cursor is not open");
            return reply_message(encoding, request_id, "", &Err(error), None);
        };
        let rest = &entries[*at..];
        let mut taken = 0usize;
        let mut end = 0usize;
        while taken < max_count as usize && end < rest.len() {
            end += entry_end(&rest[end..], encoding);
            taken += 1;
        }
        let chunk = &rest[..end];
        if let Err(error) = memory.charge(chunk.len() as u64 + 64) {
            let error = buffer_error(error, "fetching from a cursor");
            return reply_message(encoding, request_id, "", &Err(api_hrana_error(&error)), None);
        }
        let done = *at + end >= entries.len();
        let response = match encoding {
            Encoding::Json => fetch_json(chunk, done),
            Encoding::Protobuf => pb::fetch_cursor_body(chunk, done),
        };
        *at += end;
        reply_message(encoding, request_id, "fetch_cursor", &Ok(response), Some(memory))
    }
}

/// Where the first of a cursor's `entries` ends: after its newline (JSON), or after its length
/// prefix and message (protobuf).
fn entry_end(entries: &[u8], encoding: Encoding) -> usize {
    match encoding {
        Encoding::Json => entries.iter().position(|&b| b == b'\n').map_or(entries.len(), |p| p + 1),
        Encoding::Protobuf => pb::entry_end(entries),
    }
}

/// A `fetch_cursor` response from newline-delimited JSON entries.
fn fetch_json(chunk: &[u8], done: bool) -> Vec<u8> {
    let mut list = Vec::with_capacity(chunk.len() + 2);
    list.push(b'[');
    for (index, line) in chunk.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        if index > 0 {
            list.push(b',');
        }
        list.extend_from_slice(line);
    }
    list.push(b']');
    proto::wrap(&json!({"type": "fetch_cursor", "done": done}), "entries", &list)
}

fn broken(encoding: Encoding, request_id: i32) -> Outgoing {
    let error = HError::new(
        "STREAM_BROKEN",
        "the stream failed earlier (its transaction was rolled back); open a new one",
    );
    reply_message(encoding, request_id, "", &Err(error), None)
}

/// The request id of a message that could not be charged, read without decoding the rest.
fn request_id_only(bytes: &[u8], encoding: Encoding) -> Option<i32> {
    match encoding {
        Encoding::Json => serde_json::from_slice::<RequestIdOnly>(bytes).ok().and_then(|r| r.request_id),
        // Decoding skips the request's fields, which are unknown to these structures.
        Encoding::Protobuf => {
            pb::decode::<pb::RequestIdOnly>(bytes).ok().and_then(|m| m.request).map(|r| r.request_id)
        }
    }
}

/// A protobuf client message as the JSON one it means.
fn from_protobuf(message: pb::ClientMsg) -> Result<ClientMsg, ApiError> {
    let missing = || ApiError::bad_request("a message without a type");
    Ok(match message.kind.ok_or_else(missing)? {
        pb::ClientMsgKind::Hello(hello) => ClientMsg::Hello { jwt: hello.jwt },
        pb::ClientMsgKind::Request(pb::RequestMsg { request_id, request }) => {
            let request = request.ok_or_else(|| ApiError::bad_request("a request without a type"))?;
            ClientMsg::Request { request_id, request: ws_request(request)? }
        }
    })
}

fn ws_request(request: PbRequest) -> Result<WsRequest, ApiError> {
    use WsRequest as R;
    Ok(match request {
        PbRequest::OpenStream(r) => R::OpenStream { stream_id: r.stream_id },
        PbRequest::CloseStream(r) => R::CloseStream { stream_id: r.stream_id },
        PbRequest::Execute(r) => R::Execute { stream_id: r.stream_id, stmt: pb::stmt(r.stmt)? },
        PbRequest::Batch(r) => R::Batch { stream_id: r.stream_id, batch: pb::batch(r.batch)? },
        PbRequest::OpenCursor(r) => {
            R::OpenCursor { stream_id: r.stream_id, cursor_id: r.cursor_id, batch: pb::batch(r.batch)? }
        }
        PbRequest::CloseCursor(r) => R::CloseCursor { cursor_id: r.cursor_id },
        PbRequest::FetchCursor(r) => R::FetchCursor { cursor_id: r.cursor_id, max_count: r.max_count },
        PbRequest::Sequence(r) => R::Sequence { stream_id: r.stream_id, sql: r.sql, sql_id: r.sql_id },
        PbRequest::Describe(r) => R::Describe { stream_id: r.stream_id, sql: r.sql, sql_id: r.sql_id },
        PbRequest::StoreSql(r) => R::StoreSql { sql_id: r.sql_id, sql: r.sql },
        PbRequest::CloseSql(r) => R::CloseSql { sql_id: r.sql_id },
        PbRequest::GetAutocommit(r) => R::GetAutocommit { stream_id: r.stream_id },
    })
}

/// Decodes `bytes` as a client message, and the statements of a decoded request as the
/// handlers do; answers how many decoded (`server::fuzzing`).
pub(super) fn decode_for_fuzzing(bytes: &[u8], ctx: &exec::Ctx) -> usize {
    // A text message is UTF-8 (the WebSocket layer checks it).
    let Ok(text) = std::str::from_utf8(bytes) else { return 0 };
    let _ = serde_json::from_str::<RequestIdOnly>(text);
    let Ok(message) = serde_json::from_str::<ClientMsg>(text) else { return 0 };
    resolve_for_fuzzing(message, ctx);
    1
}

/// The same for a binary `hrana3-protobuf` message.
pub(super) fn decode_protobuf_for_fuzzing(bytes: &[u8], ctx: &exec::Ctx) -> usize {
    let _ = request_id_only(bytes, Encoding::Protobuf);
    let message = pb::decode::<pb::ClientMsg>(bytes).and_then(from_protobuf);
    let Ok(message) = message else { return 0 };
    resolve_for_fuzzing(message, ctx);
    1
}

fn resolve_for_fuzzing(message: ClientMsg, ctx: &exec::Ctx) {
    let request = match message {
        ClientMsg::Hello { .. } => return,
        ClientMsg::Request { request, .. } => request,
    };
    let request = match request {
        WsRequest::Execute { stmt, .. } => StreamRequest::Execute { stmt },
        WsRequest::Batch { batch, .. } | WsRequest::OpenCursor { batch, .. } => {
            StreamRequest::Batch { batch }
        }
        WsRequest::Sequence { sql, sql_id, .. } => StreamRequest::Sequence { sql, sql_id },
        WsRequest::Describe { sql, sql_id, .. } => StreamRequest::Describe { sql, sql_id },
        WsRequest::StoreSql { sql_id, sql } => StreamRequest::StoreSql { sql_id, sql },
        WsRequest::CloseSql { sql_id } => StreamRequest::CloseSql { sql_id },
        _ => return,
    };
    let _ = exec::resolve_for_fuzzing(&mut Default::default(), request, ctx);
}
