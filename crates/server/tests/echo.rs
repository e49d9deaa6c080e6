//! `EchoServer` end to end: echo through it with the sockeye client, a
//! wrong path, and shutdown.

use std::time::Duration;

use sockeye::{Config, DeflateConfig, Error, Message};
use sockeye_server::{EchoServer, ServeConfig};
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(20);

async fn bounded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {LIMIT:?}"))
}

async fn next(ws: &mut sockeye::WebSocket<sockeye::MaybeTlsStream>) -> Message {
    match bounded("recv", ws.recv()).await {
        Some(Ok(message)) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn echoes_until_shut_down() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        EchoServer::new(ServeConfig::default())
            .run(listener, async {
                let _ = stopped.await;
            })
            .await
    });

    // The default ServeConfig offers compression; a client that wants it gets it.
    let client = Config::default().deflate(DeflateConfig::default());
    let (mut ws, _) = bounded(
        "connect",
        sockeye::connect_with(&format!("ws://{addr}/echo"), &client),
    )
    .await
    .expect("connect to /echo");
    assert!(ws.is_compressed());
    ws.send("hello, sockeye").await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("hello, sockeye"));
    let json =
        r#"{"type":"chat","room":"lobby","text":"a message long enough to compress"}"#.repeat(20);
    ws.send(json.as_str()).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text(json.as_str()));
    let binary: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    ws.send(binary.clone()).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(binary));

    // A plain client, and many messages in one burst.
    let (mut plain, _) = sockeye::connect(&format!("ws://{addr}/echo"))
        .await
        .unwrap();
    assert!(!plain.is_compressed());
    for i in 0..500 {
        plain.feed(format!("burst {i}")).await.unwrap();
    }
    plain.flush().await.unwrap();
    for i in 0..500 {
        assert_eq!(next(&mut plain).await, Message::text(format!("burst {i}")));
    }

    // A wrong path is refused with a body that names the echo endpoint...
    match bounded("connect", sockeye::connect(&format!("ws://{addr}/chat"))).await {
        Err(Error::Refused { status, body, .. }) => {
            assert_eq!(status, 404);
            assert!(body.contains("/echo"), "{body:?}");
            assert!(body.contains("/chat"), "{body:?}");
        }
        other => panic!("expected a 404 refusal, got {other:?}"),
    }
    // ...and the connections already open carry on.
    ws.send("still here").await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("still here"));

    // Pings are answered.
    ws.send(Message::Ping("are you there".into()))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, Message::Pong("are you there".into()));

    bounded("close", ws.close(None)).await.unwrap();
    assert!(ws.recv().await.is_none());

    stop.send(()).unwrap();
    bounded("run() after shutdown", server)
        .await
        .expect("run returns");
    // The listener went away with run(): nobody accepts any more.
    match bounded("connect", sockeye::connect(&format!("ws://{addr}/echo"))).await {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("expected a refused connection after shutdown, got {other:?}"),
    }
    // A connection accepted before shutdown lives on in its own task.
    plain.send("after shutdown").await.unwrap();
    assert_eq!(next(&mut plain).await, Message::text("after shutdown"));
    plain.close(None).await.unwrap();
}

#[tokio::test]
async fn a_message_over_the_configured_limit_closes_with_1009() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ServeConfig::default();
    config.websocket = config.websocket.max_message_size(1024);
    let server = tokio::spawn(async move {
        EchoServer::new(config)
            .run(listener, std::future::pending())
            .await
    });
    let (mut ws, _) = sockeye::connect(&format!("ws://{addr}/echo"))
        .await
        .unwrap();
    ws.send(vec![0u8; 1024]).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![0u8; 1024]));
    ws.send(vec![0u8; 1025]).await.unwrap();
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, sockeye::CloseCode::TOO_BIG),
        other => panic!("expected Close(1009), got {other:?}"),
    }
    assert!(bounded("recv", ws.recv()).await.is_none());
    server.abort();
}
