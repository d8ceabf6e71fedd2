//! A TCP proxy in front of PostgreSQL that tests cut, slow down or make lose an answer, to
//! play outages, network latency and connections lost at `COMMIT`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    down: AtomicBool,
    /// The next answer the server sends is swallowed, then its connection is cut.
    swallow_next_answer: AtomicBool,
    stop: AtomicBool,
    /// Every answer reaches the client this much later: a network's latency.
    answer_delay_ms: std::sync::atomic::AtomicU64,
    streams: parking_lot::Mutex<Vec<TcpStream>>,
}

pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    /// Starts a proxy to the host and port of `url` (a `postgres://` URL).
    pub fn start(url: &str) -> Self {
        let upstream = split_url(url).1.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let shared = state.clone();
        std::thread::spawn(move || {
            while !shared.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) if !shared.down.load(Ordering::SeqCst) => {
                        client.set_nonblocking(false).unwrap();
                        connect(client, &upstream, &shared);
                    }
                    Ok(_) => {} // down: the connection is dropped at once
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { port, state }
    }

    /// Cuts every connection and refuses new ones.
    pub fn down(&self) {
        self.state.down.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// Cuts every open connection; new ones are accepted.
    pub fn cut(&self) {
        (self.cutter())();
    }

    /// A function that cuts every open connection, for another thread.
    pub fn cutter(&self) -> impl FnOnce() + Send + 'static {
        let state = self.state.clone();
        move || {
            for stream in state.streams.lock().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// `url` going through this proxy.
    pub fn url(&self, url: &str) -> String {
        let (before, _, after) = split_url(url);
        format!("{before}127.0.0.1:{}{after}", self.port)
    }

    pub fn up(&self) {
        self.state.down.store(false, Ordering::SeqCst);
    }

    pub fn delay_answers(&self, delay: Duration) {
        self.state.answer_delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn swallow_next_answer(&self) {
        self.state.swallow_next_answer.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

fn connect(client: TcpStream, upstream: &str, state: &Arc<State>) {
    let Ok(server) = TcpStream::connect(upstream) else { return };
    // Forward every piece at once, as the client and server themselves do (no Nagle delays).
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut streams = state.streams.lock();
    streams.push(client.try_clone().unwrap());
    streams.push(server.try_clone().unwrap());
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || pump(client, server, None));
    let state = state.clone();
    std::thread::spawn(move || pump(s2, c2, Some(state)));
}

/// Copies `from` to `to`. On the server's side (`state` given) answers are delayed as
/// asked (by a writer thread, so that bytes keep their order and their timing) or
/// swallowed once.
fn pump(mut from: TcpStream, to: TcpStream, state: Option<Arc<State>>) {
    let (send, due) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    let mut writer = to.try_clone().unwrap();
    std::thread::spawn(move || {
        for (at, bytes) in due {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if writer.write_all(&bytes).is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if state.as_ref().is_some_and(|s| s.swallow_next_answer.swap(false, Ordering::SeqCst)) {
            // Let the server finish the whole pipeline (its COMMIT included), then cut.
            from.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                let _ = from.read(&mut buf);
            }
            break;
        }
        let delay = state.as_ref().map_or(0, |s| s.answer_delay_ms.load(Ordering::SeqCst));
        if send.send((Instant::now() + Duration::from_millis(delay), buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(send);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Splits a `postgres://user@host:port/db?x` URL around `host:port`.
fn split_url(url: &str) -> (&str, &str, &str) {
    let scheme = url.find("://").expect("a postgres:// URL") + 3;
    let host = url[scheme..].find('@').map_or(scheme, |i| scheme + i + 1);
    let end = url[host..].find(['/', '?']).map_or(url.len(), |i| host + i);
    (&url[..host], &url[host..end], &url[end..])
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_split_around_the_host() {
        assert_eq!(super::split_url("postgres://u@h:5/db?x=1"), ("postgres://u@", "h:5", "/db?x=1"));
        assert_eq!(super::split_url("postgres://h:5"), ("postgres://", "h:5", ""));
    }
}
