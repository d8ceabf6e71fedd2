//! Checks of SQLite files handed in for import, before SQLite reads them.
//!
//! Invariants:
//! - only files the storage can hold pass: the SQLite magic, 4096-byte pages (one page is one
//!   store value) and the rollback-journal file format (versions 1). A WAL-mode file (versions
//!   2) would make the actor's header ask for a WAL, which this VFS cannot open;
//!   [`prepare_upload_header`] converts it in the caller's own copy, [`open_upload`] refuses it;
//! - an upload is opened read-only with `immutable=1`, so SQLite creates no journal, WAL or
//!   shared-memory file beside it and takes no lock: checking leaves nothing behind.

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::error::Error;
use super::layout::CHUNK_BYTES;

/// Bytes of the SQLite database header.
pub const UPLOAD_HEADER_BYTES: usize = 100;

const MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// File format write and read versions: 1 is the rollback journal, 2 is WAL.
const VERSIONS_AT: std::ops::Range<usize> = 18..20;
const ROLLBACK_FORMAT: u8 = 1;
const WAL_FORMAT: u8 = 2;

fn refuse(why: impl std::fmt::Display) -> Error {
    Error::Parameters(format!("the upload is not a valid SQLite database: {why}"))
}

/// The page size a header declares (1 stands for 65536).
fn page_size(header: &[u8]) -> u32 {
    match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u32::from(n),
    }
}

/// Checks a header; returns whether it is in WAL mode.
fn check_header(header: &[u8]) -> Result<bool, Error> {
    if header.len() < UPLOAD_HEADER_BYTES {
        return Err(refuse("it is shorter than a header"));
    }
    if &header[..MAGIC.len()] != MAGIC {
        return Err(refuse("it does not start with the SQLite header"));
    }
    let pages = page_size(header);
    if pages != CHUNK_BYTES as u32 {
        return Err(Error::Parameters(format!(
            "the upload uses {pages}-byte pages; Roost stores {CHUNK_BYTES}-byte pages: convert it first \
             with `PRAGMA journal_mode=DELETE; PRAGMA page_size={CHUNK_BYTES}; VACUUM;`"
        )));
    }
    match (header[VERSIONS_AT.start], header[VERSIONS_AT.start + 1]) {
        (ROLLBACK_FORMAT, ROLLBACK_FORMAT) => Ok(false),
        (w, r) if w <= WAL_FORMAT && r <= WAL_FORMAT && w.min(r) >= ROLLBACK_FORMAT => Ok(true),
        (w, r) => Err(refuse(format!("unknown file format versions {w}/{r}"))),
    }
}

/// Checks the first [`UPLOAD_HEADER_BYTES`] of an upload (fewer if the upload is shorter) and
/// converts a WAL-mode header to the rollback-journal format in place, as
/// `PRAGMA journal_mode=DELETE` would. An upload is one file: what sat in its WAL is not part
/// of it either way. Returns whether it converted. Refusals are [`Error::Parameters`].
pub fn prepare_upload_header(header: &mut [u8]) -> Result<bool, Error> {
    let wal = check_header(header)?;
    if wal {
        header[VERSIONS_AT].fill(ROLLBACK_FORMAT);
    }
    Ok(wal)
}

/// `path` as a `file:` URI (percent-encoded) that opens it read-only and immutable.
fn immutable_uri(path: &Path) -> Result<String, Error> {
    let text = path.to_str().ok_or_else(|| refuse("its path is not UTF-8"))?;
    let mut uri = String::from("file:");
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            let _ = write!(uri, "%{byte:02X}");
        }
    }
    uri.push_str("?mode=ro&immutable=1");
    Ok(uri)
}

fn read_header(path: &Path) -> Result<Vec<u8>, Error> {
    let file = std::fs::File::open(path).map_err(|e| refuse(format!("cannot open it: {e}")))?;
    let mut header = Vec::with_capacity(UPLOAD_HEADER_BYTES);
    file.take(UPLOAD_HEADER_BYTES as u64)
        .read_to_end(&mut header)
        .map_err(|e| refuse(format!("cannot read it: {e}")))?;
    Ok(header)
}

/// Opens the SQLite file at `path` for copying after checking it: its header (a WAL-mode file
/// is refused; see [`prepare_upload_header`]) and `PRAGMA quick_check`.
pub(crate) fn open_upload(path: &Path) -> Result<Connection, Error> {
    if check_header(&read_header(path)?)? {
        return Err(Error::Parameters(
            "the upload is in WAL mode: convert it with `PRAGMA journal_mode=DELETE` first".into(),
        ));
    }
    // The URI flag is passed here only: this connection opens a host file on purpose (the
    // build turns URIs off by default so that actor SQL cannot).
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(immutable_uri(path)?, flags).map_err(refuse)?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |row| row.get(0)).map_err(refuse)?;
    if check != "ok" {
        return Err(refuse(check));
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(page_size: u16, versions: u8) -> Vec<u8> {
        let mut h = vec![0u8; UPLOAD_HEADER_BYTES];
        h[..16].copy_from_slice(MAGIC);
        h[16..18].copy_from_slice(&page_size.to_be_bytes());
        h[18] = versions;
        h[19] = versions;
        h
    }

    #[test]
    fn headers_are_checked_and_wal_converted() {
        let mut h = header(4096, 1);
        assert_eq!(prepare_upload_header(&mut h), Ok(false));
        let mut h = header(4096, 2);
        assert_eq!(prepare_upload_header(&mut h), Ok(true));
        assert_eq!(h, header(4096, 1));
        let message = prepare_upload_header(&mut header(8192, 1)).unwrap_err().to_string();
        assert!(message.contains("8192-byte pages") && message.contains("PRAGMA page_size=4096; VACUUM;"));
        assert!(prepare_upload_header(&mut header(1, 1)).unwrap_err().to_string().contains("65536"));
        assert!(prepare_upload_header(&mut header(4096, 3)).is_err());
        assert!(prepare_upload_header(&mut header(4096, 1)[..50].to_vec()).is_err());
        let mut garbage = header(4096, 1);
        garbage[0] = b'X';
        assert!(prepare_upload_header(&mut garbage).is_err());
    }

    #[test]
    fn uris_escape_every_special_character() {
        let uri = immutable_uri(Path::new("/data/a b?c#d%e")).unwrap();
        assert_eq!(uri, "file:/data/a%20b%3Fc%23d%25e?mode=ro&immutable=1");
    }
}
