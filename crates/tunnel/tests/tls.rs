//! A tunnel server with TLS: the agent's link is wss://, the public URL is
//! https://, and a wss:// client reaches the laptop through it.

mod common;

use std::sync::Arc;

use common::*;
use sockeye::Message;
use sockeye_tunnel::{ServerConfig, TunnelConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_link_and_https_urls() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), format!("*.{DOMAIN}")])
            .unwrap();
    let tls = sockeye_server::tls::server_config_from_pem(
        certified.cert.pem().as_bytes(),
        certified.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let client_tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );

    let server = server(ServerConfig::new(DOMAIN).token(TOKEN).tls(tls)).await;
    let local = ws_local().await;
    let mut config = agent_config(
        &server,
        vec![TunnelConfig::new(local.addr.port().to_string()).subdomain("secure")],
    );
    config.server = format!("https://127.0.0.1:{}", server.addr.port());
    config.tls = Some(Arc::clone(&client_tls));
    let agent = start_agent(config);
    let granted = within(agent.handle.clone().connected()).await.unwrap();
    assert_eq!(
        granted[0].url,
        format!("https://secure.{DOMAIN}:{}", server.addr.port())
    );

    let mut client = sockeye::Config::default().header(
        http::header::HOST,
        http::HeaderValue::from_str(&server.host("secure")).unwrap(),
    );
    client.tls = Some(client_tls);
    let (mut ws, _) = within(sockeye::connect_with(
        &format!("wss://127.0.0.1:{}/", server.addr.port()),
        &client,
    ))
    .await
    .unwrap();
    ws.send("over TLS").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("over TLS"));

    // An agent that does not trust the certificate says why.
    let mut untrusting = agent_config(
        &server,
        vec![TunnelConfig::new(local.addr.port().to_string()).subdomain("other")],
    );
    untrusting.server = format!("https://127.0.0.1:{}", server.addr.port());
    let agent = start_agent(untrusting);
    let mut handle = agent.handle.clone();
    let status = within(handle.wait_for(|s| {
        matches!(
            s.link,
            sockeye_tunnel::inspect::LinkStatus::Reconnecting { .. }
        )
    }))
    .await
    .unwrap();
    let sockeye_tunnel::inspect::LinkStatus::Reconnecting { reason: status } = status.link else {
        panic!("waited for reconnecting")
    };
    assert!(
        status.contains("cannot reach the tunnel server"),
        "{status}"
    );
}
