//! `/debug/dashboard` on a real server: its protection, and what it draws in headless Chromium.
//! Without Chromium the drawing check is skipped (with a note) unless `ROOST_REQUIRE_CHROMIUM=1`.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roost::server::Auth;
use serde_json::{json, Value};
use support::{get, post, TestServer};

const ADMIN: &str = "dashboard-admin-token-0123456789";

fn server() -> TestServer {
    TestServer::with_auth(Auth { tokens: Vec::new(), admin: Some(ADMIN.into()) })
}

/// Status, content type and content-security policy of the page.
fn load(url: &str, token: Option<&str>) -> (u16, String, String) {
    let mut request = support::agent().get(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.call().expect("transport error");
    let header = |name| response.headers().get(name).map_or("", |v| v.to_str().unwrap()).to_string();
    (response.status().as_u16(), header("content-type"), header("content-security-policy"))
}

#[test]
fn dashboard_needs_the_admin_token() {
    let server = server();
    let page = format!("{}/debug/dashboard", server.url);
    assert_eq!(load(&page, None).0, 401);
    assert_eq!(load(&page, Some("not-the-admin-token-at-all")).0, 401);
    assert_eq!(load(&format!("{page}?token=not-the-admin-token-at-all"), None).0, 401);
    let (status, kind, csp) = load(&page, Some(ADMIN));
    assert_eq!((status, kind.as_str()), (200, "text/html; charset=utf-8"));
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(load(&format!("{page}?token={ADMIN}"), None).0, 200);
    // The query token opens the page only: the data still needs the header.
    assert_eq!(get(&format!("{}/debug/memory?token={ADMIN}", server.url), None).status, 401);
}

/// The Chromium binary, or `None` (with the reason printed) when the check is to be skipped.
fn chromium() -> Option<&'static str> {
    let required = std::env::var("ROOST_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
    for name in ["chromium", "chromium-browser"] {
        if Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Some(name);
        }
    }
    assert!(!required, "ROOST_REQUIRE_CHROMIUM=1 but no chromium binary runs");
    eprintln!(
        "note: dashboard drawing check skipped (no chromium); set ROOST_REQUIRE_CHROMIUM=1 to require it"
    );
    None
}

/// The DOM after five seconds of (virtual) time: about five polls of `/debug/memory`.
fn dump_dom(chromium: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

/// The value of `attr` in the tag holding `marker`.
fn attr(dom: &str, marker: &str, attr: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let start = dom[..at].rfind('<')?;
    let tag = &dom[start..at + dom[at..].find('>')?];
    let key = format!(" {attr}=\"");
    let value = &tag[tag.find(&key)? + key.len()..];
    Some(value[..value.find('"')?].to_string())
}

/// The last value the page drew for a series.
fn last(dom: &str, series: &str) -> u64 {
    let value = attr(dom, &format!("data-series=\"{series}\""), "data-last");
    value.unwrap_or_else(|| panic!("no series {series} in the dashboard")).parse().unwrap()
}

#[test]
fn dashboard_draws_what_debug_memory_reports() {
    let Some(chromium) = chromium() else { return };
    let server = server();
    let wake = json!({"sql": "SELECT 1"}).to_string();
    for i in 0..3 {
        assert_eq!(post(&format!("{}/v1/actors/dash-{i}/query", server.url), Some(ADMIN), &wake).status, 200);
    }
    let dom = dump_dom(chromium, &format!("{}/debug/dashboard?token={ADMIN}", server.url));
    let memory = get(&format!("{}/debug/memory", server.url), Some(ADMIN)).body;
    assert!(!dom.contains("class=\"error\""), "the page reports an error:\n{dom}");
    let samples: u64 = attr(&dom, "data-samples=", "data-samples").expect("samples").parse().unwrap();
    assert!(samples >= 2, "one poll per second: {samples} samples in 5 s");
    check_values(&dom, &memory);
    check_axes_and_table(&dom);
}

/// Drawn values agree with the server's `/debug/memory` and with each other.
fn check_values(dom: &str, memory: &Value) {
    let awake = memory["actors"]["awake"].as_u64().unwrap();
    assert_eq!(awake, 3);
    assert_eq!(last(dom, "awake"), awake);
    assert!(dom.contains(&format!("id=\"awake\" data-value=\"{awake}\">{awake}<")), "awake count text");
    assert_eq!(last(dom, "budget"), memory["budget"]["budget_bytes"].as_u64().unwrap());
    let mut attributed = 0;
    for pool in memory["budget"]["pools"].as_array().unwrap() {
        attributed += last(dom, &format!("pool:{}", pool["name"].as_str().unwrap()));
    }
    let rss = last(dom, "rss");
    assert!(rss > 1 << 20 && rss <= memory["process"]["rss_peak_bytes"].as_u64().unwrap(), "rss {rss}");
    assert_eq!(last(dom, "unexplained"), rss.saturating_sub(attributed), "unexplained = RSS - pools");
    for series in ["waking", "queued"] {
        last(dom, series);
    }
}

fn check_axes_and_table(dom: &str) {
    assert!(dom.contains(" MiB</text>") && dom.contains("data-tick=\"y\""), "memory ticks in MiB");
    assert!(dom.contains(" s</text>") && dom.contains("data-tick=\"x\""), "time ticks in s");
    assert!(dom.contains("memory (MiB)") && dom.contains("time since the dashboard opened (s)"));
    for i in 0..3 {
        assert!(dom.contains(&format!("data-actor=\"dash-{i}\"")), "dash-{i} in the top actors table");
    }
}
