//! The admin listener (its own Pingora service): the REST API, the dashboard page and
//! the overlay of API changes persisted in `admin.state_file` and shared through
//! `cluster.redis`.

pub mod api;
pub mod audit;
pub mod auth;
pub mod backends_api;
pub mod cache_api;
pub mod cache_sync;
pub mod jwt;
mod redis_link;
pub mod roles;
pub mod rollout;
mod rollout_api;
pub mod stats_view;
pub mod sync;
pub mod view;

use crate::serve::reply::respond;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

pub struct AdminApp(pub api::Api);

/// Reads the request body, `None` when it exceeds `limit`.
pub async fn read_body(session: &mut ServerSession, limit: usize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > limit {
                    return None;
                }
            }
            Ok(None) => return Some(body),
            Err(_) => return Some(body),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let Some(body) = read_body(session, api::MAX_BODY).await else {
            return respond(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "application/json",
                br#"{"error":"request body too large","field":"body"}"#.to_vec(),
            );
        };
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| crate::net::canonical(a.ip()));
        let req = session.req_header();
        let authorization = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let request = api::Request {
            method: &req.method,
            path: req.uri.path(),
            client,
            authorization,
            body: &body,
            query: req.uri.query(),
        };
        let reply = self.0.handle(&request).await;
        respond(reply.status, reply.content_type, reply.body)
    }
}
