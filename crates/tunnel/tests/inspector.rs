//! The inspector as a user sees it through its JSON API and live socket:
//! a proxy (the agent's forwarding) with the inspector as its observer, in
//! front of a local server with HTTP routes and an echo WebSocket.

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sockeye::{DeflateConfig, Message};
use sockeye_proxy::{Proxy, ProxyConfig};
use sockeye_server::{App, Endpoint, EndpointConfig};
use sockeye_tunnel::inspect::{Inspector, InspectorConfig, LinkStatus, TunnelInfo};
use tokio::net::TcpListener;

const STEP: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .expect("step timed out")
}

/// The developer's local server: `/hello`, `/upload` (answers with the
/// size it got) and `/echo` (WebSocket, permessage-deflate offered).
async fn local_server() -> SocketAddr {
    let echo = Endpoint::new(EndpointConfig {
        compression: Some(DeflateConfig::default()),
        protocols: vec!["chat.v1".into()],
        ..EndpointConfig::default()
    })
    .on_message(|conn, message| async move {
        let _ = conn.send(message);
    });
    let app = App::new()
        .route("/hello", get(|| async { "hello from the laptop" }))
        .route(
            "/upload",
            post(|body: Bytes| async move { format!("got {} bytes", body.len()) }),
        )
        .endpoint("/echo", echo);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(app.serve(listener, std::future::pending()));
    addr
}

struct Setup {
    proxy: SocketAddr,
    inspector: SocketAddr,
    handle: Inspector,
}

async fn setup(capture: bool, config: InspectorConfig) -> Setup {
    let local = local_server().await;
    let handle = Inspector::new(config);
    let observer = handle.tunnel(TunnelInfo {
        name: "ws-app".into(),
        public_url: "http://ws-app.tunnel.localhost".into(),
        local: format!("http://{local}"),
        host_header: None,
        capture_frames: capture,
    });
    handle.set_status("ws-app", LinkStatus::Connected);
    let proxy = Proxy::new(
        ProxyConfig::default()
            .to(&format!("http://{local}"))
            .unwrap()
            .observer(observer),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inspector = listener.local_addr().unwrap();
    tokio::spawn(handle.clone().serve(listener, std::future::pending()));
    Setup {
        proxy: proxy_addr,
        inspector,
        handle,
    }
}

/// One HTTP/1.1 request; the status and the body as text.
async fn request(addr: SocketAddr, method: &str, path: &str, body: Vec<u8>) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "ws-app.tunnel.localhost")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    let status = response.status().as_u16();
    let body = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = request(addr, "GET", path, Vec::new()).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn post_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = request(addr, "POST", path, Vec::new()).await;
    (status, serde_json::from_str(&body).unwrap())
}

/// Polls `path` until `check` holds: the API has no event for "recorded",
/// so this waits with a bounded deadline.
async fn eventually(addr: SocketAddr, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let value = get_json(addr, path).await;
        if check(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never matched; last: {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_exchanges_are_recorded_with_bodies_and_can_be_replayed() {
    let setup = setup(false, InspectorConfig::default()).await;
    assert_eq!(
        request(setup.proxy, "GET", "/hello", Vec::new()).await,
        (200, "hello from the laptop".into())
    );
    let upload = vec![b'x'; 100_000];
    assert_eq!(
        request(setup.proxy, "POST", "/upload?n=1", upload).await,
        (200, "got 100000 bytes".into())
    );

    let list = eventually(setup.inspector, "/api/requests", |v| {
        v["requests"].as_array().unwrap().len() == 2
            && v["requests"][1]["response_size"]
                .as_u64()
                .is_some_and(|n| n > 0)
    })
    .await;
    let hello = &list["requests"][0];
    assert_eq!(hello["method"], "GET");
    assert_eq!(hello["uri"], "/hello");
    assert_eq!(hello["status"], 200);
    assert!(hello["duration_ms"].as_f64().unwrap() >= 0.0);
    let upload = &list["requests"][1];
    assert_eq!(upload["uri"], "/upload?n=1");
    assert_eq!(upload["request_size"], 100_000);

    let detail = get_json(setup.inspector, &format!("/api/requests/{}", hello["id"])).await;
    assert_eq!(
        detail["response_body"]["content"]["text"],
        "hello from the laptop"
    );
    assert!(detail["request_headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "host" && h[1] == "ws-app.tunnel.localhost"));
    // The upload is bigger than the 64 KiB kept: shown in part, not replayable.
    let detail = get_json(setup.inspector, &format!("/api/requests/{}", upload["id"])).await;
    assert_eq!(detail["request_body"]["shown"], 64 * 1024);
    assert_eq!(detail["request_body"]["whole"], false);
    let (status, refused) = post_json(
        setup.inspector,
        &format!("/api/requests/{}/replay", upload["id"]),
    )
    .await;
    assert_eq!(status, 409);
    assert!(refused["error"]
        .as_str()
        .unwrap()
        .contains("not kept whole"));

    let (status, replayed) = post_json(
        setup.inspector,
        &format!("/api/requests/{}/replay", hello["id"]),
    )
    .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["request"]["status"], 200);
    assert_eq!(replayed["request"]["replay_of"], hello["id"]);
    assert_eq!(
        replayed["request"]["response_body"]["content"]["text"],
        "hello from the laptop"
    );

    let tunnels = get_json(setup.inspector, "/api/tunnels").await;
    assert_eq!(tunnels["tunnels"][0]["name"], "ws-app");
    assert_eq!(tunnels["tunnels"][0]["status"], "connected");
    assert_eq!(tunnels["tunnels"][0]["requests"], 3);
    drop(setup.handle);
}

async fn connect(setup: &Setup, compress: bool) -> sockeye::WebSocket<sockeye::MaybeTlsStream> {
    let mut config = sockeye::Config::default().protocols(["chat.v1"]).header(
        http::header::ORIGIN,
        http::HeaderValue::from_static("http://example.test"),
    );
    if compress {
        config = config.deflate(DeflateConfig::default());
    }
    let (ws, response) = within(sockeye::connect_with(
        &format!("ws://{}/echo", setup.proxy),
        &config,
    ))
    .await
    .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v1");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_counts_and_close_are_shown_without_capture() {
    let setup = setup(false, InspectorConfig::default()).await;
    let mut ws = connect(&setup, false).await;
    for i in 0..5 {
        ws.send(Message::text(format!("message {i}")))
            .await
            .unwrap();
        let echoed = within(ws.recv()).await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(format!("message {i}")));
    }
    let open = eventually(setup.inspector, "/api/websockets", |v| {
        v["websockets"][0]["backend_to_client"]["messages"] == 5
    })
    .await;
    let record = &open["websockets"][0];
    assert_eq!(record["open"], true);
    assert_eq!(record["uri"], "/echo");
    assert_eq!(record["protocol"], "chat.v1");
    assert_eq!(record["client_to_backend"]["messages"], 5);
    assert_eq!(record["client_to_backend"]["bytes"], 5 * 9);
    assert_eq!(record["capture"], false);

    ws.close(Some(sockeye::CloseFrame::new(
        sockeye::CloseCode(4001),
        "done",
    )))
    .await
    .unwrap();
    let closed = eventually(setup.inspector, "/api/websockets", |v| {
        v["websockets"][0]["open"] == false
    })
    .await;
    let close = &closed["websockets"][0]["close"];
    assert_eq!(close["code"], 4001);
    assert_eq!(close["reason"], "done");
    assert_eq!(close["by"], "client");
    // The upgrade request is listed too, and points at the connection.
    let requests = get_json(setup.inspector, "/api/requests").await;
    assert_eq!(requests["requests"][0]["upgrade"], true);
    assert_eq!(requests["requests"][0]["status"], 101);
    assert_eq!(requests["requests"][0]["websocket"], record["id"]);
    // Without capture, nothing can be exported.
    let (status, _) = request(
        setup.inspector,
        "GET",
        &format!("/api/websockets/{}/export", record["id"]),
        Vec::new(),
    )
    .await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_messages_are_inflated_resent_and_exported() {
    let config = InspectorConfig {
        frames_per_connection: 10,
        ..InspectorConfig::default()
    };
    let setup = setup(true, config).await;
    let mut ws = connect(&setup, true).await;
    let long = "compressible ".repeat(200);
    for text in ["hello", long.as_str(), "it's done"] {
        ws.send(Message::text(text)).await.unwrap();
        assert_eq!(
            within(ws.recv()).await.unwrap().unwrap(),
            Message::text(text)
        );
    }
    ws.send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    within(ws.recv()).await.unwrap().unwrap();

    let list = eventually(setup.inspector, "/api/websockets", |v| {
        v["websockets"][0]["backend_to_client"]["messages"] == 4
    })
    .await;
    let id = list["websockets"][0]["id"].clone();
    assert!(list["websockets"][0]["extensions"]
        .as_str()
        .unwrap()
        .contains("permessage-deflate"));
    let detail = get_json(setup.inspector, &format!("/api/websockets/{id}")).await;
    let messages = detail["messages"].as_array().unwrap();
    let texts: Vec<&Value> = messages.iter().filter(|m| m["opcode"] == "text").collect();
    assert_eq!(texts.len(), 6, "{messages:?}");
    // The long message went compressed; the inspector shows it inflated.
    let long_up = texts
        .iter()
        .find(|m| m["size"] == long.len() && m["direction"] == "client_to_backend")
        .expect("the long message");
    assert_eq!(long_up["compressed"], true);
    assert_eq!(long_up["preview"]["text"], long.as_str());
    assert!(long_up["wire_size"].as_u64().unwrap() < 100);
    assert!(long_up["compression_ratio"].as_f64().unwrap() < 0.1);
    assert_eq!(texts[0]["preview"]["text"], "hello");

    // Resend "hello" on a new connection: the echo comes back.
    let hello_seq = &texts[0]["seq"];
    let (status, resent) = post_json(
        setup.inspector,
        &format!("/api/websockets/{id}/messages/{hello_seq}/resend"),
    )
    .await;
    assert_eq!(status, 200, "{resent}");
    assert_eq!(resent["replies"][0]["preview"]["text"], "hello");
    // A message from the server cannot be resent to it.
    let echoed_seq = &texts[1]["seq"];
    let (status, _) = post_json(
        setup.inspector,
        &format!("/api/websockets/{id}/messages/{echoed_seq}/resend"),
    )
    .await;
    assert_eq!(status, 409);

    let (status, script) = request(
        setup.inspector,
        "GET",
        &format!("/api/websockets/{id}/export"),
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(script.starts_with("#!/bin/sh"));
    assert!(script.contains("/echo'"), "{script}");
    assert!(script.contains("--subprotocol 'chat.v1'"), "{script}");
    assert!(
        script.contains("--origin 'http://example.test'"),
        "{script}"
    );
    assert!(script.contains("-x 'hello'"), "{script}");
    assert!(script.contains(r"-x 'it'\''s done'"), "{script}");
    assert!(script.contains("binary messages cannot be given with -x"));

    // The limit of 10 kept messages: older ones are counted as dropped.
    for i in 0..10 {
        ws.send(Message::text(format!("more {i}"))).await.unwrap();
        within(ws.recv()).await.unwrap().unwrap();
    }
    ws.close(None).await.unwrap();
    let detail = eventually(setup.inspector, &format!("/api/websockets/{id}"), |v| {
        v["open"] == false
    })
    .await;
    assert_eq!(detail["messages"].as_array().unwrap().len(), 10);
    assert!(detail["dropped_messages"].as_u64().unwrap() >= 18);
    let last = detail["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["opcode"], "close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_gets_live_events() {
    let setup = setup(true, InspectorConfig::default()).await;
    let (page, _) = within(sockeye::connect(&format!(
        "ws://{}/api/live",
        setup.inspector
    )))
    .await
    .unwrap();
    let (status, html) = request(setup.inspector, "GET", "/", Vec::new()).await;
    assert_eq!(status, 200);
    assert!(html.contains("sockeye inspector"));
    let (status, js) = request(setup.inspector, "GET", "/inspector.js", Vec::new()).await;
    assert_eq!(status, 200);
    assert!(js.contains("/api/live"));

    let mut page = page;
    request(setup.proxy, "GET", "/hello", Vec::new()).await;
    let mut ws = connect(&setup, false).await;
    ws.send(Message::text("live")).await.unwrap();
    within(ws.recv()).await.unwrap().unwrap();

    let (mut saw_request, mut saw_message) = (false, false);
    while !(saw_request && saw_message) {
        let Message::Text(text) = within(page.recv()).await.unwrap().unwrap() else {
            continue;
        };
        let event: Value = serde_json::from_str(text.as_str()).unwrap();
        match event["type"].as_str().unwrap() {
            "request" => saw_request |= event["request"]["uri"] == "/hello",
            "websocket" => {
                saw_message |= event["messages"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["preview"]["text"] == "live"))
            }
            other => assert_eq!(other, "tunnel"),
        }
    }
    setup.handle.set_status(
        "ws-app",
        LinkStatus::Reconnecting {
            reason: "link lost".into(),
        },
    );
    loop {
        let Message::Text(text) = within(page.recv()).await.unwrap().unwrap() else {
            continue;
        };
        let event: Value = serde_json::from_str(text.as_str()).unwrap();
        if event["type"] == "tunnel" {
            assert_eq!(event["tunnel"]["status"], "reconnecting");
            assert_eq!(event["tunnel"]["reason"], "link lost");
            break;
        }
    }
}
