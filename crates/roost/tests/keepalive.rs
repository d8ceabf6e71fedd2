//! Every endpoint reads (or refuses) a request body without dropping a kept-alive connection:
//! a client can send request after request on one connection, bodies included, whatever the
//! answer.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use roost::server::{Auth, ServerConfig, Token};
use roost::{HostConfig, StorageConfig};
use support::TestServer;

const TOKEN: &str = "keepalive-token-aaaaaaaa";

struct Reply {
    status: u16,
    close: bool,
}

/// Sends one request on `stream` and reads its whole answer.
fn round_trip(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, head: &str, body: &[u8]) -> Reply {
    let request = format!("{head}\r\nhost: x\r\ncontent-length: {}\r\n\r\n", body.len());
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("the server answered");
    assert!(status_line.starts_with("HTTP/1.1 "), "no answer (connection dropped?): {status_line:?}");
    let status = status_line[9..12].parse().unwrap();
    let (mut length, mut close, mut chunked) = (0usize, false, false);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        close |= line == "connection: close";
        chunked |= line == "transfer-encoding: chunked";
    }
    assert!(!chunked, "answers carry a content length");
    let mut answer = vec![0u8; length];
    reader.read_exact(&mut answer).unwrap();
    Reply { status, close }
}

#[test]
fn bodies_never_break_kept_alive_connections() {
    let auth = Auth { tokens: vec![Token { secret: TOKEN.into(), prefix: Some("ka".into()) }], admin: None };
    let config = ServerConfig { auth, ..ServerConfig::default() };
    let server = TestServer::start(config, HostConfig::default(), StorageConfig::default());
    let address = server.url.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&address).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let auth = format!("authorization: Bearer {TOKEN}");
    // Bodies larger than one read of the socket, sent where no body is expected or before the
    // server has looked at them.
    let filler = vec![b'x'; 200 << 10];
    let query = br#"{"sql": "SELECT 1"}"#;
    let cases: Vec<(String, &[u8], u16)> = vec![
        (format!("POST /v1/actors/ka-1/sleep HTTP/1.1\r\n{auth}"), &filler, 200),
        (format!("DELETE /v1/actors/ka-2 HTTP/1.1\r\n{auth}"), &filler, 200),
        (format!("GET /v1/actors/ka-1 HTTP/1.1\r\n{auth}"), &filler, 404),
        (format!("GET /healthz HTTP/1.1\r\n{auth}"), &filler, 200),
        ("POST /v1/actors/ka-1/query HTTP/1.1".to_string(), &filler, 401),
        (format!("POST /v1/actors/other/query HTTP/1.1\r\n{auth}"), &filler, 401),
        (format!("POST /v1/actors/..bad/query HTTP/1.1\r\n{auth}"), &filler, 400),
        (format!("POST /v1/actors/ka-1/query HTTP/1.1\r\n{auth}"), &filler, 400),
        (format!("POST /v1/actors/ka-1/query HTTP/1.1\r\n{auth}"), query, 200),
        (format!("POST /nowhere HTTP/1.1\r\n{auth}"), &filler, 404),
        (format!("POST /db/ka-1/v2/pipeline HTTP/1.1\r\n{auth}"), &filler, 400),
    ];
    for round in 0..20 {
        for (head, body, status) in &cases {
            let reply = round_trip(&mut stream, &mut reader, head, body);
            assert_eq!(reply.status, *status, "round {round}: {head}");
            assert!(!reply.close, "round {round}: {head} closed the connection");
        }
    }
}

#[test]
fn oversized_bodies_are_refused_with_connection_close() {
    let config = ServerConfig { body_bytes_max: 64 << 10, ..ServerConfig::default() };
    let server = TestServer::start(config, HostConfig::default(), StorageConfig::default());
    let address = server.url.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&address).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    // A little over the limit: read and discarded, answered 413, the connection stays usable.
    let over = vec![b' '; 100 << 10];
    for _ in 0..3 {
        let reply = round_trip(&mut stream, &mut reader, "POST /v1/actors/big/query HTTP/1.1", &over);
        assert_eq!((reply.status, reply.close), (413, false));
        let reply = round_trip(&mut stream, &mut reader, "POST /db/big/v3/pipeline HTTP/1.1", &over);
        assert_eq!((reply.status, reply.close), (413, false));
    }
    let query = br#"{"sql": "SELECT 1"}"#;
    let reply = round_trip(&mut stream, &mut reader, "POST /v1/actors/big/query HTTP/1.1", query);
    assert_eq!(reply.status, 200);
    // Declared too large: refused at once, and the server says it closes the connection.
    let head = "POST /v1/actors/big/query HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    let mut headers = String::new();
    while !headers.ends_with("\r\n\r\n") {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        headers.push_str(&line);
    }
    assert!(headers.to_ascii_lowercase().contains("connection: close"), "{headers}");
}
