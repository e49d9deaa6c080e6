//! Frames through the proxy: echo, a large message streamed, closes in both
//! directions, a backend dying, keepalive, idle timeout.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use sockeye::{CloseCode, CloseFrame, Message};
use sockeye_proto::OpCode;
use sockeye_proxy::{Direction, Initiator, ProxyConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_text_and_binary() {
    let backend = echo_backend().await;
    let proxy = proxy(ProxyConfig::default().to(&backend.url()).unwrap()).await;
    let (mut ws, response) = within(sockeye::connect(&proxy.url("/echo"))).await.unwrap();
    assert_eq!(response.status(), 101);
    for i in 0..100 {
        ws.send(format!("hello {i}")).await.unwrap();
        assert_eq!(
            next_data(&mut ws).await,
            Message::text(format!("hello {i}"))
        );
    }
    let binary: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(binary.clone()).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::binary(binary));
    within(ws.close(None)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_message_streams_through_one_buffer() {
    let limits = sockeye::Config::default().max_message_size(32 << 20);
    let backend = backend(limits.clone(), echo).await;
    let recorder = Arc::new(Recorder {
        preview: 16,
        ..Recorder::default()
    });
    let config = ProxyConfig::default()
        .to(&backend.url())
        .unwrap()
        .observer(recorder.clone());
    let read_buffer = config.read_buffer_size;
    let proxy = proxy(config).await;
    let (mut ws, _) = within(sockeye::connect_with(&proxy.url("/"), &limits))
        .await
        .unwrap();
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
    ws.send(big.clone()).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::binary(big.clone()));

    // One 16 MiB frame each way, reported once with its preview...
    {
        let seen = recorder.seen.lock().unwrap();
        let big_frames: Vec<_> = seen
            .frames
            .iter()
            .filter(|(_, _, f, _)| f.payload_len == 16 << 20)
            .collect();
        assert_eq!(big_frames.len(), 2, "{:?}", seen.frames);
        for (_, direction, frame, preview) in &big_frames {
            assert_eq!(frame.opcode, OpCode::Binary);
            assert!(frame.fin);
            assert_eq!(frame.masked, *direction == Direction::ClientToBackend);
            assert_eq!(preview.as_slice(), &big[..16], "preview is unmasked");
        }
    }
    // ...while no relay direction ever held more than its read buffer.
    let high_water = proxy.proxy.metrics().relay_buffer_high_water();
    assert!(high_water > 0);
    assert!(
        high_water as usize <= read_buffer,
        "held {high_water} bytes, buffer is {read_buffer}"
    );
    within(ws.close(None)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_reaches_the_backend_with_code_and_reason() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = backend(sockeye::Config::default(), move |mut ws| {
        let tx = tx.clone();
        async move {
            while let Some(Ok(message)) = ws.recv().await {
                if let Message::Close(frame) = message {
                    let _ = tx.send(frame);
                }
            }
        }
    })
    .await;
    let recorder = Arc::new(Recorder::default());
    let config = ProxyConfig::default()
        .to(&backend.url())
        .unwrap()
        .observer(recorder.clone());
    let proxy = proxy(config).await;
    let (mut ws, _) = within(sockeye::connect(&proxy.url("/"))).await.unwrap();
    let frame = CloseFrame::new(CloseCode(4000), "bye from client");
    within(ws.close(Some(frame.clone()))).await.unwrap();
    assert_eq!(within(rx.recv()).await.unwrap(), Some(frame));
    until_recorded(&recorder, |seen| !seen.closes.is_empty()).await;
    let close = recorder.seen.lock().unwrap().closes[0].1.clone();
    assert_eq!(close.code, CloseCode(4000));
    assert_eq!(close.reason, "bye from client");
    assert_eq!(close.initiator, Initiator::Client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_close_reaches_the_client_with_code_and_reason() {
    let backend = backend(sockeye::Config::default(), |mut ws| async move {
        // Close after the first message.
        let _ = ws.recv().await;
        let _ = ws
            .close(Some(CloseFrame::new(CloseCode(4001), "bye from backend")))
            .await;
    })
    .await;
    let recorder = Arc::new(Recorder::default());
    let config = ProxyConfig::default()
        .to(&backend.url())
        .unwrap()
        .observer(recorder.clone());
    let proxy = proxy(config).await;
    let (mut ws, _) = within(sockeye::connect(&proxy.url("/"))).await.unwrap();
    ws.send("close please").await.unwrap();
    assert_eq!(
        next_data(&mut ws).await,
        Message::Close(Some(CloseFrame::new(CloseCode(4001), "bye from backend")))
    );
    // The client answers; the connection ends on both sides.
    assert!(within(ws.recv()).await.is_none());
    until_recorded(&recorder, |seen| !seen.closes.is_empty()).await;
    let close = recorder.seen.lock().unwrap().closes[0].1.clone();
    assert_eq!(
        (close.code, close.initiator),
        (CloseCode(4001), Initiator::Backend)
    );
    eventually(|| proxy.proxy.metrics().connections_open() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dying_after_the_upgrade_closes_the_client_with_1014() {
    let backend = backend(sockeye::Config::default(), |mut ws| async move {
        // Answer one message, then vanish without a close frame.
        if let Some(Ok(message)) = ws.recv().await {
            let _ = ws.send(message).await;
        }
        drop(ws);
    })
    .await;
    let proxy = proxy(ProxyConfig::default().to(&backend.url()).unwrap()).await;
    let (mut ws, _) = within(sockeye::connect(&proxy.url("/"))).await.unwrap();
    ws.send("one").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("one"));
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert!(
                [CloseCode::INTERNAL, CloseCode::BAD_GATEWAY].contains(&frame.code),
                "{frame:?}"
            );
            assert_eq!(frame.reason.as_str(), "backend connection lost");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    assert!(within(ws.recv()).await.is_none());
    eventually(|| {
        proxy
            .metrics()
            .contains("sockeye_proxy_closes_total{code=\"1014\",initiator=\"backend\"} 1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_closes_the_backend_with_1001() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = backend(sockeye::Config::default(), move |mut ws| {
        let tx = tx.clone();
        async move {
            while let Some(Ok(message)) = ws.recv().await {
                if let Message::Close(frame) = message {
                    let _ = tx.send(frame);
                }
            }
        }
    })
    .await;
    let proxy = proxy(ProxyConfig::default().to(&backend.url()).unwrap()).await;
    let (ws, _) = within(sockeye::connect(&proxy.url("/"))).await.unwrap();
    drop(ws); // TCP closes, no close frame
    let frame = within(rx.recv()).await.unwrap().unwrap();
    assert_eq!(frame.code, CloseCode::GOING_AWAY);
    assert_eq!(frame.reason.as_str(), "client went away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_pings_each_hop_and_relays_the_peers_own_pings() {
    let (tx, mut backend_saw) = tokio::sync::mpsc::unbounded_channel();
    let backend = backend(sockeye::Config::default(), move |mut ws| {
        let tx = tx.clone();
        async move {
            // Record control frames; the connection answers pings itself.
            while let Some(Ok(message)) = ws.recv().await {
                let _ = tx.send(message);
            }
        }
    })
    .await;
    let config = ProxyConfig::default()
        .to(&backend.url())
        .unwrap()
        .keepalive(Some(Duration::from_millis(100)));
    let proxy = proxy(config).await;
    let (mut ws, _) = within(sockeye::connect(&proxy.url("/"))).await.unwrap();

    // The proxy pings the client on the idle hop (the client answers by itself).
    let mut proxy_pings = 0;
    while proxy_pings < 3 {
        match within(ws.recv()).await {
            Some(Ok(Message::Ping(payload))) => {
                assert_eq!(payload.len(), 8, "the proxy's token");
                proxy_pings += 1;
            }
            other => panic!("expected the proxy's ping, got {other:?}"),
        }
    }
    // The client's own ping goes to the backend, whose pong comes back as sent.
    ws.send(Message::Ping("client ping".into())).await.unwrap();
    loop {
        match within(ws.recv()).await {
            Some(Ok(Message::Ping(_))) => continue,
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], b"client ping");
                break;
            }
            other => panic!("expected the backend's pong, got {other:?}"),
        }
    }
    within(ws.close(None)).await.unwrap();

    // The backend saw the proxy's pings and the client's, and not one of the
    // client's pongs to the proxy's pings.
    let mut pings_from_proxy = 0;
    let mut client_ping = false;
    while let Some(message) = within(backend_saw.recv()).await {
        match message {
            Message::Ping(payload) if payload.len() == 8 => pings_from_proxy += 1,
            Message::Ping(payload) => client_ping |= &payload[..] == b"client ping",
            Message::Pong(payload) => panic!("a pong leaked to the backend: {payload:?}"),
            Message::Close(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(client_ping);
    assert!(pings_from_proxy >= 1, "the backend hop was pinged too");
    assert!(proxy
        .metrics()
        .contains("sockeye_proxy_keepalive_pings_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_with_1001_on_both_sides() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = backend(sockeye::Config::default(), move |mut ws| {
        let tx = tx.clone();
        async move {
            while let Some(Ok(message)) = ws.recv().await {
                if let Message::Close(frame) = message {
                    let _ = tx.send(frame);
                }
            }
        }
    })
    .await;
    let config = ProxyConfig::default()
        .to(&backend.url())
        .unwrap()
        .keepalive(Some(Duration::from_millis(50)))
        .idle_timeout(Some(Duration::from_millis(300)));
    let proxy = proxy(config).await;
    let (mut ws, _) = within(sockeye::connect(&proxy.url("/"))).await.unwrap();
    // Keepalive pings and pongs flow meanwhile; they do not count as activity.
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::GOING_AWAY);
            assert_eq!(frame.reason.as_str(), "idle timeout");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    let frame = within(rx.recv()).await.unwrap().unwrap();
    assert_eq!(frame.code, CloseCode::GOING_AWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_backend_relays_over_tls() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = certified.cert.pem();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key.into())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = sockeye::accept(tls).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.recv().await {
                    if message.is_data() && ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let tls = sockeye::tls::client_config_with_ca_pem(cert_pem.as_bytes()).unwrap();
    let config = ProxyConfig::default()
        .to(&format!("wss://localhost:{port}"))
        .unwrap()
        .tls(tls)
        .keepalive(Some(Duration::from_millis(50)));
    let proxy = proxy(config).await;
    let (mut ws, _) = within(sockeye::connect(&proxy.url("/secure")))
        .await
        .unwrap();
    ws.send("over TLS").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("over TLS"));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    ws.send(big.clone()).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::binary(big));
    // Keepalive toward a TLS backend is masked and its pong swallowed.
    eventually(|| proxy.proxy.metrics().keepalive_pings() >= 4).await;
    ws.send("still here").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("still here"));
    within(ws.close(None)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_both_sides_with_1001() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = backend(sockeye::Config::default(), move |mut ws| {
        let tx = tx.clone();
        async move {
            while let Some(Ok(message)) = ws.recv().await {
                if let Message::Close(frame) = message {
                    let _ = tx.send(frame);
                }
            }
        }
    })
    .await;
    let proxy = proxy(ProxyConfig::default().to(&backend.url()).unwrap()).await;
    let (mut ws, _) = within(sockeye::connect(&proxy.url("/"))).await.unwrap();
    drop(proxy); // its serve future sees the shutdown signal
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::GOING_AWAY);
            assert_eq!(frame.reason.as_str(), "proxy shutting down");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    let frame = within(rx.recv()).await.unwrap().unwrap();
    assert_eq!(frame.code, CloseCode::GOING_AWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_connections_give_their_buffers_back() {
    let backend = echo_backend().await;
    let config = ProxyConfig::default()
        .to(&backend.url())
        .unwrap()
        .keepalive(Some(Duration::from_millis(100)));
    let proxy = proxy(config).await;
    let metrics = proxy.proxy.metrics().clone();
    let (mut ws, _) = within(sockeye::connect(&proxy.url("/"))).await.unwrap();
    ws.send("wake up").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("wake up"));
    assert!(metrics.relay_buffer_bytes() > 0);
    // Quiet for a second (keepalives do not wake the buffers for long):
    // both directions release theirs.
    eventually(|| metrics.relay_buffer_bytes() == 0).await;
    // A small message is relayed from the small first read...
    ws.send("small").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("small"));
    // ...and a large one brings the buffers back.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    ws.send(big.clone()).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::binary(big));
    within(ws.close(None)).await.unwrap();
    eventually(|| metrics.relay_buffer_bytes() == 0 && metrics.connections_open() == 0).await;
}
