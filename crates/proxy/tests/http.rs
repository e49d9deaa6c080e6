//! The HTTP side: the handshake negotiated end to end, headers passed and
//! added, 502 for a backend that is down, routes, the client-chosen
//! backend allow-list, limits, plain requests, /metrics.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sockeye::{DeflateConfig, Message};
use sockeye_proxy::ProxyConfig;
use tokio::net::{TcpListener, TcpStream};

/// The status and body of a refused upgrade.
async fn refused(url: &str) -> (u16, String) {
    match within(sockeye::connect(url)).await {
        Err(sockeye::Error::Refused { status, body, .. }) => (status, body),
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, the upgrade went through"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_and_deflate_are_negotiated_end_to_end() {
    let server_config = sockeye::Config::default()
        .protocols(["chat.v2", "chat.v1"])
        .deflate(DeflateConfig::default());
    let backend = backend(server_config, echo).await;
    let recorder = std::sync::Arc::new(Recorder::default());
    let config = ProxyConfig::default()
        .to(&backend.url())
        .unwrap()
        .observer(recorder.clone());
    let proxy = proxy(config).await;
    let client_config = sockeye::Config::default()
        .protocols(["chat.v1", "chat.v2"])
        .deflate(DeflateConfig::default());
    let (mut ws, response) = within(sockeye::connect_with(&proxy.url("/"), &client_config))
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v1");
    assert!(ws.is_compressed(), "permessage-deflate reached the client");
    let text = "compress me ".repeat(200);
    ws.send(text.as_str()).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text(text.clone()));
    // The frames passed compressed (RSV1) and smaller than the text.
    until_recorded(&recorder, |seen| seen.frames.len() >= 2).await;
    for (_, _, frame, _) in &recorder.seen.lock().unwrap().frames[..2] {
        assert!(frame.rsv1, "{frame:?}");
        assert!(frame.payload_len < text.len() as u64 / 4, "{frame:?}");
    }
    within(ws.close(None)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_headers_pass_and_forwarding_headers_are_added() {
    let mut backend = echo_backend().await;
    let proxy = proxy(ProxyConfig::default().to(&backend.url()).unwrap()).await;
    let client_config = sockeye::Config::default()
        .protocols(["graphql-ws"])
        .header(http::header::ORIGIN, "https://app.example".parse().unwrap())
        .header(
            http::header::COOKIE,
            "session=abc; theme=dark".parse().unwrap(),
        )
        .header(
            http::header::AUTHORIZATION,
            "Bearer s3cret".parse().unwrap(),
        )
        .header(
            "x-forwarded-for".parse().unwrap(),
            "203.0.113.9".parse().unwrap(),
        );
    let (mut ws, _) = within(sockeye::connect_with(
        &proxy.url("/socket?room=1"),
        &client_config,
    ))
    .await
    .unwrap();
    let request = within(backend.requests.recv()).await.unwrap();
    assert_eq!(request.uri(), "/socket?room=1");
    let headers = request.headers();
    assert_eq!(headers["origin"], "https://app.example");
    assert_eq!(headers["cookie"], "session=abc; theme=dark");
    assert_eq!(headers["authorization"], "Bearer s3cret");
    assert_eq!(headers["sec-websocket-protocol"], "graphql-ws");
    assert_eq!(headers["host"], backend.addr.to_string());
    assert_eq!(headers["x-forwarded-host"], proxy.addr.to_string());
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(
        headers["forwarded"],
        format!("for=127.0.0.1;host=\"{}\";proto=http", proxy.addr)
    );
    within(ws.close(None)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_is_down_is_a_502_before_the_upgrade() {
    // A port that was free a moment ago: nothing listens there.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = free.local_addr().unwrap();
    drop(free);
    let proxy = proxy(ProxyConfig::default().to(&format!("ws://{down}")).unwrap()).await;
    let (status, body) = refused(&proxy.url("/")).await;
    assert_eq!(status, 502);
    assert!(body.contains("cannot connect to backend"), "{body}");
    assert!(proxy
        .metrics()
        .contains("sockeye_proxy_backend_errors_total 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_refusal_is_relayed_as_it_came() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut head = vec![0u8; 4096];
            let _ = tcp.read(&mut head).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 16\r\n\r\nnot for you, sir")
                .await;
        }
    });
    let proxy = proxy(
        ProxyConfig::default()
            .to(&format!("ws://{backend}"))
            .unwrap(),
    )
    .await;
    let (status, body) = refused(&proxy.url("/")).await;
    assert_eq!((status, body.as_str()), (403, "not for you, sir"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_upgrade_is_refused_before_any_backend_is_asked() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut backend = echo_backend().await;
    let proxy = proxy(ProxyConfig::default().to(&backend.url()).unwrap()).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = within(tcp.read(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("Sec-WebSocket-Key"), "{answer}");
    assert!(backend.requests.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_pick_the_longest_prefix() {
    let tagger = |tag: &'static str| {
        move |mut ws: sockeye::WebSocket<TcpStream>| async move {
            while let Some(Ok(message)) = ws.recv().await {
                if let Message::Text(text) = message {
                    let _ = ws.send(format!("{tag}:{text}")).await;
                }
            }
        }
    };
    let mut chat = backend(sockeye::Config::default(), tagger("chat")).await;
    let mut feed = backend(sockeye::Config::default(), tagger("feed")).await;
    let config = ProxyConfig::default()
        .route("/chat", &chat.url())
        .unwrap()
        .route("/feed", &format!("{}/live", feed.url()))
        .unwrap();
    let proxy = proxy(config).await;
    for (path, expected) in [("/chat/room1", "chat:hi"), ("/feed", "feed:hi")] {
        let (mut ws, _) = within(sockeye::connect(&proxy.url(path))).await.unwrap();
        ws.send("hi").await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text(expected));
        within(ws.close(None)).await.unwrap();
    }
    assert_eq!(
        within(chat.requests.recv()).await.unwrap().uri(),
        "/chat/room1"
    );
    // A backend path replaces the route's prefix.
    assert_eq!(within(feed.requests.recv()).await.unwrap().uri(), "/live");
    let (status, body) = refused(&proxy.url("/other")).await;
    assert_eq!((status, body.as_str()), (404, "no route for /other"));
}

fn choose(proxy: &RunningProxy, backend: &str) -> String {
    let encoded: String = form_urlencoded::byte_serialize(backend.as_bytes()).collect();
    proxy.url(&format!("/api/websocket?backend={encoded}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_chosen_backends_must_be_in_the_allow_list() {
    let allowed = echo_backend().await;
    let by_host = echo_backend().await;
    let other = echo_backend().await;
    let config = ProxyConfig::default()
        .allow_backend(&format!("{}/echo", allowed.url()))
        .unwrap()
        .allow_backend(&format!("localhost:{}", by_host.addr.port()))
        .unwrap();
    let proxy = proxy(config).await;

    // Allowed: the exact URL.
    let (mut ws, _) = within(sockeye::connect(&choose(
        &proxy,
        &format!("{}/echo", allowed.url()),
    )))
    .await
    .unwrap();
    ws.send("chosen").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("chosen"));
    within(ws.close(None)).await.unwrap();

    // Not in the list: another path, another backend, no backend, no route.
    for url in [
        choose(&proxy, &format!("{}/admin", allowed.url())),
        choose(&proxy, &other.url()),
        choose(&proxy, "ws://169.254.169.254/"),
        proxy.url("/api/websocket"),
    ] {
        let (status, body) = refused(&url).await;
        assert_eq!(status, 403, "{url}: {body}");
    }
    let (status, body) = refused(&choose(&proxy, &other.url())).await;
    assert_eq!(status, 403);
    assert!(body.contains("not in this proxy's allow-list"), "{body}");
    // Allowed by host name, but the name resolves to loopback: refused
    // unless the address itself is in the list.
    let (status, body) = refused(&choose(
        &proxy,
        &format!("ws://localhost:{}/", by_host.addr.port()),
    ))
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("internal address"), "{body}");
    // Without routes nothing else is served.
    let (status, _) = refused(&proxy.url("/elsewhere")).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_answer_503_and_429() {
    let backend = echo_backend().await;
    let total = proxy(
        ProxyConfig::default()
            .to(&backend.url())
            .unwrap()
            .max_connections(1),
    )
    .await;
    let (mut first, _) = within(sockeye::connect(&total.url("/"))).await.unwrap();
    let (status, body) = refused(&total.url("/")).await;
    assert_eq!(status, 503, "{body}");
    within(first.close(None)).await.unwrap();
    // The slot comes back once the relay has ended.
    eventually(|| total.proxy.metrics().connections_open() == 0).await;
    let (mut again, _) = within(sockeye::connect(&total.url("/"))).await.unwrap();
    within(again.close(None)).await.unwrap();

    let per_ip = proxy(
        ProxyConfig::default()
            .to(&backend.url())
            .unwrap()
            .max_per_ip(2),
    )
    .await;
    let (mut a, _) = within(sockeye::connect(&per_ip.url("/"))).await.unwrap();
    let (mut b, _) = within(sockeye::connect(&per_ip.url("/"))).await.unwrap();
    let (status, body) = refused(&per_ip.url("/")).await;
    assert_eq!(status, 429, "{body}");
    assert!(per_ip
        .metrics()
        .contains("sockeye_proxy_refused_total{reason=\"max_per_ip\"} 1"));
    within(a.close(None)).await.unwrap();
    within(b.close(None)).await.unwrap();
}

/// A plain HTTP backend answering `METHOD URI BODY` plus a few headers.
async fn http_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper::service::service_fn(
                |request: http::Request<hyper::body::Incoming>| async move {
                    let (parts, body) = request.into_parts();
                    let body = body.collect().await?.to_bytes();
                    let answer = format!(
                        "{} {} {} xff={:?}",
                        parts.method,
                        parts.uri,
                        String::from_utf8_lossy(&body),
                        parts.headers.get("x-forwarded-for"),
                    );
                    let mut response = http::Response::new(Full::new(Bytes::from(answer)));
                    response
                        .headers_mut()
                        .insert("x-backend", "plain".parse().unwrap());
                    Ok::<_, hyper::Error>(response)
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    addr
}

/// Sends one request through `proxy`; the status, `x-backend` and body.
async fn http_request(
    proxy: SocketAddr,
    method: &str,
    path: &str,
    body: &'static str,
) -> (u16, Option<String>, String) {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", proxy.to_string())
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    let status = response.status().as_u16();
    let tag = response
        .headers()
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, tag, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_forwarded_with_its_body() {
    let backend = http_backend().await;
    let proxy = proxy(
        ProxyConfig::default()
            .to(&format!("http://{backend}"))
            .unwrap(),
    )
    .await;
    let (status, tag, body) = http_request(proxy.addr, "GET", "/page?q=1", "").await;
    assert_eq!((status, tag.as_deref()), (200, Some("plain")));
    assert_eq!(body, "GET /page?q=1  xff=Some(\"127.0.0.1\")");
    let (status, _, body) = http_request(proxy.addr, "POST", "/submit", "name=sockeye").await;
    assert_eq!(status, 200);
    assert_eq!(body, "POST /submit name=sockeye xff=Some(\"127.0.0.1\")");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_open_connections() {
    let backend = echo_backend().await;
    let proxy = proxy(ProxyConfig::default().to(&backend.url()).unwrap()).await;
    let (mut ws, _) = within(sockeye::connect(&proxy.url("/"))).await.unwrap();
    ws.send("count me").await.unwrap();
    let _ = next_data(&mut ws).await;
    let (status, _, text) = http_request(proxy.addr, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    for line in [
        "sockeye_proxy_connections_open 1",
        "sockeye_proxy_connections_total 1",
        "sockeye_proxy_requests_total{kind=\"upgrade\",status=\"101\"} 1",
        "sockeye_proxy_frames_total{direction=\"client_to_backend\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    within(ws.close(None)).await.unwrap();
}
