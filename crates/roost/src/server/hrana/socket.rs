//! The WebSocket upgrade of Hrana sockets, and the byte meter under each socket.
//!
//! The upgrade is done here rather than by axum's extractor so that the socket's reader can be
//! wrapped: tungstenite buffers a whole frame (up to the message limit) before it hands over a
//! message, and keeps that buffer's allocation for the socket's life. Without a meter those
//! bytes would sit outside every pool (the socket limit times the message limit: gigabytes).
//!
//! Invariants:
//! - every socket holds a fixed charge for its read buffer from the upgrade on ([`READ_BUFFER_BYTES`]);
//! - every byte read from the network is charged to the socket's account before tungstenite
//!   sees it; the account grows to the most bytes read between two messages and stays there
//!   (tungstenite reuses, and keeps, the frame buffer it grew), until the socket ends;
//! - a byte that cannot be charged ends the read with an error; [`Meter::refused`] says why,
//!   so the session can close the socket with the right code instead of buffering it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::host::{BufferError, RequestMemory};

/// How much tungstenite reads from the network at once, and so the buffer every socket keeps
/// (its default is 128 KiB; Hrana messages are mostly small).
pub(super) const READ_BUFFER_BYTES: usize = 8 << 10;

/// An accepted Hrana socket.
pub(super) type Socket = WebSocketStream<MeteredIo>;

/// A request to upgrade to a WebSocket, checked as RFC 6455 section 4.2.1 asks.
pub(super) struct Upgrade {
    key: HeaderValue,
    offered: Vec<String>,
    on_upgrade: OnUpgrade,
}

impl Upgrade {
    /// The upgrade `request` asks for, or why it is not one.
    pub(super) fn from_request(request: &mut Request) -> Result<Self, &'static str> {
        let headers = request.headers();
        if request.method() != Method::GET {
            return Err("a WebSocket upgrade is a GET");
        }
        if !has_token(headers, header::CONNECTION, "upgrade")
            || !has_token(headers, header::UPGRADE, "websocket")
        {
            return Err("missing `Connection: upgrade` and `Upgrade: websocket`");
        }
        if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
            return Err("only WebSocket version 13 is served");
        }
        let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or("missing Sec-WebSocket-Key")?.clone();
        let offered = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        let on_upgrade =
            request.extensions_mut().remove::<OnUpgrade>().ok_or("this connection cannot be upgraded")?;
        Ok(Self { key, offered, on_upgrade })
    }

    /// The subprotocols the client offered, in its order.
    pub(super) fn offered(&self) -> &[String] {
        &self.offered
    }

    /// Answers `101 Switching Protocols` with `protocol`, and runs `session` on the socket once
    /// the client has it. `account` pays for the socket's buffers (see the module invariants).
    pub(super) fn accept<F, Fut>(
        self,
        protocol: Option<&'static str>,
        message_bytes_max: usize,
        account: RequestMemory,
        session: F,
    ) -> Result<Response, BufferError>
    where
        F: FnOnce(Socket, Arc<Meter>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        account.charge(READ_BUFFER_BYTES as u64)?;
        let meter = Arc::new(Meter { account, state: Mutex::new(MeterState::default()) });
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            // Every reply is written and flushed on its own (its bytes are charged to its
            // request until then), so no buffer gathers frames.
            .write_buffer_size(0)
            .max_message_size(Some(message_bytes_max))
            .max_frame_size(Some(message_bytes_max));
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            // A client that left before the switch leaves nothing to serve.
            let Ok(upgraded) = on_upgrade.await else { return };
            let io = MeteredIo { inner: TokioIo::new(upgraded), meter: meter.clone() };
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
            session(socket, meter).await;
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let accept = derive_accept_key(self.key.as_bytes());
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("base64 is a header value"),
        );
        if let Some(protocol) = protocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
        }
        Ok(response)
    }
}

/// Whether the comma-separated header `name` holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The bytes a socket's reader holds, charged to the socket's account.
pub(super) struct Meter {
    account: RequestMemory,
    state: Mutex<MeterState>,
}

#[derive(Default)]
struct MeterState {
    /// Bytes read since the last whole message was handed over.
    unread_bytes: u64,
    /// The most `unread_bytes` ever reached, which the account holds (beyond the read buffer).
    charged_bytes: u64,
    /// Why a read was refused.
    refused: Option<BufferError>,
}

impl Meter {
    /// `bytes` came from the network.
    fn arrived(&self, bytes: u64) -> Result<(), BufferError> {
        let mut state = self.state.lock().expect("meter lock");
        state.unread_bytes += bytes;
        if state.unread_bytes > state.charged_bytes {
            let more = state.unread_bytes - state.charged_bytes;
            if let Err(error) = self.account.charge(more) {
                state.refused = Some(error);
                return Err(error);
            }
            state.charged_bytes = state.unread_bytes;
        }
        Ok(())
    }

    /// A whole message was handed over: the bytes read so far are that message's.
    pub(super) fn message_read(&self) {
        self.state.lock().expect("meter lock").unread_bytes = 0;
    }

    /// Why the last read failed, when the meter refused it.
    pub(super) fn refused(&self) -> Option<BufferError> {
        self.state.lock().expect("meter lock").refused
    }

    /// Bytes the socket holds in the pool now.
    #[cfg(test)]
    fn charged(&self) -> u64 {
        self.account.reserved_bytes()
    }
}

/// The upgraded connection, with every byte read charged to the [`Meter`].
pub(super) struct MeteredIo {
    inner: TokioIo<Upgraded>,
    meter: Arc<Meter>,
}

impl AsyncRead for MeteredIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let bytes = (buf.filled().len() - before) as u64;
            if let Err(error) = self.meter.arrived(bytes) {
                return Poll::Ready(Err(io::Error::other(error)));
            }
        }
        polled
    }
}

impl AsyncWrite for MeteredIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::RequestBuffers;

    fn meter(pool_bytes: u64) -> (Arc<RequestBuffers>, Meter) {
        let pool = RequestBuffers::new(pool_bytes, pool_bytes, 100);
        let meter = meter_in(&pool);
        (pool, meter)
    }

    fn meter_in(pool: &Arc<RequestBuffers>) -> Meter {
        Meter { account: pool.memory(), state: Mutex::new(MeterState::default()) }
    }

    #[test]
    fn the_charge_follows_the_most_bytes_between_two_messages() {
        let (_pool, meter) = meter(1 << 20);
        meter.arrived(1000).unwrap();
        meter.arrived(500).unwrap();
        assert_eq!(meter.charged(), 1500);
        meter.message_read();
        meter.arrived(700).unwrap();
        assert_eq!(meter.charged(), 1500, "the frame buffer tungstenite grew is kept, and so is its charge");
        meter.arrived(1300).unwrap();
        assert_eq!(meter.charged(), 2000);
    }

    #[test]
    fn refused_bytes_say_whether_waiting_helps() {
        let (pool, first) = meter(4096);
        first.arrived(3000).unwrap();
        let second = meter_in(&pool);
        second.arrived(1000).unwrap();
        assert!(second.arrived(200).is_err());
        assert_eq!(
            second.refused(),
            Some(BufferError::Full { retry_after_ms: 100 }),
            "another socket holds the pool"
        );
        assert_eq!(second.charged(), 1000, "a refused read charges nothing");
        assert!(first.arrived(1200).is_err());
        assert_eq!(
            first.refused(),
            Some(BufferError::TooLarge { bytes_max: 4096 }),
            "it alone would outgrow the pool"
        );
    }

    #[test]
    fn dropping_the_socket_gives_everything_back() {
        let (pool, meter) = meter(1 << 20);
        meter.arrived(64 << 10).unwrap();
        assert_eq!(pool.stats().bytes_used, 64 << 10);
        drop(meter);
        assert_eq!(pool.stats().bytes_used, 0);
    }
}
