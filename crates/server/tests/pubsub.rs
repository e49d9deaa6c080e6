//! The JSON protocol of docs/PROTOCOL.md, spoken to the demo server
//! (`demo_app` without its simulations, served by `App::serve`) over real
//! TCP: errors that leave the connection open, many subscriptions from one
//! connection, publish/subscribe across connections, resuming with `since`,
//! gaps, presence, and the order of an ack and the topic's messages.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use sockeye::{MaybeTlsStream, Message};
use sockeye_server::hub::{Hub, HubConfig};
use sockeye_server::protocol::{json_encoder, pubsub_endpoint};
use sockeye_server::{demo_app, App, DemoConfig, EndpointConfig};
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(30);

type Ws = sockeye::WebSocket<MaybeTlsStream>;

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {LIMIT:?}"))
}

/// A running server.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// The demo server, without its simulated feed and dashboard.
    async fn demo() -> Self {
        let config = DemoConfig {
            simulations: false,
            ..DemoConfig::default()
        };
        Self::start(demo_app(&config).await.expect("the demo app builds")).await
    }

    async fn start(app: App) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn client(&self, user: Option<&str>) -> Client {
        let url = match user {
            Some(user) => format!("ws://{}/ws?user={user}", self.addr),
            None => format!("ws://{}/ws", self.addr),
        };
        Client::connect(&url).await
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        bounded("serve after shutdown", &mut self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// A protocol client: one JSON object per text frame.
struct Client {
    ws: Ws,
    welcome: Value,
}

impl Client {
    async fn connect(url: &str) -> Self {
        let (ws, _) = bounded("connect", sockeye::connect(url))
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        let mut client = Client {
            ws,
            welcome: Value::Null,
        };
        client.welcome = client.next().await;
        assert_eq!(client.welcome["type"], "welcome", "the first frame");
        client
    }

    async fn send(&mut self, request: Value) {
        bounded("send", self.ws.send(request.to_string()))
            .await
            .unwrap();
    }

    /// The next frame the server sent.
    async fn next(&mut self) -> Value {
        loop {
            match bounded("recv", self.ws.recv()).await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends `request` and returns the next frame (its answer, when nothing
    /// else is on its way).
    async fn request(&mut self, request: Value) -> Value {
        self.send(request).await;
        self.next().await
    }

    async fn close(mut self) {
        bounded("close", self.ws.close(None)).await.unwrap();
    }
}

fn offset(frame: &Value) -> u64 {
    frame["position"]["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("no position in {frame}"))
}

fn epoch(frame: &Value) -> String {
    frame["position"]["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no epoch in {frame}"))
        .to_string()
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn bad_requests_get_errors_and_the_connection_stays_open() {
    let server = Server::demo().await;
    let mut c = server.client(Some("alice")).await;
    assert_eq!(c.welcome["user"], "alice");
    assert!(c.welcome["connection"].as_str().unwrap().starts_with('c'));

    let e = c.request(json!("ignored")).await;
    assert_eq!(
        (&e["type"], &e["code"]),
        (&json!("error"), &json!("bad_json"))
    );
    c.ws.send("{not json").await.unwrap();
    let e = c.next().await;
    assert_eq!(e["code"], "bad_json");
    assert!(
        e.get("id").is_none(),
        "an unreadable request has no id: {e}"
    );
    c.ws.send(vec![1u8, 2, 3]).await.unwrap();
    assert_eq!(c.next().await["code"], "bad_json");

    let e = c.request(json!({"type": "dance", "id": 7})).await;
    assert_eq!(e["code"], "unknown_type");
    assert_eq!(e["id"], 7, "the id comes back with its JSON type");
    let e = c.request(json!({"id": "x"})).await;
    assert_eq!(
        (&e["code"], &e["id"]),
        (&json!("missing_field"), &json!("x"))
    );
    let e = c.request(json!({"type": "subscribe", "id": 1})).await;
    assert_eq!(e["code"], "missing_field");
    let e = c
        .request(json!({"type": "publish", "id": 2, "topic": "t"}))
        .await;
    assert_eq!(e["code"], "missing_field");
    let e = c
        .request(json!({"type": "subscribe", "id": 3, "topic": "x".repeat(129)}))
        .await;
    assert_eq!(e["code"], "invalid_field");
    let e = c
        .request(json!({"type": "publish", "id": 4, "topic": "feed:stocks", "data": 1}))
        .await;
    assert_eq!(e["code"], "forbidden");

    // After all that, the connection works.
    let ack = c
        .request(json!({"type": "subscribe", "id": 5, "topic": "chat:ok"}))
        .await;
    assert_eq!(
        (&ack["type"], &ack["op"], &ack["id"]),
        (&json!("ack"), &json!("subscribe"), &json!(5))
    );
    c.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_user_name_outside_the_rules_is_refused_at_the_handshake() {
    let server = Server::demo().await;
    let url = format!("ws://{}/ws?user=bad%20name", server.addr);
    match bounded("connect", sockeye::connect(&url)).await {
        Err(sockeye::Error::Refused { status, body, .. }) => {
            assert_eq!(status, 400);
            assert!(body.contains("user must be"), "{body}");
        }
        other => panic!("expected a 400, got {:?}", other.map(|(_, r)| r)),
    }
    server.stop().await;
}

/// The demo endpoint limits requests to 200 a second (a Reply limit); 100,000
/// subscriptions are sent through the protocol endpoint with the same
/// defaults minus that limit, on an app of the same shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_to_100000_topics_gets_exactly_the_limit_and_errors_for_the_rest() {
    const TOPICS: usize = 100_000;
    const BATCH: usize = 1000;
    let config = EndpointConfig::default();
    let max = config.max_topics_per_connection;
    let hub = Hub::new(HubConfig::default().encoder(json_encoder()));
    let mut app = App::with_hub(hub.clone());
    app.add_endpoint("/ws", pubsub_endpoint(config));
    let server = Server::start(app).await;

    let c = server.client(None).await;
    let mut other = server.client(Some("bob")).await;
    let (mut reader, mut writer) = c.ws.split();
    let counting = tokio::spawn(async move {
        let (mut acks, mut too_many) = (0usize, 0usize);
        let mut answered = vec![false; TOPICS];
        while acks + too_many < TOPICS {
            let frame: Value = match reader.recv().await {
                Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str()).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("the connection ended: {other:?}"),
            };
            let id = frame["id"].as_u64().unwrap_or_else(|| panic!("{frame}")) as usize;
            assert!(!answered[id], "request {id} answered twice");
            answered[id] = true;
            match (frame["type"].as_str(), frame["code"].as_str()) {
                (Some("ack"), _) => acks += 1,
                (Some("error"), Some("too_many_topics")) => too_many += 1,
                _ => panic!("unexpected answer {frame}"),
            }
        }
        (acks, too_many, reader)
    });

    // Batches, without waiting for answers; meanwhile another connection
    // keeps getting quick answers.
    let mut slowest = Duration::ZERO;
    for batch in 0..TOPICS / BATCH {
        for i in batch * BATCH..(batch + 1) * BATCH {
            let request = json!({"type": "subscribe", "id": i, "topic": format!("t{i}")});
            writer.feed(request.to_string()).await.unwrap();
        }
        writer.flush().await.unwrap();
        if batch % 10 == 0 {
            let started = std::time::Instant::now();
            let ack = other
                .request(
                    json!({"type": "publish", "id": batch, "topic": "elsewhere", "data": batch}),
                )
                .await;
            assert_eq!(ack["type"], "ack", "{ack}");
            slowest = slowest.max(started.elapsed());
        }
    }
    let (acks, too_many, reader) = bounded("every answer", counting).await.unwrap();
    assert_eq!(acks, max, "exactly max_topics_per_connection acks");
    assert_eq!(too_many, TOPICS - max);
    assert!(
        slowest < Duration::from_secs(5),
        "another connection waited {slowest:?} for an answer"
    );
    assert_eq!(
        hub.topic_count(),
        max,
        "refused subscriptions left nothing behind"
    );

    // The subscriptions it got work; the refused ones deliver nothing.
    let mut reader = reader;
    for topic in ["t99999", "t0"] {
        let ack = other
            .request(json!({"type": "publish", "topic": topic, "data": topic}))
            .await;
        assert_eq!(ack["type"], "ack");
    }
    let message = loop {
        match bounded("recv", reader.recv()).await {
            Some(Ok(Message::Text(t))) => break serde_json::from_str::<Value>(t.as_str()).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        (&message["type"], &message["topic"]),
        (&json!("message"), &json!("t0")),
        "{message}"
    );
    drop(reader);
    bounded("close", writer.close(None)).await.unwrap();
    other.close().await;
    server.stop().await;
}

#[tokio::test]
async fn publications_reach_other_connections_with_positions_one_apart() {
    let server = Server::demo().await;
    let mut alice = server.client(Some("alice")).await;
    let mut bob = server.client(Some("bob")).await;

    let ack = alice
        .request(json!({"type": "subscribe", "id": 1, "topic": "chat:lobby"}))
        .await;
    assert_eq!(
        (&ack["type"], &ack["topic"]),
        (&json!("ack"), &json!("chat:lobby"))
    );
    assert_eq!(offset(&ack), 0, "a topic with no message yet is at 0");
    let epoch0 = epoch(&ack);

    for i in 1..=5u64 {
        let ack = bob
            .request(json!({"type": "publish", "id": i, "topic": "chat:lobby", "data": {"text": format!("hi {i}")}}))
            .await;
        assert_eq!(
            (&ack["type"], &ack["op"], &ack["id"]),
            (&json!("ack"), &json!("publish"), &json!(i))
        );
        assert_eq!(offset(&ack), i);
        assert_eq!(epoch(&ack), epoch0);
    }
    for i in 1..=5u64 {
        let m = alice.next().await;
        assert_eq!(m["type"], "message");
        assert_eq!(m["topic"], "chat:lobby");
        assert_eq!(m["data"], json!({"text": format!("hi {i}")}));
        assert_eq!(m["from"], "bob");
        assert_eq!(offset(&m), i, "positions go up by one");
        assert_eq!(epoch(&m), epoch0);
    }
    // A string is data too, and arrives as a string.
    bob.request(json!({"type": "publish", "topic": "chat:lobby", "data": "plain"}))
        .await;
    assert_eq!(alice.next().await["data"], "plain");

    alice.close().await;
    bob.close().await;
    server.stop().await;
}

#[tokio::test]
async fn resuming_with_since_gets_exactly_the_missed_messages_in_order() {
    let server = Server::demo().await;
    let mut bob = server.client(Some("bob")).await;
    let mut alice = server.client(Some("alice")).await;
    alice
        .request(json!({"type": "subscribe", "topic": "chat:resume"}))
        .await;
    let publish = |i: u64| json!({"type": "publish", "topic": "chat:resume", "data": i});
    for i in 1..=3 {
        bob.request(publish(i)).await;
    }
    let mut last = Value::Null;
    for i in 1..=3 {
        last = alice.next().await;
        assert_eq!(last["data"], i);
    }
    let since = last["position"].clone();
    assert_eq!(since["offset"], 3);
    alice.close().await;

    // Away: four messages are missed.
    for i in 4..=7 {
        bob.request(publish(i)).await;
    }
    let mut alice = server.client(Some("alice")).await;
    let ack = alice
        .request(json!({"type": "subscribe", "id": "r", "topic": "chat:resume", "since": since}))
        .await;
    assert_eq!(
        (&ack["type"], &ack["id"]),
        (&json!("ack"), &json!("r")),
        "the ack first"
    );
    assert_eq!(offset(&ack), 7, "the ack carries the latest position");
    for i in 4..=7u64 {
        let m = alice.next().await;
        assert_eq!(
            (&m["type"], &m["data"]),
            (&json!("message"), &json!(i)),
            "{m}"
        );
        assert_eq!(offset(&m), i);
    }
    // Then live, with nothing twice.
    bob.request(publish(8)).await;
    let m = alice.next().await;
    assert_eq!((m["data"].as_u64(), offset(&m)), (Some(8), 8));

    // Resuming from the latest position replays nothing.
    let mut carol = server.client(None).await;
    let latest = m["position"].clone();
    let ack = carol
        .request(json!({"type": "subscribe", "topic": "chat:resume", "since": latest}))
        .await;
    assert_eq!((&ack["type"], offset(&ack)), (&json!("ack"), 8));
    bob.request(publish(9)).await;
    assert_eq!(
        carol.next().await["data"],
        9,
        "nothing replayed before the live one"
    );

    alice.close().await;
    bob.close().await;
    carol.close().await;
    server.stop().await;
}

#[tokio::test]
async fn since_from_a_foreign_epoch_gets_a_gap_then_an_ack() {
    let server = Server::demo().await;
    let mut bob = server.client(Some("bob")).await;
    for i in 1..=2 {
        bob.request(json!({"type": "publish", "topic": "chat:gap", "data": i}))
            .await;
    }
    let mut alice = server.client(None).await;
    alice
        .send(json!({"type": "subscribe", "id": 9, "topic": "chat:gap", "since": {"epoch": "from-another-life", "offset": 1}}))
        .await;
    let gap = alice.next().await;
    assert_eq!(
        (&gap["type"], &gap["topic"]),
        (&json!("gap"), &json!("chat:gap")),
        "{gap}"
    );
    let ack = alice.next().await;
    assert_eq!(
        (&ack["type"], &ack["id"]),
        (&json!("ack"), &json!(9)),
        "{ack}"
    );
    assert_eq!(offset(&ack), 2);
    // Then live messages after the ack's position, nothing replayed.
    bob.request(json!({"type": "publish", "topic": "chat:gap", "data": 3}))
        .await;
    let m = alice.next().await;
    assert_eq!((&m["type"], offset(&m)), (&json!("message"), 3));

    // A position ahead of the latest is a gap too.
    let mut carol = server.client(None).await;
    let ahead = json!({"epoch": epoch(&ack), "offset": 1000});
    carol
        .send(json!({"type": "subscribe", "topic": "chat:gap", "since": ahead}))
        .await;
    assert_eq!(carol.next().await["type"], "gap");
    assert_eq!(carol.next().await["type"], "ack");

    alice.close().await;
    bob.close().await;
    carol.close().await;
    server.stop().await;
}

#[tokio::test]
async fn presence_announces_joins_and_leaves_per_user_and_lists_members() {
    let server = Server::demo().await;
    let mut alice = server.client(Some("alice")).await;
    let ack = alice
        .request(json!({"type": "join", "id": 1, "room": "chat:room"}))
        .await;
    assert_eq!(
        (&ack["type"], &ack["op"], &ack["room"]),
        (&json!("ack"), &json!("join"), &json!("chat:room"))
    );
    let p = alice.next().await;
    assert_eq!(
        p,
        json!({"type": "presence", "room": "chat:room", "event": "join", "user": "alice", "count": 1})
    );

    let mut bob = server.client(Some("bob")).await;
    assert_eq!(
        bob.request(json!({"type": "join", "room": "chat:room"}))
            .await["type"],
        "ack"
    );
    let bob_joined = json!({"type": "presence", "room": "chat:room", "event": "join", "user": "bob", "count": 2});
    assert_eq!(
        bob.next().await,
        bob_joined,
        "the joiner sees its own join after its ack"
    );
    assert_eq!(alice.next().await, bob_joined);

    let members = alice
        .request(json!({"type": "members", "id": 2, "room": "chat:room"}))
        .await;
    assert_eq!(
        members,
        json!({"type": "members", "id": 2, "room": "chat:room", "users": ["alice", "bob"], "count": 2})
    );
    let nobody = alice
        .request(json!({"type": "members", "room": "chat:empty"}))
        .await;
    assert_eq!(
        (&nobody["users"], &nobody["count"]),
        (&json!([]), &json!(0))
    );

    // Bob's second tab is silent; leaving from the first is silent too,
    // while the second is still in the room.
    let mut bob2 = server.client(Some("bob")).await;
    assert_eq!(
        bob2.request(json!({"type": "join", "room": "chat:room"}))
            .await["type"],
        "ack"
    );
    let ack = bob
        .request(json!({"type": "leave", "id": 3, "room": "chat:room"}))
        .await;
    assert_eq!((&ack["op"], &ack["id"]), (&json!("leave"), &json!(3)));
    let members = alice
        .request(json!({"type": "members", "room": "chat:room"}))
        .await;
    assert_eq!(
        members["users"],
        json!(["alice", "bob"]),
        "nothing announced in between (the members answer came next): {members}"
    );

    // Bob's last connection closes: his leave is announced.
    bob2.close().await;
    assert_eq!(
        alice.next().await,
        json!({"type": "presence", "room": "chat:room", "event": "leave", "user": "bob", "count": 1})
    );
    let members = alice
        .request(json!({"type": "members", "room": "chat:room"}))
        .await;
    assert_eq!(
        (&members["users"], &members["count"]),
        (&json!(["alice"]), &json!(1))
    );

    alice.close().await;
    bob.close().await;
    server.stop().await;
}

/// PROTOCOL.md, "Fresh subscribe": the ack comes first; after it, every
/// message with an offset greater than the ack's, in order, once each. And
/// after an `unsubscribe` ack nothing of the topic arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ack_precedes_the_topics_messages_while_another_connection_publishes() {
    let server = Server::demo().await;
    let mut publisher = server.client(Some("pub")).await;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let publishing = tokio::spawn(async move {
        let mut published = 0u64;
        loop {
            publisher
                .send(json!({"type": "publish", "topic": "chat:busy", "data": published}))
                .await;
            // Acks and rate_limited errors both mean "go on".
            publisher.next().await;
            published += 1;
            if stop_rx.try_recv().is_ok() {
                return (publisher, published);
            }
        }
    });

    let mut sub = server.client(Some("sub")).await;
    for round in 0..20 {
        sub.send(json!({"type": "subscribe", "id": round, "topic": "chat:busy"}))
            .await;
        let ack = sub.next().await;
        assert_eq!(
            (&ack["type"], &ack["id"]),
            (&json!("ack"), &json!(round)),
            "round {round}: a message of the topic came before its ack: {ack}"
        );
        let mut expected = offset(&ack) + 1;
        for _ in 0..5 {
            let m = sub.next().await;
            assert_eq!(m["type"], "message", "{m}");
            assert_eq!(
                offset(&m),
                expected,
                "round {round}: after an ack at {}, every later offset once, in order",
                offset(&ack)
            );
            expected += 1;
        }
        sub.send(json!({"type": "unsubscribe", "id": format!("u{round}"), "topic": "chat:busy"}))
            .await;
        // Messages queued before the unsubscribe may still come; none after its ack.
        loop {
            let frame = sub.next().await;
            if frame["type"] == "ack" {
                assert_eq!(frame["id"], format!("u{round}"));
                break;
            }
            assert_eq!(frame["type"], "message");
            assert_eq!(offset(&frame), expected, "still in order");
            expected += 1;
        }
    }
    stop_tx.send(()).unwrap();
    let (publisher, published) = bounded("the publisher", publishing).await.unwrap();
    assert!(published > 20);
    publisher.close().await;
    sub.close().await;
    server.stop().await;
}

#[tokio::test]
async fn the_demo_endpoint_answers_a_request_flood_with_rate_limited_errors() {
    let server = Server::demo().await;
    let mut c = server.client(None).await;
    // 300 requests at once: past the demo's 200 a second.
    for i in 0..300 {
        c.ws.feed(json!({"type": "members", "id": i, "room": "r"}).to_string())
            .await
            .unwrap();
    }
    c.ws.flush().await.unwrap();
    let (mut answered, mut limited) = (0, 0);
    for _ in 0..300 {
        let frame = c.next().await;
        match frame["type"].as_str() {
            Some("members") => answered += 1,
            Some("error") => {
                assert_eq!(frame["code"], "rate_limited", "{frame}");
                limited += 1;
            }
            _ => panic!("{frame}"),
        }
    }
    assert!(
        answered >= 200 && limited >= 1,
        "{answered} answered, {limited} limited"
    );
    c.close().await;
    server.stop().await;
}

/// Regression: a fresh subscription registered the subscriber, then read
/// the topic's latest position for the ack; publications in between were
/// delivered after an ack whose position already counted them (hundreds,
/// at times). The publisher here is the hub itself, unthrottled (the demo
/// endpoint's rate limit keeps connections far slower).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_the_acks_position_counts_follows_a_fresh_subscribe_ack() {
    let hub = Hub::new(HubConfig::default().encoder(json_encoder()));
    let mut app = App::with_hub(hub.clone());
    app.add_endpoint("/ws", pubsub_endpoint(EndpointConfig::default()));
    let server = Server::start(app).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = tokio::spawn({
        let (stop, hub) = (stop.clone(), hub.clone());
        async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                hub.publish("busy", n.to_string(), true, None)
                    .await
                    .unwrap();
                n += 1;
                if n % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            n
        }
    });
    let mut sub = server.client(None).await;
    for round in 0..200 {
        sub.send(json!({"type": "subscribe", "id": round, "topic": "busy"}))
            .await;
        let ack = sub.next().await;
        assert_eq!(
            (&ack["type"], &ack["id"]),
            (&json!("ack"), &json!(round)),
            "{ack}"
        );
        // Above the ack's position and in order. (Not necessarily one
        // apart: this publisher can outrun a client of a debug build, and
        // the endpoint's Drop policy then skips some for it.)
        let mut last = offset(&ack);
        for k in 1..=3 {
            let m = sub.next().await;
            assert!(
                offset(&m) > last,
                "round {round}: message {k} at {} after an ack at {} (previous {last})",
                offset(&m),
                offset(&ack)
            );
            last = offset(&m);
        }
        sub.send(json!({"type": "unsubscribe", "id": "u", "topic": "busy"}))
            .await;
        while sub.next().await["type"] != "ack" {}
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = bounded("the publisher", publisher).await.unwrap();
    assert!(published > 1000, "{published}");
    sub.close().await;
    server.stop().await;
}
