//! The JSON pub/sub protocol of docs/PROTOCOL.md: browser clients subscribe,
//! publish, join rooms and resume from a position with no server code.

use std::sync::Arc;

use serde_json::{json, Value};
use sockeye_proto::{Message, PreparedMessage};

use crate::conn::{Conn, SubscribeError};
use crate::endpoint::{AuthRejection, Endpoint, EndpointConfig};
use crate::hub::{Encoder, Kind, Position, Publication, Resume};

/// The longest topic or room name accepted.
pub const MAX_TOPIC_LEN: usize = 128;

/// The hub encoder for this protocol: each publication becomes one
/// `{"type":"message",...}` or `{"type":"presence",...}` frame, made once.
pub fn json_encoder() -> Encoder {
    Arc::new(|p: &Publication| PreparedMessage::text(envelope(p)))
}

fn envelope(p: &Publication) -> String {
    match &p.kind {
        Kind::Message => {
            let data = if serde_json::from_slice::<serde::de::IgnoredAny>(&p.payload).is_ok() {
                String::from_utf8_lossy(&p.payload).into_owned()
            } else {
                Value::String(String::from_utf8_lossy(&p.payload).into_owned()).to_string()
            };
            let position = p.position.as_ref().map_or_else(
                || "null".to_string(),
                |pos| serde_json::to_string(pos).unwrap_or_default(),
            );
            format!(
                r#"{{"type":"message","topic":{},"data":{},"from":{},"position":{}}}"#,
                Value::String(p.topic.to_string()),
                data,
                p.from
                    .as_ref()
                    .map_or(Value::Null, |f| Value::String(f.clone())),
                position
            )
        }
        Kind::Join { user, count } | Kind::Leave { user, count } => {
            let event = if matches!(p.kind, Kind::Join { .. }) {
                "join"
            } else {
                "leave"
            };
            json!({"type": "presence", "room": &*p.topic, "event": event, "user": user, "count": count}).to_string()
        }
    }
}

/// Whether `name` may be used as a user id: 1 to 32 of `[A-Za-z0-9_-]`.
pub fn valid_user(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An endpoint that speaks the protocol. The user id comes from the
/// `?user=NAME` query parameter (anonymous without it).
pub fn pubsub_endpoint(config: EndpointConfig) -> Endpoint {
    Endpoint::new(config)
        .auth(|request| async move {
            match request.query("user") {
                None => Ok(None),
                Some(user) if valid_user(&user) => Ok(Some(user)),
                Some(_) => Err(AuthRejection {
                    status: http::StatusCode::BAD_REQUEST,
                    message: "user must be 1 to 32 letters, digits, '_' or '-'".into(),
                }),
            }
        })
        .on_open(|conn| async move {
            let user = conn.user().unwrap_or_else(|| format!("anon-{}", conn.id()));
            conn.send_text(
                json!({"type": "welcome", "user": user, "connection": format!("c{}", conn.id())})
                    .to_string(),
            );
        })
        .on_message(|conn, message| async move {
            let reply = match message {
                Message::Text(text) => handle(&conn, text.as_str()).await,
                _ => Some(error(
                    &Value::Null,
                    "bad_json",
                    "binary messages are not part of the protocol; send JSON text",
                )),
            };
            if let Some(reply) = reply.filter(|r| !r.is_null()) {
                conn.send_text(reply.to_string());
            }
        })
}

fn error(id: &Value, code: &str, message: &str) -> Value {
    let mut e = json!({"type": "error", "code": code, "message": message});
    if !id.is_null() {
        e["id"] = id.clone();
    }
    e
}

fn ack(id: &Value, op: &str) -> Value {
    let mut a = json!({"type": "ack", "op": op});
    if !id.is_null() {
        a["id"] = id.clone();
    }
    a
}

/// Topic prefixes only the server publishes to.
pub const SERVER_ONLY_PREFIXES: [&str; 2] = ["feed:", "dashboard:"];

type Reply = Result<Value, Value>;

fn name<'a>(request: &'a Value, field: &str, id: &Value) -> Result<&'a str, Value> {
    match request.get(field) {
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= MAX_TOPIC_LEN && !s.chars().any(char::is_control) =>
        {
            Ok(s)
        }
        Some(Value::String(_)) => Err(error(
            id,
            "invalid_field",
            &format!("{field} must be 1 to {MAX_TOPIC_LEN} bytes without control characters"),
        )),
        Some(_) => Err(error(
            id,
            "invalid_field",
            &format!("{field} must be a string"),
        )),
        None => Err(error(
            id,
            "missing_field",
            &format!("this request needs a \"{field}\" field"),
        )),
    }
}

fn since(request: &Value, id: &Value) -> Result<Option<Position>, Value> {
    match request.get("since") {
        None | Some(Value::Null) => Ok(None),
        Some(since) => serde_json::from_value(since.clone())
            .map(Some)
            .map_err(|_| {
                error(
                    id,
                    "invalid_field",
                    "since must be {\"epoch\": string, \"offset\": number}",
                )
            }),
    }
}

fn subscribe_error(id: &Value, e: SubscribeError) -> Value {
    match e {
        SubscribeError::TooManyTopics(_) => error(id, "too_many_topics", &e.to_string()),
        SubscribeError::Broker(b) => error(id, "unavailable", &b.to_string()),
    }
}

fn gap(conn: &Conn, topic: &str) {
    conn.send_text(json!({"type": "gap", "topic": topic, "message": "history no longer covers your position; reload state"}).to_string());
}

/// Handles one request; returns the reply (ack or error), if any.
async fn handle(conn: &Conn, text: &str) -> Option<Value> {
    let request: Value = match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) => {
            return Some(error(
                &Value::Null,
                "bad_json",
                "each message must be a JSON object",
            ))
        }
        Err(e) => {
            return Some(error(
                &Value::Null,
                "bad_json",
                &format!("not valid JSON: {e}"),
            ))
        }
    };
    let id = match request.get("id") {
        None => Value::Null,
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        Some(_) => {
            return Some(error(
                &Value::Null,
                "invalid_field",
                "id must be a string or a number",
            ))
        }
    };
    let Some(kind) = request.get("type").and_then(Value::as_str) else {
        return Some(error(
            &id,
            "missing_field",
            "every request needs a \"type\" field",
        ));
    };
    let reply = match kind {
        "subscribe" | "join" => subscribe(conn, &request, &id, kind).await,
        "unsubscribe" | "leave" => unsubscribe(conn, &request, &id, kind).await,
        "publish" => publish(conn, &request, &id).await,
        "members" => members(conn, &request, &id).await,
        other => Err(error(
            &id,
            "unknown_type",
            &format!("unknown type {other:?}; expected subscribe, unsubscribe, publish, join, leave or members"),
        )),
    };
    Some(reply.unwrap_or_else(|e| e))
}

/// `subscribe` and `join`: the answer (and a gap notice) go out before any
/// message of the topic, so deliveries are held until the ack is queued.
async fn subscribe(conn: &Conn, request: &Value, id: &Value, kind: &str) -> Reply {
    let field = if kind == "join" { "room" } else { "topic" };
    let topic = name(request, field, id)?;
    let since = since(request, id)?;
    let fresh = !conn.is_subscribed(topic);
    conn.hold();
    let outcome = async {
        let resume = match (&since, kind) {
            (Some(since), "join") => Some(conn.join_since(topic, since).await?.0),
            (Some(since), _) => Some(conn.subscribe_since(topic, since).await?),
            (None, "join") => {
                conn.join(topic).await?;
                None
            }
            (None, _) => {
                conn.subscribe(topic).await?;
                None
            }
        };
        let position = conn.latest(topic).await?;
        Ok::<_, SubscribeError>((resume, position))
    }
    .await;
    let reply = match outcome {
        Ok((resume, position)) => {
            if matches!(resume, Some(Resume::Gap)) {
                gap(conn, topic);
            }
            let mut reply = ack(id, kind);
            reply[field] = json!(topic);
            reply["position"] = json!(position);
            conn.send_text(reply.to_string());
            // Publications that arrived while the subscription was made
            // and that the ack's position counts do not follow the ack
            // (PROTOCOL.md: the ack carries the position of the last message
            // published before the subscription took effect). A replay's
            // are what the client asked for; an existing subscriber's are
            // its live messages.
            if fresh && !matches!(resume, Some(Resume::Replay(_))) {
                conn.release_after(topic, &position);
            } else {
                conn.release();
            }
            return Ok(Value::Null);
        }
        Err(e) => Err(subscribe_error(id, e)),
    };
    conn.release();
    reply
}

async fn unsubscribe(conn: &Conn, request: &Value, id: &Value, kind: &str) -> Reply {
    let field = if kind == "leave" { "room" } else { "topic" };
    let topic = name(request, field, id)?;
    if kind == "leave" {
        conn.leave(topic)
            .await
            .map_err(|e| subscribe_error(id, e))?;
    } else {
        conn.unsubscribe(topic);
    }
    let mut reply = ack(id, kind);
    reply[field] = json!(topic);
    Ok(reply)
}

async fn publish(conn: &Conn, request: &Value, id: &Value) -> Reply {
    let topic = name(request, "topic", id)?;
    if SERVER_ONLY_PREFIXES.iter().any(|p| topic.starts_with(p)) {
        return Err(error(
            id,
            "forbidden",
            &format!("clients cannot publish to {topic}"),
        ));
    }
    let data = request
        .get("data")
        .ok_or_else(|| error(id, "missing_field", "publish needs a \"data\" field"))?;
    let position = conn
        .publish(topic, data.to_string(), true)
        .await
        .map_err(|e| error(id, "unavailable", &e.to_string()))?;
    let mut reply = ack(id, "publish");
    reply["topic"] = json!(topic);
    reply["position"] = json!(position);
    Ok(reply)
}

async fn members(conn: &Conn, request: &Value, id: &Value) -> Reply {
    let room = name(request, "room", id)?;
    let users = conn
        .shared
        .endpoint
        .hub
        .members(room)
        .await
        .map_err(|e| error(id, "unavailable", &e.to_string()))?;
    let mut reply = json!({"type": "members", "room": room, "count": users.len(), "users": users});
    if !id.is_null() {
        reply["id"] = id.clone();
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn envelopes_embed_json_data_and_quote_text() {
        let position = Some(Position {
            epoch: "e1".into(),
            offset: 7,
        });
        let p = Publication::new(
            Arc::from("lobby"),
            position,
            Bytes::from(r#"{"text":"hi"}"#),
            true,
            Some("alice".into()),
            Kind::Message,
        );
        let v: Value = serde_json::from_str(&envelope(&p)).unwrap();
        assert_eq!(
            v,
            json!({"type":"message","topic":"lobby","data":{"text":"hi"},"from":"alice","position":{"epoch":"e1","offset":7}})
        );
        let p = Publication::new(
            Arc::from("t"),
            None,
            Bytes::from("plain \"text\""),
            true,
            None,
            Kind::Message,
        );
        let v: Value = serde_json::from_str(&envelope(&p)).unwrap();
        assert_eq!(v["data"], json!("plain \"text\""));
        assert_eq!(v["from"], Value::Null);
    }

    #[test]
    fn user_names() {
        assert!(valid_user("alice_1-x"));
        assert!(!valid_user(""));
        assert!(!valid_user("a b"));
        assert!(!valid_user(&"a".repeat(33)));
    }
}
