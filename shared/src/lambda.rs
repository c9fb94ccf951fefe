//! The adapter between lambda_http's events and [`crate::api`]: the only Lambda-specific
//! code, shared by every HTTP function so each `main` stays a few lines.

use bytes::Bytes;
use lambda_http::{Body, Request, RequestExt, Response};

use crate::api::{self, Endpoint};
use crate::service::Service;

/// Converts an API Gateway / Function URL request into a plain `http::Request`,
/// using the path without the stage prefix (`raw_http_path`).
pub fn to_http(event: Request) -> http::Request<Bytes> {
    let path = event.raw_http_path().to_string();
    let (mut parts, body) = event.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    if let Ok(uri) = path_and_query.parse() {
        parts.uri = uri;
    }
    let body = match body {
        Body::Empty => Bytes::new(),
        Body::Text(t) => Bytes::from(t),
        Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    http::Request::from_parts(parts, body)
}

/// Converts a response back; JSON and text bodies stay text so API Gateway does not
/// base64-encode them.
pub fn from_http(resp: http::Response<Bytes>) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    let body = match String::from_utf8(body.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    };
    Response::from_parts(parts, body)
}

/// Answers one Lambda invocation as `endpoint`.
pub fn respond(svc: &Service, endpoint: Endpoint, event: Request) -> Response<Body> {
    from_http(api::handle(svc, endpoint, &to_http(event)))
}
