//! The page (`web/inspector/`) and the JSON API under `/api`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::replay::{self, Refused};
use super::Shared;

#[derive(rust_embed::RustEmbed)]
#[folder = "../../web/"]
#[include = "inspector/*"]
#[include = "app.css"]
struct Assets;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(|| asset("inspector/index.html")))
        .route("/inspector.js", get(|| asset("inspector/inspector.js")))
        .route("/inspector.css", get(|| asset("inspector/inspector.css")))
        .route("/app.css", get(|| asset("app.css")))
        .route("/api/tunnels", get(tunnels))
        .route("/api/requests", get(requests).delete(clear))
        .route("/api/requests/{id}", get(request))
        .route("/api/requests/{id}/replay", post(replay_request))
        .route("/api/websockets", get(websockets))
        .route("/api/websockets/{id}", get(websocket))
        .route("/api/websockets/{id}/messages/{seq}/resend", post(resend))
        .route("/api/websockets/{id}/export", get(export))
        .with_state(shared)
}

async fn asset(path: &str) -> Response {
    match Assets::get(path) {
        Some(file) => (
            [(header::CONTENT_TYPE, file.metadata.mimetype().to_owned())],
            file.data.into_owned(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn not_found(what: &str, id: u64) -> Refused {
    Refused(
        StatusCode::NOT_FOUND,
        format!("no {what} {id} (it may have been dropped: the inspector keeps the latest ones)"),
    )
}

#[derive(Debug, Deserialize)]
struct Filter {
    tunnel: Option<String>,
    /// At most this many, the newest.
    limit: Option<usize>,
}

async fn tunnels(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let store = shared.lock();
    let tunnels: Vec<Value> = store.tunnels.iter().map(|t| t.to_json(&store)).collect();
    Json(json!({ "tunnels": tunnels }))
}

async fn requests(State(shared): State<Arc<Shared>>, Query(filter): Query<Filter>) -> Json<Value> {
    let store = shared.lock();
    let matching: Vec<Value> = store
        .requests
        .iter()
        .rev()
        .filter(|r| filter.tunnel.as_ref().is_none_or(|t| &r.tunnel == t))
        .take(filter.limit.unwrap_or(usize::MAX))
        .map(|r| r.summary())
        .collect();
    Json(json!({ "requests": matching.into_iter().rev().collect::<Vec<_>>() }))
}

async fn request(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, Refused> {
    let store = shared.lock();
    store
        .request(id)
        .map(|r| Json(r.detail()))
        .ok_or_else(|| not_found("request", id))
}

/// Forgets every exchange and every closed WebSocket.
async fn clear(State(shared): State<Arc<Shared>>) -> StatusCode {
    let mut store = shared.lock();
    store.requests.clear();
    store.request_ids.clear();
    store.websockets.retain(|w| w.closed_ms.is_none());
    let open: std::collections::HashSet<u64> = store.websockets.iter().map(|w| w.id).collect();
    store.websocket_ids.retain(|_, id| open.contains(id));
    StatusCode::NO_CONTENT
}

async fn replay_request(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, Refused> {
    let new_id = replay::replay_request(&shared, id).await?;
    let store = shared.lock();
    let detail = store.request(new_id).map(|r| r.detail());
    Ok(Json(json!({ "id": new_id, "request": detail })))
}

async fn websockets(
    State(shared): State<Arc<Shared>>,
    Query(filter): Query<Filter>,
) -> Json<Value> {
    let store = shared.lock();
    let matching: Vec<Value> = store
        .websockets
        .iter()
        .rev()
        .filter(|w| filter.tunnel.as_ref().is_none_or(|t| &w.tunnel == t))
        .take(filter.limit.unwrap_or(usize::MAX))
        .map(|w| w.summary())
        .collect();
    Json(json!({ "websockets": matching.into_iter().rev().collect::<Vec<_>>() }))
}

async fn websocket(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, Refused> {
    let store = shared.lock();
    store
        .websocket(id)
        .map(|w| Json(w.detail()))
        .ok_or_else(|| not_found("WebSocket", id))
}

async fn resend(
    State(shared): State<Arc<Shared>>,
    Path((id, seq)): Path<(u64, u64)>,
) -> Result<Json<Value>, Refused> {
    replay::resend(&shared, id, seq).await.map(Json)
}

async fn export(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
) -> Result<Response, Refused> {
    let script = replay::export(&shared, id)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/x-shellscript; charset=utf-8".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"websocket-{id}.sh\""),
            ),
        ],
        script,
    )
        .into_response())
}
