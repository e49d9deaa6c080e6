//! wss:// against a server with a self-signed certificate made at run time.

mod common;

use std::sync::Arc;

use common::{bounded, next};
use sockeye::{Config, Error, Message};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A TLS echo server for `localhost` on 127.0.0.1:0; returns its port, the
/// certificate in PEM, and the task serving one connection.
async fn tls_echo_server() -> (
    u16,
    String,
    tokio::task::JoinHandle<Result<common::Seen, Error>>,
) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = certified.cert.pem();
    let cert_der = certified.cert.der().clone();
    let key_der = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der.into())
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let tls = acceptor.accept(tcp).await?;
        let ws = sockeye::accept(tls).await?;
        Ok(common::echo(ws).await)
    });
    (port, cert_pem, task)
}

#[tokio::test]
async fn wss_echo_with_a_private_ca() {
    let (port, cert_pem, server) = tls_echo_server().await;
    let config = Config {
        tls: Some(sockeye::tls::client_config_with_ca_pem(cert_pem.as_bytes()).unwrap()),
        ..Config::default()
    };
    let (mut ws, response) = bounded(
        "connect",
        sockeye::connect_with(&format!("wss://localhost:{port}/echo"), &config),
    )
    .await
    .expect("wss connect");
    assert_eq!(response.status(), 101);
    assert!(matches!(ws.get_ref(), sockeye::MaybeTlsStream::Tls(_)));
    ws.send("over TLS").await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("over TLS"));
    let big = common::noise(300 * 1024, 7);
    ws.send(big.clone()).await.unwrap();
    common::assert_binary(next(&mut ws).await, &big);
    bounded("close", ws.close(None)).await.unwrap();
    let seen = bounded("server", server).await.unwrap().expect("server");
    assert_eq!(seen.echoed, 2);
    assert!(seen.close.is_some());
}

#[tokio::test]
async fn wss_without_the_ca_fails_with_a_certificate_error() {
    let (port, _cert_pem, server) = tls_echo_server().await;
    let result = bounded(
        "connect",
        sockeye::connect(&format!("wss://localhost:{port}/echo")),
    )
    .await;
    match result {
        Err(Error::Tls(message)) => {
            assert!(message.to_lowercase().contains("certificate"), "{message}");
            assert!(message.contains("UnknownIssuer"), "{message}");
        }
        Err(other) => panic!("expected Error::Tls, got {other:?}"),
        Ok(_) => panic!("a self-signed certificate was trusted without its CA"),
    }
    // The server's TLS accept fails too (the client sent an alert).
    assert!(bounded("server", server).await.unwrap().is_err());
}

#[tokio::test]
async fn a_ca_file_without_certificates_is_refused() {
    match sockeye::tls::client_config_with_ca_pem(b"not a certificate") {
        Err(Error::Tls(message)) => assert!(message.contains("no PEM certificate"), "{message}"),
        other => panic!("expected Error::Tls, got {other:?}"),
    }
}
