//! `roost sql`: runs one statement against a server and prints the rows. `overloaded` answers
//! are retried with exponential backoff and full jitter, honouring `Retry-After`.

use std::time::Duration;

use clap::Args;
use rand::Rng;
use serde_json::{json, Value};

/// Arguments of `roost sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// Server URL.
    #[arg(long, env = "ROOST_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token.
    #[arg(long, env = "ROOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the answer as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Positional parameters as JSON values, in order (e.g. --param 1 --param '"text"').
    #[arg(long = "param", value_name = "JSON")]
    pub params: Vec<String>,
    /// Attempts before giving up on `overloaded`.
    #[arg(long, default_value_t = 8)]
    pub attempts: u32,
    /// The actor id.
    pub actor: String,
    /// One SQL statement.
    pub sql: String,
}

const BACKOFF_BASE_MS: u64 = 50;
const BACKOFF_CAP_MS: u64 = 5_000;

pub fn run(args: &SqlArgs) -> Result<(), String> {
    let params = args
        .params
        .iter()
        .map(|p| serde_json::from_str::<Value>(p).map_err(|e| format!("--param {p}: not JSON: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let body = json!({"sql": args.sql, "params": params});
    let url = format!("{}/v1/actors/{}/query", args.url.trim_end_matches('/'), args.actor);
    let answer = send_with_retries(&url, args.token.as_deref(), &body, args.attempts.max(1))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer).expect("JSON values serialize"));
    } else {
        print!("{}", table(&answer));
    }
    Ok(())
}

fn send_with_retries(url: &str, token: Option<&str>, body: &Value, attempts: u32) -> Result<Value, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    for attempt in 1..=attempts {
        let mut request = agent.post(url).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut response = request.send(body.to_string()).map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = response.status().as_u16();
        let retry_after_s =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let text =
            response.body_mut().read_to_string().map_err(|e| format!("cannot read the answer: {e}"))?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status == 200 {
            return Ok(answer);
        }
        let code = answer["error"]["code"].as_str().unwrap_or("");
        if code == "overloaded" && attempt < attempts {
            std::thread::sleep(backoff(attempt, retry_after_s));
            continue;
        }
        let message = answer["error"]["message"].as_str().map_or_else(|| answer.to_string(), str::to_string);
        return Err(format!("{code} ({status}): {message}"));
    }
    unreachable!("the last attempt returns")
}

/// Full jitter: uniform in [0, min(cap, base * 2^attempt)], at least the server's hint.
fn backoff(attempt: u32, retry_after_s: Option<u64>) -> Duration {
    let ceiling = BACKOFF_CAP_MS.min(BACKOFF_BASE_MS.saturating_mul(1 << attempt.min(16)));
    let jittered = rand::rng().random_range(0..=ceiling);
    Duration::from_millis(jittered.max(retry_after_s.unwrap_or(0) * 1000))
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("base64").and_then(Value::as_str) {
            Some(b64) => format!("<blob, {} base64 chars>", b64.len()),
            None => value.to_string(),
        },
        other => other.to_string(),
    }
}

/// The rows as an aligned table, followed by a summary line.
fn table(answer: &Value) -> String {
    let columns: Vec<String> = answer["columns"].as_array().into_iter().flatten().map(cell).collect();
    let rows: Vec<Vec<String>> = answer["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r.as_array().into_iter().flatten().map(cell).collect())
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join(" | ").trim_end())
    };
    let mut out = String::new();
    if !columns.is_empty() {
        out += &line(&columns);
        out += &format!("{}\n", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-"));
        for row in &rows {
            out += &line(row);
        }
    }
    out += &format!(
        "({} rows, {} affected, last rowid {})\n",
        rows.len(),
        answer["rows_affected"],
        answer["last_insert_rowid"]
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_backoff() {
        let answer = json!({"columns": ["id", "name"], "rows": [[1, "a"], [22, null]], "rows_affected": 0,
            "last_insert_rowid": 0});
        let text = table(&answer);
        assert!(text.starts_with("id | name\n---+-----\n1  | a\n22 | NULL\n"), "{text}");
        assert!(backoff(1, Some(2)) >= Duration::from_secs(2));
        assert!(backoff(30, None) <= Duration::from_millis(BACKOFF_CAP_MS));
    }
}
