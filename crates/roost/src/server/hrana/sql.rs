//! A small SQL scanner, enough to describe a statement without a prepared-statement API: its
//! parameters (numbered and named exactly as SQLite's parser does), whether it is an `EXPLAIN`,
//! its leading keyword and where its first statement ends. It follows SQLite's tokenizer for
//! comments, quoting and parameter tokens; everything else is skipped.

/// What [`scan`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scan {
    /// Parameter names by index - 1, as `sqlite3_bind_parameter_name` gives them (`None` for
    /// `?` and for indexes no token names).
    pub params: Vec<Option<String>>,
    /// The statement starts with `EXPLAIN` (`Some(true)` for `EXPLAIN QUERY PLAN`).
    pub explain: Option<bool>,
    /// Byte offset where the statement after any `EXPLAIN [QUERY PLAN]` prefix starts.
    pub body_start: usize,
    /// The first keyword after that prefix, upper-cased.
    pub keyword: Option<String>,
    /// Byte offset of the first top-level `;` after a token (or the text's length).
    pub first_end: usize,
    /// The text holds no token at all (only blanks and comments).
    pub empty: bool,
}

/// Largest `?NNN` SQLite accepts (SQLITE_MAX_VARIABLE_NUMBER of the bundled build).
const VARIABLE_NUMBER_MAX: usize = 32766;

fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_id_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Numbers parameters as `sqlite3ExprAssignVarNumber` does.
#[derive(Default)]
struct Params {
    names: Vec<Option<String>>,
}

impl Params {
    fn add(&mut self, token: &str) -> Result<(), String> {
        if token == "?" {
            self.names.push(None);
            return Ok(());
        }
        if let Some(digits) = token.strip_prefix('?') {
            let index =
                digits.parse::<usize>().ok().filter(|i| (1..=VARIABLE_NUMBER_MAX).contains(i)).ok_or_else(
                    || format!("variable number must be between ?1 and ?{VARIABLE_NUMBER_MAX}"),
                )?;
            if index > self.names.len() {
                self.names.resize(index, None);
                self.names[index - 1] = Some(token.to_string());
            } else if self.names[index - 1].is_none() {
                self.names[index - 1] = Some(token.to_string());
            }
            return Ok(());
        }
        if !self.names.iter().any(|n| n.as_deref() == Some(token)) {
            self.names.push(Some(token.to_string()));
        }
        Ok(())
    }
}

/// Scans `sql`. Fails only on a `?NNN` out of range (SQLite refuses those too).
pub fn scan(sql: &str) -> Result<Scan, String> {
    let bytes = sql.as_bytes();
    let len = bytes.len();
    let mut params = Params::default();
    // Leading words (with offsets) of the first statement, for EXPLAIN and the keyword.
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut leading = true;
    let mut seen_token = false;
    let mut first_end = None;
    let mut i = 0;
    let skip_quoted = |start: usize, quote: u8| -> usize {
        let mut j = start + 1;
        while j < len {
            if bytes[j] == quote {
                if quote != b']' && j + 1 < len && bytes[j + 1] == quote {
                    j += 2;
                    continue;
                }
                return j + 1;
            }
            j += 1;
        }
        len
    };
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
            b'\'' | b'"' | b'`' => i = skip_quoted(i, b),
            b'[' => i = skip_quoted(i, b']'),
            b'?' => {
                i += 1;
                while i < len && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                if first_end.is_none() {
                    params.add(&sql[start..i])?;
                }
            }
            b':' | b'@' | b'$' | b'#' => {
                let mut j = i + 1;
                let mut named = 0;
                let mut illegal = false;
                while j < len {
                    let c = bytes[j];
                    if is_id_char(c) {
                        named += 1;
                        j += 1;
                    } else if c == b'(' && named > 0 {
                        // Tcl-style `$name(...)`: up to the closing parenthesis, no blanks.
                        while j < len && !bytes[j].is_ascii_whitespace() && bytes[j] != b')' {
                            j += 1;
                        }
                        if j < len && bytes[j] == b')' {
                            j += 1;
                        } else {
                            illegal = true;
                        }
                        break;
                    } else if c == b':' && bytes.get(j + 1) == Some(&b':') {
                        j += 2;
                    } else {
                        break;
                    }
                }
                if named > 0 && !illegal {
                    if first_end.is_none() {
                        params.add(&sql[start..j])?;
                    }
                    i = j;
                } else {
                    i += 1;
                }
            }
            b';' => {
                i += 1;
                if seen_token && first_end.is_none() {
                    first_end = Some(start);
                }
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
            _ if b.is_ascii_digit() => {
                while i < len && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
            }
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
    let body_start = if skip == 0 { 0 } else { words[skip - 1].1 };
    Ok(Scan {
        params: params.names,
        explain,
        body_start,
        keyword: word(skip),
        first_end: first_end.unwrap_or(len),
        empty: !seen_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Vec<Option<&'static str>> {
        scan(sql).unwrap().params.into_iter().map(|n| n.map(|s| &*Box::leak(s.into_boxed_str()))).collect()
    }

    #[test]
    fn numbers_parameters_like_sqlite() {
        assert_eq!(names("SELECT 1"), vec![]);
        assert_eq!(names("SELECT ?, ?"), vec![None, None]);
        assert_eq!(names("SELECT ?3, ?"), vec![None, None, Some("?3"), None]);
        assert_eq!(names("SELECT :a, @b, $c, :a, ?"), vec![Some(":a"), Some("@b"), Some("$c"), None]);
        assert_eq!(names("SELECT :a, ?1"), vec![Some(":a")]);
        assert_eq!(names("SELECT ?1, :a, ?1"), vec![Some("?1"), Some(":a")]);
        assert_eq!(names("SELECT $a::b, $x(1 2)"), vec![Some("$a::b")]);
        assert_eq!(names("SELECT $x(y)"), vec![Some("$x(y)")]);
        assert_eq!(names("SELECT ':a', \"?\", `@b`, [$c], x'3f' -- ?\n /* :d */ , :e"), vec![Some(":e")]);
        assert_eq!(names("SELECT 'it''s ?', ?"), vec![None]);
        assert_eq!(names("SELECT :é1"), vec![Some(":é1")]);
        assert!(scan("SELECT ?0").is_err());
        assert!(scan("SELECT ?40000").is_err());
    }

    #[test]
    fn finds_explain_keyword_and_end() {
        let s = scan("  explain query plan SELECT 1; SELECT ?").unwrap();
        assert_eq!(s.explain, Some(true));
        assert_eq!(s.keyword.as_deref(), Some("SELECT"));
        assert_eq!(s.params, vec![]);
        assert_eq!(&"  explain query plan SELECT 1; SELECT ?"[s.body_start..s.first_end], " SELECT 1");
        let s = scan("EXPLAIN INSERT INTO t VALUES (?)").unwrap();
        assert_eq!((s.explain, s.keyword.as_deref()), (Some(false), Some("INSERT")));
        let s = scan("/* c */ WITH x AS (SELECT 1) SELECT * FROM x").unwrap();
        assert_eq!((s.explain, s.keyword.as_deref(), s.empty), (None, Some("WITH"), false));
        assert!(scan(" -- nothing\n /* */ ").unwrap().empty);
        assert!(scan(";").unwrap().empty);
    }
}
