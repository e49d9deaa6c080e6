//! `tls::server_config` end to end: PEM files made at run time, a TLS
//! acceptor built from them, a WebSocket echoed over it with the sockeye
//! client trusting that certificate.

use std::time::Duration;

use sockeye::{Config, Message};
use sockeye_server::tls;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const LIMIT: Duration = Duration::from_secs(20);

async fn bounded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {LIMIT:?}"))
}

#[tokio::test]
async fn wss_echo_with_a_config_loaded_from_pem_files() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();

    let acceptor = TlsAcceptor::from(tls::server_config(&cert_path, &key_path).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.expect("TLS accept");
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let mut ws = sockeye::accept(tls).await.expect("WebSocket accept");
        let message = ws.recv().await.expect("a message").expect("a good message");
        ws.send(message).await.unwrap();
        // Read on until the client's close has been answered.
        let mut closed = false;
        while let Some(event) = ws.recv().await {
            closed |= matches!(event, Ok(Message::Close(_)));
        }
        (alpn, closed)
    });

    let config = Config {
        tls: Some(sockeye::tls::client_config_with_ca_pem(cert_pem.as_bytes()).unwrap()),
        ..Config::default()
    };
    let (mut ws, response) = bounded(
        "connect",
        sockeye::connect_with(&format!("wss://localhost:{port}/"), &config),
    )
    .await
    .expect("wss connect");
    assert_eq!(response.status(), 101);
    assert!(matches!(ws.get_ref(), sockeye::MaybeTlsStream::Tls(_)));

    ws.send("hello over TLS").await.unwrap();
    match bounded("recv", ws.recv()).await {
        Some(Ok(message)) => assert_eq!(message, Message::text("hello over TLS")),
        other => panic!("expected the echo, got {other:?}"),
    }
    bounded("close", ws.close(None)).await.unwrap();

    let (alpn, closed) = bounded("server", server).await.unwrap();
    // The sockeye client offers no ALPN; were one offered, only http/1.1 could be chosen.
    assert!(
        alpn.is_none() || alpn.as_deref() == Some(&b"http/1.1"[..]),
        "{alpn:?}"
    );
    assert!(closed, "the server saw the client's close");
}
