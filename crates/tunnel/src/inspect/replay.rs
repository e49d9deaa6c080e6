//! The page's buttons: replay an HTTP request against the local server,
//! resend a captured WebSocket message on a new connection to it, and
//! export a connection as a `sockeye connect` script.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sockeye::Message;
use sockeye_proxy::Direction;

use super::capture::opcode_name;
use super::store::{content_json, header_pairs, now_ms, BodyRecord, Exchange, Store, WsRecord};
use super::Shared;

/// How long a replayed request may take, and how long a resend waits for
/// replies.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);
const RESEND_WAIT: Duration = Duration::from_secs(1);

/// Headers not sent again: they describe the hop or the old connection.
const SKIP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "host",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
];

/// The recorded headers worth sending again: not [`SKIP`]ped, and still
/// valid as header names and values.
fn resendable(
    headers: &[(String, String)],
) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
    headers
        .iter()
        .filter(|(name, _)| !SKIP.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            ))
        })
}

/// Why a button could not do its work: shown on the page as it is.
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) http::StatusCode, pub(crate) String);

fn tunnel_local(store: &Store, tunnel: &str) -> Result<(String, Option<String>), Refused> {
    let record = store
        .tunnels
        .iter()
        .find(|t| t.info.name == tunnel)
        .ok_or_else(|| Refused(http::StatusCode::NOT_FOUND, format!("no tunnel {tunnel}")))?;
    Ok((record.info.local.clone(), record.info.host_header.clone()))
}

/// `http://host:port` of the local server, as host and port.
fn authority(local: &str) -> Result<http::uri::Authority, Refused> {
    let uri: http::Uri = local.parse().map_err(|_| {
        Refused(
            http::StatusCode::BAD_REQUEST,
            format!("the local server {local} is not a URL"),
        )
    })?;
    if uri.scheme_str() != Some("http") {
        return Err(Refused(
            http::StatusCode::BAD_REQUEST,
            format!("replay supports http:// local servers, not {local}"),
        ));
    }
    uri.authority().cloned().ok_or_else(|| {
        Refused(
            http::StatusCode::BAD_REQUEST,
            format!("the local server {local} has no host"),
        )
    })
}

/// Sends exchange `id`'s request to the local server again and records
/// what comes back as a new exchange; returns its id.
pub(crate) async fn replay_request(shared: &Shared, id: u64) -> Result<u64, Refused> {
    let original = shared
        .lock()
        .request(id)
        .cloned()
        .ok_or_else(|| Refused(http::StatusCode::NOT_FOUND, format!("no request {id}")))?;
    if original.upgrade {
        return Err(Refused(
            http::StatusCode::CONFLICT,
            "a WebSocket upgrade cannot be replayed; resend its messages instead".into(),
        ));
    }
    if !original.request_body.whole() {
        return Err(Refused(
            http::StatusCode::CONFLICT,
            format!(
                "the request body was not kept whole ({} of {} bytes), so it cannot be replayed",
                original.request_body.kept.len(),
                original.request_body.size
            ),
        ));
    }
    let (local, host_header) = tunnel_local(&shared.lock(), &original.tunnel)?;
    let authority = authority(&local)?;
    let host = host_header.unwrap_or_else(|| authority.to_string());
    let mut request = Request::builder()
        .method(original.method.as_str())
        .uri(original.uri.as_str())
        .header(http::header::HOST, host);
    for (name, value) in resendable(&original.request_headers) {
        request = request.header(name, value);
    }
    let body = Bytes::from(original.request_body.kept.clone());
    let request = request
        .body(Full::new(body.clone()))
        .map_err(|e| Refused(http::StatusCode::BAD_REQUEST, e.to_string()))?;
    let record_id = {
        let mut store = shared.lock();
        let new_id = store.next_id();
        let exchange = Exchange {
            id: new_id,
            replay_of: Some(id),
            started_ms: now_ms(),
            remote: "inspector".into(),
            request_headers: header_pairs(request.headers()),
            request_body: BodyRecord {
                kept: body.to_vec(),
                size: body.len() as u64,
                ended: true,
                complete: true,
            },
            status: None,
            response_headers: Vec::new(),
            response_body: BodyRecord::default(),
            source: None,
            duration_ms: None,
            websocket: None,
            error: None,
            ..original
        };
        store.push_request(exchange, &shared.config);
        new_id
    };
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(
        REPLAY_TIMEOUT,
        send(&authority, request, shared.config.body_cap),
    )
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {REPLAY_TIMEOUT:?}")));
    let event = {
        let mut store = shared.lock();
        let Some(exchange) = store.request_mut(record_id) else {
            return Ok(record_id);
        };
        exchange.duration_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        match outcome {
            Ok((status, headers, body)) => {
                exchange.status = Some(status);
                exchange.response_headers = headers;
                exchange.response_body = body;
                exchange.source = Some("backend");
            }
            Err(error) => exchange.error = Some(error),
        }
        json!({ "type": "request", "request": exchange.summary() })
    };
    shared.emit(&event);
    Ok(record_id)
}

type Answer = (u16, Vec<(String, String)>, BodyRecord);

async fn send(
    authority: &http::uri::Authority,
    request: Request<Full<Bytes>>,
    cap: usize,
) -> Result<Answer, String> {
    let port = authority.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| format!("cannot reach the local server {authority}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = header_pairs(response.headers());
    let mut body = response.into_body();
    let mut record = BodyRecord::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            record.size += data.len() as u64;
            let room = cap.saturating_sub(record.kept.len());
            record.kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    record.ended = true;
    record.complete = true;
    Ok((status, headers, record))
}

/// The `ws://` URL of `record`'s path on the local server.
fn local_ws_url(local: &str, record: &WsRecord) -> Result<String, Refused> {
    let authority = authority(local)?;
    Ok(format!("ws://{authority}{}", record.uri))
}

/// The recorded WebSocket `id`, or a 404 naming it.
fn find_websocket(store: &Store, id: u64) -> Result<&WsRecord, Refused> {
    store
        .websocket(id)
        .ok_or_else(|| Refused(http::StatusCode::NOT_FOUND, format!("no WebSocket {id}")))
}

/// Opens a new connection to the local server like `websocket`'s (same
/// path, subprotocol, Origin, cookies), sends captured message `seq`, and
/// returns what came back within a second.
pub(crate) async fn resend(shared: &Shared, websocket: u64, seq: u64) -> Result<Value, Refused> {
    let (url, message, protocol, headers) = {
        let store = shared.lock();
        let record = find_websocket(&store, websocket)?;
        let capture = record.capture.as_ref().ok_or_else(|| {
            Refused(
                http::StatusCode::CONFLICT,
                "this connection was not captured; start the tunnel with --capture-frames".into(),
            )
        })?;
        let message = capture.message(seq).ok_or_else(|| {
            Refused(
                http::StatusCode::NOT_FOUND,
                format!("message {seq} is no longer kept"),
            )
        })?;
        if message.direction != Direction::ClientToBackend || message.opcode.is_control() {
            return Err(Refused(
                http::StatusCode::CONFLICT,
                "only messages the client sent can be resent to the local server".into(),
            ));
        }
        if !message.whole {
            return Err(Refused(
                http::StatusCode::CONFLICT,
                format!(
                    "only the first {} bytes of this message were kept, so it cannot be resent",
                    message.data.len()
                ),
            ));
        }
        let (local, _) = tunnel_local(&store, &record.tunnel)?;
        (
            local_ws_url(&local, record)?,
            message.clone(),
            record.protocol.clone(),
            record.request_headers.clone(),
        )
    };
    let mut config = sockeye::Config::default();
    if let Some(protocol) = protocol {
        config = config.protocols([protocol]);
    }
    for (name, value) in resendable(&headers) {
        config = config.header(name, value);
    }
    let (mut ws, _) = sockeye::connect_with(&url, &config)
        .await
        .map_err(|e| Refused(http::StatusCode::BAD_GATEWAY, format!("{url}: {e}")))?;
    let outgoing = match message.opcode {
        sockeye_proto::OpCode::Text => match String::from_utf8(message.data.clone()) {
            Ok(text) => Message::text(text),
            Err(_) => Message::binary(message.data.clone()),
        },
        _ => Message::binary(message.data.clone()),
    };
    ws.send(outgoing)
        .await
        .map_err(|e| Refused(http::StatusCode::BAD_GATEWAY, format!("{url}: {e}")))?;
    let mut replies = Vec::new();
    let deadline = tokio::time::Instant::now() + RESEND_WAIT;
    let mut closed = None;
    while replies.len() < 20 {
        match tokio::time::timeout_at(deadline, ws.recv()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                replies.push(json!({"opcode": "text", "preview": content_json(text.as_bytes())}))
            }
            Ok(Some(Ok(Message::Binary(data)))) => {
                replies.push(json!({"opcode": "binary", "preview": content_json(&data)}))
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                closed = Some(frame.map(|f| u16::from(f.code)));
                break;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => break,
        }
    }
    let _ = ws.close(None).await;
    Ok(json!({
        "url": url,
        "sent": {"opcode": opcode_name(message.opcode), "size": message.data.len()},
        "replies": replies,
        "closed_by_server": closed,
    }))
}

/// `sockeye connect` with the connection's handshake and every message
/// its client sent that was kept whole, as a shell script.
pub(crate) fn export(shared: &Shared, websocket: u64) -> Result<String, Refused> {
    let store = shared.lock();
    let record = find_websocket(&store, websocket)?;
    let (local, _) = tunnel_local(&store, &record.tunnel)?;
    let url = local_ws_url(&local, record)?;
    let mut script = format!(
        "#!/bin/sh\n# WebSocket {} of tunnel {} ({}), exported by the sockeye inspector.\n\
         # Replays what the client sent, against the local server; replies are printed.\n",
        record.id, record.tunnel, record.uri
    );
    let mut command = format!("sockeye connect {}", quote(&url));
    if let Some(protocol) = &record.protocol {
        command += &format!(" \\\n  --subprotocol {}", quote(protocol));
    }
    for (name, value) in &record.request_headers {
        if name == "origin" {
            command += &format!(" \\\n  --origin {}", quote(value));
        } else if name == "cookie" || name == "authorization" || name.starts_with("x-") {
            command += &format!(" \\\n  -H {}", quote(&format!("{name}: {value}")));
        }
    }
    if record
        .extensions
        .as_deref()
        .is_some_and(|e| e.contains("permessage-deflate"))
    {
        command += " \\\n  --compress";
    }
    let capture = record.capture.as_ref().ok_or_else(|| {
        Refused(
            http::StatusCode::CONFLICT,
            "this connection was not captured; start the tunnel with --capture-frames".into(),
        )
    })?;
    if capture.dropped > 0 {
        script += &format!(
            "# The first {} messages were no longer kept and are missing.\n",
            capture.dropped
        );
    }
    for message in &capture.messages {
        if message.direction != Direction::ClientToBackend || message.opcode.is_control() {
            continue;
        }
        match (message.opcode, std::str::from_utf8(&message.data)) {
            (sockeye_proto::OpCode::Text, Ok(text)) if message.whole => {
                command += &format!(" \\\n  -x {}", quote(text));
            }
            _ => {
                script += &format!(
                    "# message {} ({} bytes, {}) left out: {}\n",
                    message.seq,
                    message.inflated_size.unwrap_or(message.wire_size),
                    opcode_name(message.opcode),
                    if message.whole {
                        "binary messages cannot be given with -x"
                    } else {
                        "not kept whole"
                    }
                );
            }
        }
    }
    script += &command;
    script += " \\\n  --wait 2\n";
    Ok(script)
}

/// `text` in single quotes for sh.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
