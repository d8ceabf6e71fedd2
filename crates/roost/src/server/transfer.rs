//! Export and import of whole actor databases as plain SQLite files.
//!
//! Both go through a spool file (see `spool`: in the scratch folder, its bytes capped
//! process-wide), so memory stays bounded whatever the database size: export writes a
//! consistent copy with SQLite's backup API and streams it; import checks the SQLite header
//! before anything else (4096-byte pages; a WAL-mode header is converted to the rollback-journal
//! format in the spooled copy), streams the body to disk (counting it against the per-upload
//! limit and the spool cap), then the storage checks the copy without creating any file beside
//! it and replaces the actor's database in one SQLite transaction.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::Value as JsonValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::api::{existing_size, ActorPath};
use super::error::ApiError;
use super::json::empty_object;
use super::spool::Spool;
use super::AppState;
use crate::vfs::{prepare_upload_header, UPLOAD_HEADER_BYTES};

const SPOOL_CHUNK_BYTES: usize = 64 << 10;

fn spool(state: &AppState) -> Result<Spool, ApiError> {
    let dir = state.host().storage().scratch_dir();
    Spool::create(dir, state.spool_budget().clone(), state.config().retry_after_ms)
}

fn spool_error(error: &std::io::Error) -> ApiError {
    tracing::error!(error = %error, "cannot write a spool file");
    if error.kind() == std::io::ErrorKind::StorageFull {
        return ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "storage_full",
            "no disk space left to spool the file",
        );
    }
    ApiError::internal()
}

pub async fn export(
    State(state): State<AppState>,
    ActorPath(id): ActorPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.auth().check_actor(&headers, &id)?;
    let size = existing_size(&state, &id).await?;
    let mut file = spool(&state)?;
    file.reserve_total(size)?;
    let path = file.path().to_path_buf();
    state.host().with_db(&id, move |db| db.export_to(&path)).await?;
    let reader = tokio::fs::File::open(file.path()).await.map_err(|e| spool_error(&e))?;
    let length = reader.metadata().await.map_err(|e| spool_error(&e))?.len();
    // The actor may have grown since its size was read.
    file.reserve_total(length)?;
    // The spool file (and its reservation) lives as long as the stream that reads it.
    let stream = futures_util::stream::unfold((reader, file), |(mut reader, file)| async move {
        let mut chunk = vec![0u8; SPOOL_CHUNK_BYTES];
        match reader.read(&mut chunk).await {
            Ok(0) => None,
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok::<_, std::io::Error>(chunk), (reader, file)))
            }
            Err(e) => Some((Err(e), (reader, file))),
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.sqlite3"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let disposition = format!("attachment; filename=\"{id}.sqlite3\"");
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(|_| ApiError::internal())?,
    );
    Ok(response)
}

pub async fn import(
    State(state): State<AppState>,
    ActorPath(id): ActorPath,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<JsonValue>, ApiError> {
    state.auth().check_actor(&headers, &id)?;
    let limit = state.config().import_bytes_max;
    let mut file = spool(&state)?;
    let converted = receive(&mut file, request, limit).await?;
    if converted {
        tracing::info!(actor = %id, "import: converted a WAL-mode upload to the rollback-journal format");
    }
    let path = file.path().to_path_buf();
    state.host().with_db(&id, move |db| db.import_from(&path)).await?;
    drop(file);
    Ok(Json(empty_object()))
}

fn too_large(limit: u64) -> ApiError {
    ApiError::too_large(format!("the upload is larger than the import limit ({limit} bytes)"))
}

/// Streams the body into `file`, reserving spool bytes as they arrive; returns whether a
/// WAL-mode header was converted. A body over `limit` is `payload_too_large` whatever it holds.
/// How much of an upload over the import limit is still read and discarded.
const IMPORT_DRAIN_BYTES_MAX: u64 = 64 << 20;

async fn receive(file: &mut Spool, request: Request, limit: u64) -> Result<bool, ApiError> {
    let writer = tokio::fs::OpenOptions::new().write(true).open(file.path()).await;
    let mut upload =
        Upload { writer: writer.map_err(|e| spool_error(&e))?, header: Vec::new(), state: Header::Pending };
    let mut body = request.into_body().into_data_stream();
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("cannot read the request body"))?;
        received += chunk.len() as u64;
        if received > limit {
            // Read on (discarding) so a client that sends its whole body before reading sees
            // the 413; past the bound the connection is dropped instead.
            super::body::drain(body, IMPORT_DRAIN_BYTES_MAX).await;
            return Err(too_large(limit));
        }
        if !matches!(upload.state, Header::Refused(_)) {
            file.reserve_total(received)?;
        }
        upload.push(chunk).await?;
    }
    upload.finish().await
}

enum Header {
    /// Fewer than `UPLOAD_HEADER_BYTES` received.
    Pending,
    Checked {
        converted: bool,
    },
    /// The rest of the body is read and dropped, so that clients that send the whole body
    /// before reading the answer get the reason, not a broken connection.
    Refused(ApiError),
}

/// An upload being written: its header is held back until it is complete and checked, so
/// nothing of a refused file reaches the disk and a converted header is written once.
struct Upload {
    writer: tokio::fs::File,
    header: Vec<u8>,
    state: Header,
}

impl Upload {
    async fn push(&mut self, chunk: Bytes) -> Result<(), ApiError> {
        let mut rest = &chunk[..];
        match self.state {
            Header::Refused(_) => return Ok(()),
            Header::Checked { .. } => {}
            Header::Pending => {
                let take = (UPLOAD_HEADER_BYTES - self.header.len()).min(rest.len());
                self.header.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if self.header.len() < UPLOAD_HEADER_BYTES {
                    return Ok(());
                }
                match prepare_upload_header(&mut self.header) {
                    Ok(converted) => self.state = Header::Checked { converted },
                    Err(e) => {
                        self.state = Header::Refused(e.into());
                        return Ok(());
                    }
                }
                self.writer.write_all(&self.header).await.map_err(|e| spool_error(&e))?;
            }
        }
        self.writer.write_all(rest).await.map_err(|e| spool_error(&e))
    }

    async fn finish(mut self) -> Result<bool, ApiError> {
        let converted = match self.state {
            Header::Checked { converted } => converted,
            Header::Refused(error) => return Err(error),
            // Shorter than a header: refused with the reason.
            Header::Pending => prepare_upload_header(&mut self.header)?,
        };
        self.writer.flush().await.map_err(|e| spool_error(&e))?;
        Ok(converted)
    }
}
