//! Export and import of whole actor databases as plain SQLite files.
//!
//! Both go through a spool file in the system's temporary folder, so memory stays bounded
//! whatever the database size: export writes a consistent copy with SQLite's backup API and
//! streams it; import streams the body to disk (counting it against the limit), checks it, and
//! replaces the actor's database in one SQLite transaction.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::Value as JsonValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::api::{actor_id, existing_size};
use super::error::ApiError;
use super::json::empty_object;
use super::AppState;

const SPOOL_CHUNK_BYTES: usize = 64 << 10;

fn spool() -> Result<tempfile::NamedTempFile, ApiError> {
    tempfile::Builder::new().prefix("roost-spool-").tempfile().map_err(|e| {
        tracing::error!(error = %e, "cannot create a spool file");
        ApiError::internal()
    })
}

pub async fn export(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = actor_id(&id)?;
    state.auth().check_actor(&headers, &id)?;
    existing_size(&state, &id).await?;
    let file = spool()?;
    let path = file.path().to_path_buf();
    state.host().with_db(&id, move |db| db.export_to(&path)).await?;
    let reader = tokio::fs::File::open(file.path()).await.map_err(|_| ApiError::internal())?;
    let length = reader.metadata().await.map_err(|_| ApiError::internal())?.len();
    // The spool file lives as long as the stream that reads it.
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
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<JsonValue>, ApiError> {
    let id = actor_id(&id)?;
    state.auth().check_actor(&headers, &id)?;
    let limit = state.config().import_bytes_max;
    let file = spool()?;
    let mut writer = tokio::fs::File::create(file.path()).await.map_err(|_| ApiError::internal())?;
    let mut body = request.into_body().into_data_stream();
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("cannot read the request body"))?;
        written += chunk.len() as u64;
        if written > limit {
            return Err(ApiError::too_large(format!(
                "the upload is larger than the import limit ({limit} bytes)"
            )));
        }
        writer.write_all(&chunk).await.map_err(|_| ApiError::internal())?;
    }
    writer.flush().await.map_err(|_| ApiError::internal())?;
    drop(writer);
    let path = file.path().to_path_buf();
    state.host().with_db(&id, move |db| db.import_from(&path)).await?;
    drop(file);
    Ok(Json(empty_object()))
}
