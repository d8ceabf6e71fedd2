//! The reference actor workload (`shared/bench/actor-workload.md`), step by step, for roost
//! (on one actor's [`Database`], run through the host) and for native SQLite on a plain file.
//!
//! 1. open the database of `actor-0000`, `actor-0001`, ...;
//! 2. run `actor-workload.sql` (one transaction: 5 tables, one secondary index each);
//! 3. `BEGIN`; 100 message inserts; `COMMIT`;
//! 4. three queries, whose answers are checked;
//! 5. leave the database open.

use roost::{Database, Params, QueryResult, Value};
use rusqlite::{params, Connection};

use super::BenchResult;

/// Step 2. Mirrors `shared/bench/actor-workload.sql`: keep the two identical.
pub const SCHEMA_SQL: &str = include_str!("actor-workload.sql");

/// Rows inserted by step 3.
pub const MESSAGES: usize = 100;
/// Bytes of one message body.
pub const BODY_BYTES: usize = 200;
const BODY_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 ";

pub const INSERT_MESSAGE: &str = "INSERT INTO messages (session_id, body, created_at) VALUES (?, ?, ?)";
pub const COUNT_MESSAGES: &str = "SELECT COUNT(*) FROM messages";
pub const SESSION_MESSAGES: &str = "SELECT id, body FROM messages WHERE session_id = 3 ORDER BY id";
pub const LATEST_MESSAGES: &str = "SELECT id, session_id, created_at FROM messages ORDER BY id DESC LIMIT 10";
/// The single-row autocommit insert timed on actor 0 (`'payload-<i>'`, `i` as parameters).
pub const INSERT_EVENT: &str = "INSERT INTO events (kind, payload, ts) VALUES ('tick', ?, ?)";

/// `actor-0000`, `actor-0001`, ... (4 digits at least, wider past 9999).
pub fn actor_name(i: usize) -> String {
    format!("actor-{i:04}")
}

pub fn actor_id(i: usize) -> BenchResult<roost::ActorId> {
    Ok(roost::ActorId::new(actor_name(i))?)
}

/// `"message {i} "` right-padded to 200 bytes with the repeated alphabet.
pub fn body(i: usize) -> String {
    let mut body = format!("message {i} ");
    body.extend(
        BODY_ALPHABET.iter().cycle().map(|b| char::from(*b)).take(BODY_BYTES.saturating_sub(body.len())),
    );
    body
}

/// `session_id`, `body` and `created_at` of message `i` (0-based).
pub fn message(i: usize) -> (i64, String, i64) {
    (i as i64 % 10, body(i), 1_700_000_000 + i as i64)
}

pub fn message_params(i: usize) -> Params {
    let (session, body, created) = message(i);
    Params::Positional(vec![Value::Integer(session), Value::Text(body), Value::Integer(created)])
}

pub fn event_params(i: usize) -> Params {
    Params::Positional(vec![Value::Text(format!("payload-{i}")), Value::Integer(i as i64)])
}

/// What step 4 answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answers {
    pub count: i64,
    pub session_rows: usize,
    pub latest_rows: usize,
    pub latest_first_id: i64,
}

impl Answers {
    /// The answers right after steps 2 and 3.
    pub const EXPECTED: Self = Self { count: 100, session_rows: 10, latest_rows: 10, latest_first_id: 100 };

    pub fn check(self) -> BenchResult<()> {
        if self == Self::EXPECTED {
            Ok(())
        } else {
            Err(format!("step 4 answered {self:?}, expected {:?}", Self::EXPECTED).into())
        }
    }
}

fn first_integer(result: &QueryResult) -> i64 {
    match result.rows.first().and_then(|r| r.first()) {
        Some(Value::Integer(n)) => *n,
        _ => -1,
    }
}

/// Step 2 on roost.
pub fn roost_schema(db: &mut Database) -> Result<(), roost::Error> {
    db.execute_script(SCHEMA_SQL)
}

/// Step 3 on roost.
pub fn roost_messages(db: &mut Database) -> Result<(), roost::Error> {
    db.execute_script("BEGIN")?;
    for i in 0..MESSAGES {
        if let Err(e) = db.execute(INSERT_MESSAGE, &message_params(i)) {
            if db.in_transaction() {
                let _ = db.execute_script("ROLLBACK");
            }
            return Err(e);
        }
    }
    db.execute_script("COMMIT")
}

/// Step 4 on roost.
pub fn roost_queries(db: &mut Database) -> Result<Answers, roost::Error> {
    let count = first_integer(&db.execute(COUNT_MESSAGES, &Params::None)?);
    let session_rows = db.execute(SESSION_MESSAGES, &Params::None)?.rows.len();
    let latest = db.execute(LATEST_MESSAGES, &Params::None)?;
    Ok(Answers {
        count,
        session_rows,
        latest_rows: latest.rows.len(),
        latest_first_id: first_integer(&latest),
    })
}

/// Steps 2 to 4 on roost, in one call.
pub fn roost_workload(db: &mut Database) -> Result<Answers, roost::Error> {
    roost_schema(db)?;
    roost_messages(db)?;
    roost_queries(db)
}

/// Step 1 on native SQLite: a plain file with default settings.
pub fn native_open(path: &std::path::Path) -> BenchResult<Connection> {
    Ok(Connection::open(path)?)
}

/// Steps 2 to 4 on native SQLite, with the same statements (prepared through the connection's
/// statement cache, as roost does).
pub fn native_workload(conn: &Connection) -> BenchResult<Answers> {
    conn.execute_batch(SCHEMA_SQL)?;
    conn.execute_batch("BEGIN")?;
    {
        let mut insert = conn.prepare_cached(INSERT_MESSAGE)?;
        for i in 0..MESSAGES {
            let (session, body, created) = message(i);
            insert.execute(params![session, body, created])?;
        }
    }
    conn.execute_batch("COMMIT")?;
    native_queries(conn)
}

/// Step 4 on native SQLite.
pub fn native_queries(conn: &Connection) -> BenchResult<Answers> {
    let count: i64 = conn.prepare_cached(COUNT_MESSAGES)?.query_row([], |r| r.get(0))?;
    let session_rows = {
        let mut stmt = conn.prepare_cached(SESSION_MESSAGES)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        rows.collect::<Result<Vec<_>, _>>()?.len()
    };
    let latest = {
        let mut stmt = conn.prepare_cached(LATEST_MESSAGES)?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    Ok(Answers {
        count,
        session_rows,
        latest_rows: latest.len(),
        latest_first_id: latest.first().map_or(-1, |r| r.0),
    })
}

/// One single-row autocommit insert into `events` on native SQLite.
pub fn native_event(conn: &Connection, i: usize) -> BenchResult<()> {
    conn.prepare_cached(INSERT_EVENT)?.execute(params![format!("payload-{i}"), i as i64])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_padded_with_the_alphabet() {
        let b = body(7);
        assert_eq!(b.len(), BODY_BYTES);
        assert!(b.starts_with("message 7 abcdefghijklmnopqrstuvwxyz0123456789 abc"));
        assert_eq!(body(12345).len(), BODY_BYTES);
    }

    #[test]
    fn actor_names_are_zero_padded() {
        assert_eq!(actor_name(0), "actor-0000");
        assert_eq!(actor_name(9999), "actor-9999");
        assert_eq!(actor_name(10_000), "actor-10000");
    }

    #[test]
    fn the_schema_mirrors_the_shared_workload() {
        let statements = SCHEMA_SQL.lines().filter(|l| !l.starts_with("--")).collect::<Vec<_>>();
        assert_eq!(statements.first(), Some(&"BEGIN;"));
        assert_eq!(statements.last(), Some(&"COMMIT;"));
        assert_eq!(statements.iter().filter(|l| l.starts_with("CREATE TABLE")).count(), 5);
        assert_eq!(statements.iter().filter(|l| l.starts_with("CREATE INDEX")).count(), 5);
    }

    #[test]
    fn native_workload_answers_as_expected() {
        let conn = Connection::open_in_memory().unwrap();
        native_workload(&conn).unwrap().check().unwrap();
    }
}
