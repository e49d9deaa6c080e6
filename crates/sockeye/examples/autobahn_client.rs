//! Drives the Autobahn|Testsuite fuzzing server with the sockeye client.
//!
//! ```text
//! cargo run --release -p sockeye --example autobahn_client -- ws://127.0.0.1:9001
//! ```
//! Runs every case (getCaseCount, runCase, updateReports) as agent "sockeye"
//! (or $AUTOBAHN_AGENT), echoing each message back, with permessage-deflate offered.

use sockeye::{Config, DeflateConfig, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("AUTOBAHN_URL").ok())
        .ok_or("usage: autobahn_client ws://127.0.0.1:9001")?;
    let agent = std::env::var("AUTOBAHN_AGENT").unwrap_or_else(|_| "sockeye".to_string());
    let config = Config::default().deflate(DeflateConfig::default());

    let (mut ws, _) = sockeye::connect_with(&format!("{base}/getCaseCount"), &config).await?;
    let count: u32 = match ws.recv().await {
        Some(Ok(Message::Text(text))) => text.as_str().trim().parse()?,
        other => return Err(format!("unexpected answer to getCaseCount: {other:?}").into()),
    };
    while ws.recv().await.is_some() {}

    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        match sockeye::connect_with(&url, &config).await {
            Ok((mut ws, _)) => {
                while let Some(message) = ws.recv().await {
                    match message {
                        Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                            if ws.feed(message).await.is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => {}
                    }
                }
            }
            Err(e) => eprintln!("case {case}: {e}"),
        }
    }

    let (mut ws, _) =
        sockeye::connect_with(&format!("{base}/updateReports?agent={agent}"), &config).await?;
    while ws.recv().await.is_some() {}
    println!("ran {count} cases as {agent}");
    Ok(())
}
