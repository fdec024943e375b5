//! `Idempotency-Key` on every POST: the same key and body return the first response and do
//! nothing twice; the same key with another body is refused with 422
//! `idempotency_key_reused`; a repeat while the first is still running gets 409.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use events::http::ApiError;
use runtime::Runtime;
use runtime::idempotency::{self, Claim};
use sha2::{Digest, Sha256};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The largest body buffered to hash it (the imports limit).
const MAX_BODY: usize = 64 << 20;
/// The largest response stored for replay.
const MAX_STORED_RESPONSE: usize = 1 << 20;

/// The middleware.
pub async fn layer(State(runtime): State<Runtime>, request: Request, next: Next) -> Response {
    // Admin actions are not replayable by key: a stored answer must never reach a caller
    // who has not passed the admin token.
    if request.method() != Method::POST || request.uri().path().starts_with("/admin") {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER).cloned() else {
        return next.run(request).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_owned(),
        _ => {
            return ApiError::invalid(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1–255 visible ASCII characters",
            )
            .into_response();
        }
    };
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the limit",
            )
            .into_response();
        }
    };
    let hash: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let db = runtime.db();
    match idempotency::claim(db, runtime.time(), &key, &method, &path, &hash).await {
        Err(e) => return ApiError::from_database(&e).into_response(),
        Ok(Claim::Mismatch) => {
            return ApiError::invalid(
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request body",
            )
            .into_response();
        }
        Ok(Claim::InProgress) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being handled; retry shortly",
            )
            .into_response();
        }
        Ok(Claim::Replay {
            status,
            content_type,
            body,
        }) => {
            let mut response =
                (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
            if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return response;
        }
        Ok(Claim::Fresh) => {}
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    if status.is_server_error() {
        // Our failure, not the client's: let the client retry with the same key.
        if let Err(e) = idempotency::release(db, &key, &method, &path).await {
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match to_bytes(body, MAX_STORED_RESPONSE).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "response too large to store for idempotent replay");
            let _ = idempotency::release(db, &key, &method, &path).await;
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the response could not be stored",
            )
            .into_response();
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let text = String::from_utf8_lossy(&bytes);
    if let Err(e) = idempotency::finish(
        db,
        &key,
        &method,
        &path,
        status.as_u16(),
        content_type,
        &text,
    )
    .await
    {
        tracing::warn!(error = %e, "could not store the response of an idempotent request");
    }
    Response::from_parts(parts, Body::from(bytes))
}
