//! Starting `roost serve` for the CLI tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ROOST: &str = env!("CARGO_BIN_EXE_roost");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `roost serve` on `data` and `port` with `extra` flags and waits until it listens.
pub fn serve(data: &Path, port: u16, extra: &[&str], stderr: Stdio) -> Child {
    let child = Command::new(ROOST)
        .args(["serve", "--data", data.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("ROOST_MEMORY_LOG_INTERVAL_S", "1")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}
