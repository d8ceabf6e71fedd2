//! A small SQL scanner, enough to classify a statement's text without preparing it: whether it
//! holds any token at all, whether it starts with `EXPLAIN [QUERY PLAN]`, and its leading
//! keyword. It follows SQLite's tokenizer for blanks, comments and quoting; other tokens are
//! only noticed, not parsed.

/// What [`scan`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Scan {
    /// The statement starts with `EXPLAIN` (`Some(true)` for `EXPLAIN QUERY PLAN`).
    pub explain: Option<bool>,
    /// The first keyword after that prefix, upper-cased.
    pub keyword: Option<String>,
    /// The text holds no token at all (only blanks, comments and semicolons).
    pub empty: bool,
}

impl Scan {
    /// A `VACUUM` statement that runs (not one under `EXPLAIN`).
    pub fn is_vacuum(&self) -> bool {
        self.explain.is_none() && self.keyword.as_deref() == Some("VACUUM")
    }
}

fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_id_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// The end of a quoted token starting at `start` (a doubled quote stays inside, except in
/// `[...]`); the text's length when it is not closed.
fn skip_quoted(bytes: &[u8], start: usize, quote: u8) -> usize {
    let mut j = start + 1;
    while j < bytes.len() {
        if bytes[j] == quote {
            if quote != b']' && bytes.get(j + 1) == Some(&quote) {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    bytes.len()
}

/// Scans `sql`.
pub(crate) fn scan(sql: &str) -> Scan {
    let bytes = sql.as_bytes();
    let len = bytes.len();
    // Leading words (with offsets) of the first statement, for EXPLAIN and the keyword.
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut leading = true;
    let mut seen_token = false;
    let mut i = 0;
    while i < len {
        let b = bytes[i];
        let start = i;
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..].iter().position(|&c| c == b'\n').map_or(len, |p| i + p + 1);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map_or(len, |p| i + 2 + p + 2);
                continue;
            }
            b';' => {
                i += 1;
                leading = false;
                continue;
            }
            _ if is_id_start(b) => {
                i += 1;
                while i < len && is_id_char(bytes[i]) {
                    i += 1;
                }
                if leading && words.len() < 4 {
                    words.push((start, i));
                }
                seen_token = true;
                continue;
            }
            b'\'' | b'"' | b'`' => i = skip_quoted(bytes, i, b),
            b'[' => i = skip_quoted(bytes, i, b']'),
            // Numbers, parameters and operators: only that a token is here matters.
            _ => i += 1,
        }
        // Any token other than a word ends the run of leading words.
        leading = false;
        seen_token = true;
    }
    let word = |n: usize| words.get(n).map(|&(s, e)| sql[s..e].to_ascii_uppercase());
    let (explain, skip) = match word(0).as_deref() {
        Some("EXPLAIN") if word(1).as_deref() == Some("QUERY") && word(2).as_deref() == Some("PLAN") => {
            (Some(true), 3)
        }
        Some("EXPLAIN") => (Some(false), 1),
        _ => (None, 0),
    };
    Scan { explain, keyword: word(skip), empty: !seen_token }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_explain_and_the_keyword() {
        let s = scan("  explain query plan SELECT 1; SELECT ?");
        assert_eq!(s.explain, Some(true));
        assert_eq!(s.keyword.as_deref(), Some("SELECT"));
        let s = scan("EXPLAIN INSERT INTO t VALUES (?)");
        assert_eq!((s.explain, s.keyword.as_deref()), (Some(false), Some("INSERT")));
        let s = scan("/* c */ WITH x AS (SELECT 1) SELECT * FROM x");
        assert_eq!((s.explain, s.keyword.as_deref(), s.empty), (None, Some("WITH"), false));
        assert!(scan(" -- nothing\n /* */ ").empty);
        assert!(scan(";").empty);
        assert!(!scan("'it''s'").empty);
    }

    #[test]
    fn recognizes_vacuum_behind_comments_only() {
        assert!(scan("VACUUM").is_vacuum());
        assert!(scan(" /* maintenance */ -- comment\n vacuum").is_vacuum());
        assert!(scan("vacuum INTO ?").is_vacuum());
        assert!(!scan("EXPLAIN VACUUM").is_vacuum());
        assert!(!scan("SELECT 'VACUUM'").is_vacuum());
        assert!(!scan("\"vacuum\"").is_vacuum());
    }
}
