//! Forwarding: with several nodes, a request for an actor that another live node owns is sent
//! there in one hop, over kept-alive connections, and its answer streamed back.
//!
//! Invariants:
//! - one hop: a forwarded request carries [`FORWARDED_HEADER`] and is always served where it
//!   arrives (an owner that lost the actor meanwhile answers `moved`, which the client retries);
//! - an actor awake here is served here without asking anyone (this node's lease makes it the
//!   owner); one whose remote owner was seen lately is forwarded there; any other is opened
//!   here, which claims it in the same round trip that reads it, or finds its live owner;
//! - a request served here whose claim found another owner (a race with a takeover) is sent
//!   there once, if its body is still at hand (every buffered body is; imports stream);
//! - every answer says which node served it in [`NODE_HEADER`];
//! - a Hrana WebSocket for an actor another node owns is tunnelled there: the upgrade is
//!   forwarded, and once both sides switched protocols their bytes are copied both ways until
//!   either closes (at most `hrana_ws_sockets_max` tunnels; beyond it `overloaded`).

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::error::{ApiError, MovedTo};
use super::AppState;
use crate::actor_id::ActorId;
use crate::cluster::{Cluster, Route};
use crate::host::ActorState;
use crate::kv::NodeAddress;

/// Marks a request forwarded by another node (its value: that node's id).
pub const FORWARDED_HEADER: &str = "x-roost-forwarded";
/// Names the node that served a request.
pub const NODE_HEADER: &str = "x-roost-node";
/// Longest wait for a connection to another node.
const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// What one tunnelled WebSocket holds while it lives: `copy_bidirectional`'s two 8 KiB buffers
/// and the two upgraded connections' read buffers, rounded up.
const TUNNEL_BYTES: u64 = 48 << 10;
/// Kept-alive connections per other node.
const IDLE_CONNECTIONS_PER_NODE: usize = 32;

/// The client that forwards requests.
pub type ForwardClient = Client<HttpConnector, Body>;

pub fn client() -> ForwardClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(CONNECT_TIMEOUT_MS)));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(IDLE_CONNECTIONS_PER_NODE).build(connector)
}

/// The actor a request is for, when it is an actor request that may be forwarded.
fn actor_of(request: &Request) -> Option<ActorId> {
    let path = request.uri().path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let raw = match segments.as_slice() {
        ["v1", "actors", id, ..] => Some((*id).to_string()),
        ["db", id, _, ..] => Some((*id).to_string()),
        ["v2" | "v3" | "v3-protobuf", "pipeline" | "cursor"] | ["v1", "execute" | "batch"] => {
            request.headers().get("x-namespace").and_then(|v| v.to_str().ok()).map(str::to_string)
        }
        _ => None,
    }?;
    ActorId::new(&raw).ok()
}

fn is_upgrade(request: &Request) -> bool {
    request.headers().contains_key(header::UPGRADE)
}

/// Serves actor requests where their actor lives (see the module docs).
pub async fn route(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster().cloned() else { return next.run(request).await };
    let node = cluster.node_id().to_string();
    let forwarded = request.headers().contains_key(FORWARDED_HEADER);
    if is_upgrade(&request) {
        return upgrade(&state, &cluster, forwarded, request, next).await;
    }
    let actor = actor_of(&request);
    let Some(id) = actor else { return tagged(next.run(request).await, &node) };
    if !forwarded && state.host().state(&id) != ActorState::Awake {
        // A sleep does not open the actor, so it cannot find the owner by claiming: ask.
        let route = match request.uri().path().ends_with("/sleep") {
            true => lookup(&cluster, &id).await,
            false => Ok(cluster.known_route(&id)),
        };
        match route {
            Ok(Route::Forward(owner)) => {
                return forward_or_local(&state, &cluster, &id, owner, request, next).await;
            }
            Ok(Route::Local) => {}
            Err(e) => return e.into_response_for(request.uri().path()),
        }
    }
    serve_here(&state, &cluster, &id, forwarded, request, next).await
}

/// The actor of a WebSocket upgrade: `/db/{id}` or `/` with `x-namespace`.
fn socket_actor_of(request: &Request) -> Option<ActorId> {
    let path = request.uri().path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let raw = match segments.as_slice() {
        ["db", id] | ["db", id, ""] => Some((*id).to_string()),
        [""] => request.headers().get("x-namespace").and_then(|v| v.to_str().ok()).map(str::to_string),
        _ => None,
    }?;
    ActorId::new(&raw).ok()
}

/// A WebSocket upgrade: tunnelled to the owner when another live node owns the actor.
async fn upgrade(
    state: &AppState,
    cluster: &std::sync::Arc<Cluster>,
    forwarded: bool,
    request: Request,
    next: Next,
) -> Response {
    let node = cluster.node_id().to_string();
    let Some(id) = socket_actor_of(&request).filter(|_| !forwarded) else {
        return tagged(next.run(request).await, &node);
    };
    if state.host().state(&id) == ActorState::Awake {
        return tagged(next.run(request).await, &node);
    }
    match lookup(cluster, &id).await {
        Ok(Route::Forward(owner)) => tunnel(state, cluster, &id, &owner, request).await,
        Ok(Route::Local) => tagged(next.run(request).await, &node),
        Err(e) => e.into_response_for(request.uri().path()),
    }
}

/// Forwards the upgrade to `owner` and, once both sides switched, copies bytes both ways.
async fn tunnel(
    state: &AppState,
    cluster: &Cluster,
    id: &ActorId,
    owner: &NodeAddress,
    mut request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    let Ok(permit) = state.tunnels().clone().try_acquire_owned() else {
        let retry = state.config().retry_after_ms;
        return ApiError::overloaded("too many WebSockets tunnelled to other nodes", retry).into_response();
    };
    // The copy's buffers live as long as the tunnel: charged to the request pool until it ends.
    let memory = state.host().request_memory();
    if let Err(e) = memory.charge(TUNNEL_BYTES) {
        return super::body::buffer_error(e, "a WebSocket tunnel").into_response();
    }
    let from_client = hyper::upgrade::on(&mut request);
    let (mut parts, _) = request.into_parts();
    let Ok(uri) = owner_uri(owner, &parts.uri) else { return ApiError::moved(None).into_response_for(&path) };
    parts.uri = uri;
    parts.headers.remove(header::HOST);
    if let Ok(value) = HeaderValue::from_str(cluster.node_id()) {
        parts.headers.insert(HeaderName::from_static(FORWARDED_HEADER), value);
    }
    let timeout = Duration::from_millis(CONNECT_TIMEOUT_MS + cluster.config().lease_ms);
    let sent = tokio::time::timeout(
        timeout,
        state.forward_client().request(Request::from_parts(parts, Body::empty())),
    );
    let mut answer = match sent.await {
        Ok(Ok(answer)) => answer,
        _ => {
            cluster.forget(id);
            cluster.counters.forward_failures.fetch_add(1, Ordering::Relaxed);
            return ApiError::moved(None).into_response_for(&path);
        }
    };
    cluster.counters.forwarded.fetch_add(1, Ordering::Relaxed);
    if answer.status() != axum::http::StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = answer.into_parts();
        return Response::from_parts(parts, Body::new(body));
    }
    let from_owner = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        let (_permit, _memory) = (permit, memory);
        let (Ok(client), Ok(owner)) = tokio::join!(from_client, from_owner) else { return };
        let (mut client, mut owner) = (TokioIo::new(client), TokioIo::new(owner));
        let _ = tokio::io::copy_bidirectional(&mut client, &mut owner).await;
    });
    let (parts, _) = answer.into_parts();
    Response::from_parts(parts, Body::empty())
}

/// `uri`'s path and query on `owner`'s advertised URL.
fn owner_uri(owner: &NodeAddress, uri: &Uri) -> Result<Uri, ()> {
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{}{}", owner.url.trim_end_matches('/'), path_and_query).parse::<Uri>().map_err(|_| {
        tracing::warn!(node = %owner.node_id, url = %owner.url, "a node advertises an invalid URL");
    })
}

/// Serves here; forwards once if the claim found another owner and the body is at hand.
async fn serve_here(
    state: &AppState,
    cluster: &Cluster,
    id: &ActorId,
    forwarded: bool,
    request: Request,
    next: Next,
) -> Response {
    let node = cluster.node_id().to_string();
    if !cluster.serving() {
        let refusal = ApiError::lease_not_current();
        return tagged(refusal.into_response_for(request.uri().path()), &node);
    }
    let (parts, body) = request.into_parts();
    let (body, kept) = if forwarded || is_streamed(&parts) {
        (body, None)
    } else {
        let bytes = collect(body).await;
        (Body::from(bytes.clone()), Some(bytes))
    };
    let request = Request::from_parts(parts.clone(), body);
    let response = next.run(request).await;
    let Some(MovedTo(owner)) = response.extensions().get::<MovedTo>().cloned() else {
        return tagged(response, &node);
    };
    cluster.remember(id, owner.clone());
    match kept {
        Some(bytes) => {
            match send(state, cluster, &owner, Request::from_parts(parts, Body::from(bytes))).await {
                Ok(answer) => answer,
                Err(_) => {
                    cluster.forget(id);
                    tagged(response, &node)
                }
            }
        }
        None => tagged(response, &node),
    }
}

/// Imports stream their body to a spool: they are not kept for a second attempt.
fn is_streamed(parts: &axum::http::request::Parts) -> bool {
    parts.method == axum::http::Method::PUT && parts.uri.path().ends_with("/import")
}

async fn collect(body: Body) -> Bytes {
    // The body was read and charged by `buffer_body` already: this takes its one chunk.
    axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default()
}

/// Forwards to `owner`; if it cannot be reached, looks the owner up again and serves here
/// when no other live node owns the actor.
async fn forward_or_local(
    state: &AppState,
    cluster: &std::sync::Arc<Cluster>,
    id: &ActorId,
    owner: NodeAddress,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    let (parts, body) = request.into_parts();
    if is_streamed(&parts) {
        return match send(state, cluster, &owner, Request::from_parts(parts, body)).await {
            Ok(answer) => answer,
            Err(SendError::Unreachable) => {
                cluster.forget(id);
                ApiError::moved(None).into_response_for(&path)
            }
            Err(SendError::Lost) => {
                cluster.forget(id);
                ApiError::owner_silent().into_response_for(&path)
            }
        };
    }
    let bytes = collect(body).await;
    let attempt = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
    match send(state, cluster, &owner, attempt).await {
        Ok(answer) => return answer,
        Err(SendError::Lost) => {
            cluster.forget(id);
            return ApiError::owner_silent().into_response_for(&path);
        }
        Err(SendError::Unreachable) => cluster.forget(id),
    }
    // Nothing reached the owner: serve here if it is no longer the live owner.
    match lookup(cluster, id).await {
        Ok(Route::Local) => {
            serve_here(state, cluster, id, false, Request::from_parts(parts, Body::from(bytes)), next).await
        }
        Ok(Route::Forward(_)) => ApiError::moved(None).into_response_for(&path),
        Err(e) => e.into_response_for(&path),
    }
}

async fn lookup(cluster: &std::sync::Arc<Cluster>, id: &ActorId) -> Result<Route, ApiError> {
    let (cluster, id) = (cluster.clone(), id.clone());
    match tokio::task::spawn_blocking(move || cluster.route(&id)).await {
        Ok(Ok(route)) => Ok(route),
        Ok(Err(e)) => Err(ApiError::from(crate::vfs::Error::Store(e))),
        Err(_) => Err(ApiError::internal()),
    }
}

/// Headers that belong to one connection, not to the request (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Why a forward got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendError {
    /// No connection: nothing was sent, serving elsewhere cannot apply it twice.
    Unreachable,
    /// Sent, but no answer came (in time): the owner may have applied it.
    Lost,
}

/// Sends `request` to `owner` and streams its answer back, waiting at most the cluster's
/// forward timeout for the answer to start.
async fn send(
    state: &AppState,
    cluster: &Cluster,
    owner: &NodeAddress,
    request: Request,
) -> Result<Response, SendError> {
    let (mut parts, body) = request.into_parts();
    let Ok(uri) = owner_uri(owner, &parts.uri) else { return Err(SendError::Unreachable) };
    parts.uri = uri;
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    parts.headers.remove(header::HOST);
    if let Ok(value) = HeaderValue::from_str(cluster.node_id()) {
        parts.headers.insert(HeaderName::from_static(FORWARDED_HEADER), value);
    }
    let timeout = Duration::from_millis(cluster.config().forward_timeout_ms);
    let sent =
        tokio::time::timeout(timeout, state.forward_client().request(Request::from_parts(parts, body)));
    let answered = match sent.await {
        Ok(answered) => answered,
        Err(_) => {
            cluster.counters.forward_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %owner.node_id, timeout_ms = timeout.as_millis() as u64, "the node that owns the actor did not answer in time");
            return Err(SendError::Lost);
        }
    };
    match answered {
        Ok(answer) => {
            cluster.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            let (mut parts, body) = answer.into_parts();
            for name in HOP_BY_HOP {
                parts.headers.remove(name);
            }
            Ok(Response::from_parts(parts, Body::new(body)))
        }
        Err(e) => {
            cluster.counters.forward_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %owner.node_id, error = %e, "cannot reach the node that owns the actor");
            Err(if e.is_connect() { SendError::Unreachable } else { SendError::Lost })
        }
    }
}

/// Adds [`NODE_HEADER`] naming this node.
fn tagged(mut response: Response, node: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(node) {
        response.headers_mut().entry(HeaderName::from_static(NODE_HEADER)).or_insert(value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, namespace: Option<&str>) -> Request {
        let mut builder = Request::builder().uri(path);
        if let Some(ns) = namespace {
            builder = builder.header("x-namespace", ns);
        }
        builder.body(Body::empty()).expect("a request")
    }

    #[test]
    fn finds_the_actor_of_each_actor_route() {
        let id = |path, ns| actor_of(&request(path, ns)).map(|a| a.to_string());
        assert_eq!(id("/v1/actors/a1/query", None).as_deref(), Some("a1"));
        assert_eq!(id("/v1/actors/a1", None).as_deref(), Some("a1"));
        assert_eq!(id("/db/a2/v3/pipeline", None).as_deref(), Some("a2"));
        assert_eq!(id("/db/a2/v1/execute", None).as_deref(), Some("a2"));
        assert_eq!(id("/v3/pipeline", Some("a3")).as_deref(), Some("a3"));
        assert_eq!(id("/v3-protobuf/cursor", Some("a5")).as_deref(), Some("a5"));
        assert_eq!(id("/db/a6/v3-protobuf/pipeline", None).as_deref(), Some("a6"));
        assert_eq!(id("/v1/execute", Some("a4")).as_deref(), Some("a4"));
        assert_eq!(id("/v1/actors", None), None);
        assert_eq!(id("/metrics", None), None);
        assert_eq!(id("/v3/pipeline", None), None);
        assert_eq!(id("/v1/actors/bad%20id/query", None), None);
    }
}
