//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of the `/v1` API, `docs/openapi.json`
//! embedded at build time so the served bytes are the checked-in ones. It needs no token: it
//! describes the API, not any actor's data.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The checked-in document.
pub const DOCUMENT: &str = include_str!("../../../../docs/openapi.json");

pub async fn document() -> Response {
    let mut response = DOCUMENT.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_is_openapi_3_1_json() {
        let document: serde_json::Value = serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON");
        assert_eq!(document["openapi"], "3.1.0");
        for path in ["/v1/actors", "/v1/actors/{id}", "/v1/actors/{id}/query", "/v1/openapi.json"] {
            assert!(document["paths"][path].is_object(), "{path} is documented");
        }
    }
}
