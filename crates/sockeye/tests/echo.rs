//! Echo round trips over real TCP: `accept_with` on one side, `connect_with`
//! on the other, with and without permessage-deflate, at the size limits,
//! and subprotocol negotiation.

mod common;

use bytes::Bytes;
use common::{assert_binary, bounded, next, noise, pattern, serve_one};
use sockeye::{CloseCode, Config, DeflateConfig, Error, Message};

const MIB: usize = 1 << 20;

/// Connects a client with `client` to a one-connection echo server with
/// `server`, round-trips text, binary, empty and large messages of `sizes`
/// bytes, closes, and checks what the server saw.
async fn round_trips(server: Config, client: Config, sizes: &[usize], compressed: bool) {
    let (addr, server_task) = serve_one(server).await;
    let (mut ws, _response) = bounded(
        "connect",
        sockeye::connect_with(&format!("ws://{addr}/echo"), &client),
    )
    .await
    .expect("connect");
    assert_eq!(
        ws.is_compressed(),
        compressed,
        "client's view of compression"
    );

    ws.send("hello").await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("hello"));
    ws.send("").await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text(""));
    ws.send(Bytes::new()).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(Bytes::new()));
    ws.send(vec![0u8, 1, 2, 0xff]).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![0u8, 1, 2, 0xff]));
    let long_text = "sockeye ".repeat(1000);
    ws.send(long_text.as_str()).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text(long_text.as_str()));
    // Repeats matter with compression: with context takeover the second
    // copy refers back to the first.
    for _ in 0..3 {
        ws.send("a message long enough to be compressed, sent three times over")
            .await
            .unwrap();
        assert_eq!(
            next(&mut ws).await,
            Message::text("a message long enough to be compressed, sent three times over")
        );
    }
    for (i, &len) in sizes.iter().enumerate() {
        for payload in [pattern(len), noise(len, i as u64 + 1)] {
            bounded("send", ws.send(payload.clone())).await.unwrap();
            assert_binary(next(&mut ws).await, &payload);
        }
    }

    bounded("close", ws.close(None)).await.unwrap();
    assert!(ws.recv().await.is_none());
    let (request, seen) = bounded("server", server_task)
        .await
        .unwrap()
        .expect("server");
    assert_eq!(request.uri().path(), "/echo");
    assert_eq!(seen.compressed, compressed, "server's view of compression");
    assert!(seen.error.is_none(), "server error: {:?}", seen.error);
    assert_eq!(seen.echoed, 8 + 2 * sizes.len());
    let close = seen
        .close
        .expect("the server saw a close")
        .expect("with a status");
    assert_eq!(close.code, CloseCode::NORMAL);
}

#[tokio::test]
async fn echoes_text_binary_empty_and_large_messages_up_to_the_limit() {
    // 16 MiB is exactly the default max_message_size: it must pass.
    round_trips(
        Config::default(),
        Config::default(),
        &[MIB, 16 * MIB],
        false,
    )
    .await;
}

#[tokio::test]
async fn echoes_with_permessage_deflate() {
    let config = Config::default().deflate(DeflateConfig::default());
    round_trips(config.clone(), config, &[64 * 1024, MIB], true).await;
}

#[tokio::test]
async fn echoes_with_deflate_without_context_takeover() {
    let variants = [
        DeflateConfig {
            server_no_context_takeover: true,
            ..DeflateConfig::default()
        },
        DeflateConfig {
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        },
        DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        },
    ];
    for deflate in variants {
        // The client asks for the variant; the server runs defaults and must honour it.
        let client = Config::default().deflate(deflate.clone());
        let server = Config::default().deflate(DeflateConfig::default());
        round_trips(server, client, &[64 * 1024], true).await;
        // The server imposes it on a default client.
        let client = Config::default().deflate(DeflateConfig::default());
        let server = Config::default().deflate(deflate);
        round_trips(server, client, &[64 * 1024], true).await;
    }
}

#[tokio::test]
async fn compression_is_used_only_when_both_sides_want_it() {
    let on = Config::default().deflate(DeflateConfig::default());
    let off = Config::default();
    round_trips(on.clone(), off.clone(), &[], false).await;
    round_trips(off, on, &[], false).await;
}

#[tokio::test]
async fn a_message_one_byte_over_the_limit_is_refused_with_1009() {
    let (addr, server_task) = serve_one(Config::default()).await;
    let (ws, _) = sockeye::connect_with(&format!("ws://{addr}/echo"), &Config::default())
        .await
        .unwrap();
    let (mut reader, mut writer) = ws.split();
    // The server refuses at the header and stops reading, so the rest of
    // the payload may never leave: send from a task of its own.
    let sender = tokio::spawn(async move { writer.send(pattern(16 * MIB + 1)).await });
    let first = bounded("recv", reader.recv()).await;
    match first {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::TOO_BIG),
        // The server may drop the socket before the client reads the close frame.
        Some(Err(Error::Io(_) | Error::AbnormalClosure)) => {}
        other => panic!("expected Close(1009) or an I/O error, got {other:?}"),
    }
    let (_, seen) = bounded("server", server_task)
        .await
        .unwrap()
        .expect("server");
    match seen.error {
        Some(Error::Protocol(e)) => {
            assert_eq!(e.close_code(), CloseCode::TOO_BIG);
            assert!(e.to_string().contains("16777217"), "{e}");
        }
        other => panic!("server should report the oversized message, got {other:?}"),
    }
    assert_eq!(seen.echoed, 0);
    // The sender ends one way or another once the server is gone.
    let _ = bounded("sender", sender).await;
}

#[tokio::test]
async fn the_server_picks_the_first_offered_subprotocol_it_supports() {
    let cases: [(&[&str], &[&str], Option<&str>); 5] = [
        (&["v2.chat", "chat"], &["chat", "v2.chat"], Some("v2.chat")),
        (&["x-unknown", "chat"], &["chat", "v2.chat"], Some("chat")),
        (&["x-unknown"], &["chat"], None),
        (&[], &["chat"], None),
        (&["chat"], &[], None),
    ];
    for (offered, supported, chosen) in cases {
        let (addr, server_task) =
            serve_one(Config::default().protocols(supported.iter().copied())).await;
        let client = Config::default().protocols(offered.iter().copied());
        let (mut ws, response) = bounded(
            "connect",
            sockeye::connect_with(&format!("ws://{addr}/echo"), &client),
        )
        .await
        .unwrap_or_else(|e| panic!("offered {offered:?}, supported {supported:?}: {e}"));
        let got = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            got.as_deref(),
            chosen,
            "offered {offered:?}, supported {supported:?}"
        );
        ws.send("still works").await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text("still works"));
        ws.close(None).await.unwrap();
        let (request, _) = server_task.await.unwrap().unwrap();
        let sent: Vec<_> = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(sent.is_empty(), offered.is_empty());
    }
}

/// With compression the limit applies to the decompressed size: a
/// message of exactly the limit in zeros (a few KiB on the wire) passes,
/// one byte more is refused with 1009.
#[tokio::test]
async fn the_limit_applies_to_decompressed_messages() {
    let limit = 2 * MIB;
    let config = Config::default()
        .deflate(DeflateConfig::default())
        .max_message_size(limit);
    let (addr, server_task) = serve_one(config.clone()).await;
    let (mut ws, _) = sockeye::connect_with(&format!("ws://{addr}/echo"), &config)
        .await
        .unwrap();
    assert!(ws.is_compressed());
    let exact = Bytes::from(vec![0u8; limit]);
    bounded("send", ws.send(exact.clone())).await.unwrap();
    assert_binary(next(&mut ws).await, &exact);
    bounded("send", ws.send(vec![0u8; limit + 1]))
        .await
        .unwrap();
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::TOO_BIG),
        other => panic!("expected Close(1009), got {other:?}"),
    }
    assert!(bounded("recv", ws.recv()).await.is_none());
    let (_, seen) = bounded("server", server_task)
        .await
        .unwrap()
        .expect("server");
    assert_eq!(seen.echoed, 1);
    match seen.error {
        Some(Error::Protocol(e)) => assert_eq!(e.close_code(), CloseCode::TOO_BIG),
        other => panic!("server should report the oversized message, got {other:?}"),
    }
}
