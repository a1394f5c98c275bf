//! The practical ceiling of the query path: an HTTP endpoint on the same stack as the query API
//! (axum + the redis crate's multiplexed connection) that answers
//! `GET /v1/members?kind=K&value=V` with exactly one Redis `GET bench:K:V`, and
//! `GET /v1/members/{id}` with one `GET bench:id:{id}`, and nothing else (no authentication,
//! routing, breakers or limits).

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use redis::aio::MultiplexedConnection;

/// The key the baseline reads for one identity (the benchmark stores the query API's document
/// under it).
pub fn key(kind: &str, value: &str) -> String {
    format!("bench:{kind}:{value}")
}

pub async fn serve(listen: SocketAddr, redis_url: &str) -> anyhow::Result<()> {
    let conn = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await
        .context("connecting to redis")?;
    let app = Router::new()
        .route("/v1/members", get(lookup))
        .route("/v1/members/{id}", get(by_id))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(conn);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    axum::serve(listener, app).await.context("serving")
}

async fn by_id(State(conn): State<MultiplexedConnection>, Path(id): Path<String>) -> Response {
    one_get(conn, key("id", &id)).await
}

async fn lookup(
    State(conn): State<MultiplexedConnection>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (Some(kind), Some(value)) = (q.get("kind"), q.get("value")) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    one_get(conn, key(kind, value)).await
}

async fn one_get(mut conn: MultiplexedConnection, key: String) -> Response {
    let body: redis::RedisResult<Option<Vec<u8>>> =
        redis::cmd("GET").arg(key).query_async(&mut conn).await;
    match body {
        Ok(Some(body)) => ([("content-type", "application/json")], body).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
