//! End to end on loopback: a tunnel server, agents, local servers, and
//! clients reaching them through `NAME.tunnel.localhost:PORT`.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use sockeye::{CloseCode, CloseFrame, Message};
use sockeye_tunnel::{Error, ServerConfig, TunnelConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshake_is_end_to_end_and_frames_flow_both_ways() {
    let server = default_server().await;
    let mut local = ws_local().await;
    let agent = start_agent(agent_config(
        &server,
        vec![TunnelConfig::new(local.addr.port().to_string()).subdomain("ws-app")],
    ));
    let mut handle = agent.handle.clone();
    let granted = within(handle.connected()).await.unwrap();
    assert_eq!(granted[0].name, "ws-app");
    assert_eq!(
        granted[0].url,
        format!("http://ws-app.{DOMAIN}:{}", server.addr.port())
    );

    let config = sockeye::Config::default()
        .protocols(["chat"])
        .deflate(sockeye::DeflateConfig::default())
        .header(
            http::header::ORIGIN,
            http::HeaderValue::from_static("https://app.example"),
        )
        .header(
            http::header::COOKIE,
            http::HeaderValue::from_static("session=abc"),
        );
    let (mut ws, response) = ws_connect(&server, "ws-app", "/chat?room=1", config)
        .await
        .unwrap();
    // Negotiated with the laptop's server, through both hops.
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "chat"
    );
    assert!(
        ws.is_compressed(),
        "permessage-deflate negotiated end to end"
    );
    let seen = within(local.requests.recv()).await.unwrap();
    assert_eq!(
        seen.uri().path_and_query().unwrap().as_str(),
        "/chat?room=1"
    );
    assert_eq!(seen.headers()["origin"], "https://app.example");
    assert_eq!(seen.headers()["cookie"], "session=abc");
    assert_eq!(seen.headers()["host"], server.host("ws-app").as_str());
    assert!(seen.headers()["sec-websocket-extensions"]
        .to_str()
        .unwrap()
        .contains("permessage-deflate"));
    assert!(seen.headers().get("x-forwarded-for").is_some());

    ws.send("hello through the tunnel").await.unwrap();
    assert_eq!(
        next_data(&mut ws).await,
        Message::text("hello through the tunnel")
    );
    let big = Bytes::from((0..4 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    ws.send(Message::Binary(big.clone())).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::Binary(big));
    within(eventually(|| {
        let open = handle.counts().1;
        async move { open == 1 }
    }))
    .await;

    // The close code passes through and comes back from the laptop.
    ws.send(Message::Close(Some(CloseFrame::new(
        CloseCode(4000),
        "bye",
    ))))
    .await
    .unwrap();
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode(4000)),
        other => panic!("expected the echoed close, got {other:?}"),
    }

    // A close started by the laptop's server passes the other way.
    let (mut ws, _) = ws_connect(&server, "ws-app", "/close", sockeye::Config::default())
        .await
        .unwrap();
    ws.send("please close").await.unwrap();
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(
                (frame.code, frame.reason.as_str()),
                (CloseCode(4001), "server done")
            )
        }
        other => panic!("expected the server's close, got {other:?}"),
    }
    let handle2 = agent.handle.clone();
    eventually(move || {
        let open = handle2.counts().1;
        async move { open == 0 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_keepalive_streaming_and_large_upload() {
    let server = default_server().await;
    let (web, gate) = http_local_with_gate().await;
    let agent = start_agent(agent_config(
        &server,
        vec![TunnelConfig::new(web.port().to_string()).subdomain("web")],
    ));
    within(agent.handle.clone().connected()).await.unwrap();
    let host = server.host("web");

    // Two requests on one keep-alive connection.
    let mut client = HttpClient::connect(server.addr).await;
    let (status, _, body) = client.get(&host, "/hello", &[]).await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "hello from the laptop")
    );
    let (status, _, body) = client.get(&host, "/stream", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body, "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");

    // A streamed response arrives piece by piece, not buffered at either hop.
    let request = http::Request::get("/live")
        .header("host", &host)
        .body(Full::default())
        .unwrap();
    let mut body = client.send(request).await.into_body();
    let first = within(body.frame())
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(first, "first\n");
    gate.notify_one();
    let second = within(body.frame())
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(second, "second\n");
    assert!(within(body.frame()).await.is_none());

    // A 32 MiB upload, streamed through both hops.
    let upload: Vec<u8> = (0..32u32 << 20).map(|i| (i % 253) as u8).collect();
    let sum: u64 = upload.iter().map(|&b| b as u64).sum();
    let request = http::Request::post("/upload")
        .header("host", &host)
        .body(Full::new(Bytes::from(upload)))
        .unwrap();
    let response = client.send(request).await;
    assert_eq!(response.status(), 200);
    let body = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("{} bytes, sum {sum}", 32u32 << 20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_is_enforced_at_the_public_side() {
    let server = default_server().await;
    let web = http_local().await;
    let agent = start_agent(agent_config(
        &server,
        vec![TunnelConfig::new(web.port().to_string())
            .subdomain("private")
            .auth("alice:s3cret")],
    ));
    within(agent.handle.clone().connected()).await.unwrap();
    let host = server.host("private");
    let mut client = HttpClient::connect(server.addr).await;

    let (status, headers, body) = client.get(&host, "/headers", &[]).await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic realm="));
    assert!(body.contains("user name and password"), "{body}");
    // base64("alice:wrong")
    let (status, _, _) = client
        .get(
            &host,
            "/headers",
            &[("authorization", "Basic YWxpY2U6d3Jvbmc=")],
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(agent.handle.counts().0, 0, "nothing reached the laptop");

    // base64("alice:s3cret")
    let (status, _, body) = client
        .get(
            &host,
            "/headers",
            &[("authorization", "Basic YWxpY2U6czNjcmV0")],
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        !body.contains("authorization"),
        "the tunnel's credentials stay at the server: {body}"
    );

    // An upgrade without credentials is refused the same way.
    let refused = ws_connect(&server, "private", "/", sockeye::Config::default()).await;
    let err = refused.expect_err("refused").to_string();
    assert!(err.contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_specific() {
    let server = default_server().await;
    let web = http_local().await;

    // Unknown subdomain: 404 naming it.
    let (status, body) = get(server.addr, &server.host("nobody"), "/").await;
    assert_eq!(status, 404);
    assert!(body.contains("\"nobody\""), "{body}");

    // Bad token: the agent stops with the server's reason.
    let mut bad = agent_config(
        &server,
        vec![TunnelConfig::new(web.port().to_string()).subdomain("web")],
    );
    bad.token = Some("wrong".into());
    let err = start_agent(bad).stopped().await.unwrap_err();
    assert!(matches!(err, Error::Refused { retry: false, .. }), "{err}");
    assert!(err.to_string().contains("token was not accepted"), "{err}");

    // A second agent asking for a subdomain in use: refused, naming it.
    let first = start_agent(agent_config(
        &server,
        vec![TunnelConfig::new(web.port().to_string()).subdomain("taken")],
    ));
    within(first.handle.clone().connected()).await.unwrap();
    let second = start_agent(agent_config(
        &server,
        vec![TunnelConfig::new(web.port().to_string()).subdomain("taken")],
    ));
    let err = second.stopped().await.unwrap_err().to_string();
    assert!(
        err.contains("subdomain \"taken\" is in use by another agent"),
        "{err}"
    );
    let (status, _) = get(server.addr, &server.host("taken"), "/hello").await;
    assert_eq!(status, 200, "the first agent still serves it");

    // The local server down: 502 from the agent, naming the local address.
    let dead_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let down = start_agent(agent_config(
        &server,
        vec![TunnelConfig::new(dead_port.to_string()).subdomain("down")],
    ));
    within(down.handle.clone().connected()).await.unwrap();
    let (status, body) = get(server.addr, &server.host("down"), "/").await;
    assert_eq!(status, 502);
    assert!(body.contains(&format!("127.0.0.1:{dead_port}")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_and_restarted_gets_its_subdomain_back() {
    let server = default_server().await;
    let web = http_local().await;
    let tunnels = vec![TunnelConfig::new(web.port().to_string()).subdomain("ws-app")];
    let agent = start_agent(agent_config(&server, tunnels.clone()));
    within(agent.handle.clone().connected()).await.unwrap();
    let host = server.host("ws-app");
    assert_eq!(get(server.addr, &host, "/hello").await.0, 200);

    agent.kill();
    // The server notices the link's end: 502 with a reason, not a 404.
    let (addr, h) = (server.addr, host.clone());
    eventually(move || {
        let h = h.clone();
        async move { get(addr, &h, "/hello").await.0 == 502 }
    })
    .await;
    let (_, body) = get(server.addr, &host, "/hello").await;
    assert!(
        body.contains("disconnected") && body.contains("ws-app.tunnel.localhost"),
        "{body}"
    );

    let again = start_agent(agent_config(&server, tunnels));
    let granted = within(again.handle.clone().connected()).await.unwrap();
    assert_eq!(granted[0].name, "ws-app");
    assert_eq!(get(server.addr, &host, "/hello").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_does_not_stall_another() {
    let server = default_server().await;
    let local = ws_local().await;
    let agent = start_agent(agent_config(
        &server,
        vec![TunnelConfig::new(local.addr.port().to_string()).subdomain("ws-app")],
    ));
    within(agent.handle.clone().connected()).await.unwrap();

    // One WebSocket whose local end never reads: the sender fills every
    // buffer and window on its path and then waits.
    let (stalled, _) = ws_connect(&server, "ws-app", "/stall", sockeye::Config::default())
        .await
        .unwrap();
    let (progress_tx, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let writer = tokio::spawn(async move {
        let mut stalled = stalled;
        let chunk = Bytes::from(vec![7u8; 256 * 1024]);
        for i in 0.. {
            if stalled.send(Message::Binary(chunk.clone())).await.is_err() {
                break;
            }
            let _ = progress_tx.send(i);
        }
    });
    // Wait until it is genuinely stuck: no progress for a while after some.
    within(progress.recv()).await.unwrap();
    while let Ok(Some(_)) =
        tokio::time::timeout(std::time::Duration::from_millis(300), progress.recv()).await
    {}

    // Another WebSocket on the same link still echoes promptly.
    let (mut ws, _) = ws_connect(&server, "ws-app", "/echo", sockeye::Config::default())
        .await
        .unwrap();
    for i in 0..20 {
        let text = format!("message {i}");
        ws.send(text.as_str()).await.unwrap();
        let echoed = tokio::time::timeout(std::time::Duration::from_secs(2), ws.recv())
            .await
            .expect("the second stream stalled behind the first");
        assert_eq!(echoed.unwrap().unwrap(), Message::text(text));
    }
    // And plain HTTP too.
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_tunnels_share_one_link_and_random_names_are_given() {
    let server = default_server().await;
    let web = http_local().await;
    let local = ws_local().await;
    let agent = start_agent(agent_config(
        &server,
        vec![
            TunnelConfig::new(web.port().to_string()),
            TunnelConfig::new(local.addr.port().to_string()).subdomain("ws-app"),
        ],
    ));
    let granted = within(agent.handle.clone().connected()).await.unwrap();
    assert_eq!(granted.len(), 2);
    assert_eq!(granted[0].name.len(), 8, "a random name: {:?}", granted[0]);
    assert_eq!(server.server.agents(), 1);
    let (status, body) = get(server.addr, &server.host(&granted[0].name), "/hello").await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "hello from the laptop")
    );
    let (mut ws, _) = ws_connect(&server, "ws-app", "/", sockeye::Config::default())
        .await
        .unwrap();
    ws.send("x").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bandwidth_limit_holds() {
    let server = server(
        ServerConfig::new(DOMAIN)
            .token(TOKEN)
            .bytes_per_second(Some(256 * 1024)),
    )
    .await;
    let local = ws_local().await;
    let agent = start_agent(agent_config(
        &server,
        vec![TunnelConfig::new(local.addr.port().to_string()).subdomain("slow")],
    ));
    within(agent.handle.clone().connected()).await.unwrap();
    let (mut ws, _) = ws_connect(&server, "slow", "/", sockeye::Config::default())
        .await
        .unwrap();
    // 256 KiB out and 256 KiB back is 512 KiB through a 256 KiB/s tunnel
    // whose bucket starts full: at least about a second.
    let started = std::time::Instant::now();
    let payload = Bytes::from(vec![1u8; 256 * 1024]);
    ws.send(Message::Binary(payload.clone())).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::Binary(payload));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_millis(800),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reconnects_and_keeps_its_random_name() {
    let first = default_server().await;
    let addr = first.addr;
    let web = http_local().await;
    let agent = start_agent(agent_config(
        &first,
        vec![TunnelConfig::new(web.port().to_string())],
    ));
    let mut handle = agent.handle.clone();
    let name = within(handle.connected()).await.unwrap()[0].name.clone();

    // The server goes away: the agent says it is reconnecting.
    drop(first);
    let status = within(handle.wait_for(|s| {
        matches!(
            s.link,
            sockeye_tunnel::inspect::LinkStatus::Reconnecting { .. }
        )
    }))
    .await
    .unwrap();
    assert_eq!(status.tunnels[0].name, name);

    // A new server on the same address: the agent is back under the same name.
    let second = server_at(addr, ServerConfig::new(DOMAIN).token(TOKEN)).await;
    let granted = within(handle.connected()).await.unwrap();
    assert_eq!(granted[0].name, name);
    let (status, body) = get(second.addr, &second.host(&name), "/hello").await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "hello from the laptop")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_limit_per_agent_refuses_one_request_not_the_link() {
    let server = server(
        ServerConfig::new(DOMAIN)
            .token(TOKEN)
            .max_streams_per_agent(2),
    )
    .await;
    let local = ws_local().await;
    let agent = start_agent(agent_config(
        &server,
        vec![TunnelConfig::new(local.addr.port().to_string()).subdomain("ws-app")],
    ));
    within(agent.handle.clone().connected()).await.unwrap();
    let config = sockeye::Config::default;
    let (mut one, _) = ws_connect(&server, "ws-app", "/", config()).await.unwrap();
    let (two, _) = ws_connect(&server, "ws-app", "/", config()).await.unwrap();
    let third = ws_connect(&server, "ws-app", "/", config()).await;
    let err = third.expect_err("over the limit").to_string();
    assert!(err.contains("502"), "{err}");
    let (status, body) = get(server.addr, &server.host("ws-app"), "/").await;
    assert_eq!(status, 502);
    assert!(
        body.contains("2 streams open, the server's limit per agent"),
        "{body}"
    );

    // The others are unaffected, and a slot freed is usable again.
    one.send("still here").await.unwrap();
    assert_eq!(next_data(&mut one).await, Message::text("still here"));
    drop(two);
    let (server_addr, host) = (server.addr, server.host("ws-app"));
    eventually(move || {
        let host = host.clone();
        async move {
            let config = sockeye::Config::default().header(
                http::header::HOST,
                http::HeaderValue::from_str(&host).unwrap(),
            );
            sockeye::connect_with(&format!("ws://{server_addr}/"), &config)
                .await
                .is_ok()
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_websockets_through_one_agent() {
    const N: usize = 1000;
    let server = default_server().await;
    let local = ws_local().await;
    let agent = start_agent(agent_config(
        &server,
        vec![TunnelConfig::new(local.addr.port().to_string()).subdomain("many")],
    ));
    within(agent.handle.clone().connected()).await.unwrap();
    let (echoed_tx, mut echoed) = tokio::sync::mpsc::channel(N);
    let release = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    let addr = server.addr;
    let host = server.host("many");
    for i in 0..N {
        let (echoed_tx, release, host) = (echoed_tx.clone(), release.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let config = sockeye::Config::default().header(
                http::header::HOST,
                http::HeaderValue::from_str(&host).unwrap(),
            );
            let (mut ws, _) = sockeye::connect_with(&format!("ws://{addr}/"), &config)
                .await
                .expect("connect");
            let text = format!("connection {i}");
            ws.send(text.as_str()).await.unwrap();
            let back = ws.recv().await;
            let _ = echoed_tx
                .send(matches!(back, Some(Ok(Message::Text(t))) if t.as_str() == text))
                .await;
            release.cancelled().await;
        }));
    }
    let all = within(async {
        let mut ok = 0;
        for _ in 0..N {
            ok += usize::from(echoed.recv().await == Some(true));
        }
        ok
    })
    .await;
    assert_eq!(all, N);
    // All of them open at once through the one agent.
    assert_eq!(agent.handle.counts().1, N as u64);
    release.cancel();
    for task in tasks {
        within(task).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_shutting_down_closes_websockets_with_1001() {
    let server = default_server().await;
    let local = ws_local().await;
    let (agent, stop) = start_agent_until(agent_config(
        &server,
        vec![TunnelConfig::new(local.addr.port().to_string()).subdomain("ws-app")],
    ));
    within(agent.handle.clone().connected()).await.unwrap();
    let (mut ws, _) = ws_connect(&server, "ws-app", "/", sockeye::Config::default())
        .await
        .unwrap();
    ws.send("before").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("before"));

    stop.send(()).unwrap();
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::GOING_AWAY),
        other => panic!("expected 1001, got {other:?}"),
    }
    agent.stopped().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_header_is_kept_rewritten_or_replaced() {
    let server = default_server().await;
    let web = http_local().await;
    let port = web.port().to_string();
    let mut rewrite = TunnelConfig::new(port.clone()).subdomain("rewrite");
    rewrite.host_header = Some("rewrite".into());
    let mut replaced = TunnelConfig::new(port.clone()).subdomain("replaced");
    replaced.host_header = Some("myapp.local:8000".into());
    let agent = start_agent(agent_config(
        &server,
        vec![
            TunnelConfig::new(port.clone()).subdomain("kept"),
            rewrite,
            replaced,
        ],
    ));
    within(agent.handle.clone().connected()).await.unwrap();
    for (name, expected) in [
        ("kept", server.host("kept")),
        ("rewrite", format!("127.0.0.1:{port}")),
        ("replaced", "myapp.local:8000".to_owned()),
    ] {
        let (status, body) = get(server.addr, &server.host(name), "/headers").await;
        assert_eq!(status, 200);
        assert!(
            body.contains(&format!("host: {expected}\n")),
            "{name}: {body}"
        );
        assert!(
            body.contains(&format!("x-forwarded-host: {}", server.host(name))),
            "{name}: {body}"
        );
    }
}
