//! The tunnel commands through the real binary: `sockeye tunnel-server`,
//! `sockeye http PORT`, `sockeye start`, on loopback.

use std::process::Stdio;
use std::time::Duration;

use sockeye::Message;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

const STEP: Duration = Duration::from_secs(15);

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .expect("step timed out")
}

fn sockeye(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sockeye"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the sockeye binary runs")
}

/// Reads `child`'s stream line by line until one contains `needle`.
async fn line_with(lines: &mut (impl tokio::io::AsyncBufRead + Unpin), needle: &str) -> String {
    within(async {
        let mut line = String::new();
        loop {
            line.clear();
            let n = lines.read_line(&mut line).await.unwrap();
            assert!(n > 0, "the output ended before a line with {needle:?}");
            if line.contains(needle) {
                return line.trim().to_owned();
            }
        }
    })
    .await
}

async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut ws) = sockeye::accept(tcp).await {
                    while let Some(Ok(message)) = ws.recv().await {
                        if message.is_data() && ws.send(message).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    port
}

async fn echo_through(server_port: u16, host: &str) -> Result<(), String> {
    let config = sockeye::Config::default().header(
        http::header::HOST,
        http::HeaderValue::from_str(host).unwrap(),
    );
    let (mut ws, _) = within(sockeye::connect_with(
        &format!("ws://127.0.0.1:{server_port}/"),
        &config,
    ))
    .await
    .map_err(|e| e.to_string())?;
    ws.send("ping through the binary")
        .await
        .map_err(|e| e.to_string())?;
    match within(ws.recv()).await {
        Some(Ok(Message::Text(text))) if text == "ping through the binary" => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_server_and_agent_binaries() {
    let mut server = sockeye(&[
        "tunnel-server",
        "--domain",
        "tunnel.localhost",
        "--addr",
        "127.0.0.1:0",
        "--token",
        "t0ken",
    ]);
    let mut server_err = BufReader::new(server.stderr.take().unwrap());
    let line = line_with(&mut server_err, "listening on").await;
    let port: u16 = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    tokio::spawn(async move {
        // Keep draining the server's log so it never blocks on a full pipe.
        let mut sink = String::new();
        while server_err.read_line(&mut sink).await.unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    let local = echo_server().await.to_string();
    let server_url = format!("http://127.0.0.1:{port}");
    let agent_args = [
        "http",
        &local,
        "--subdomain",
        "ws-app",
        "--server",
        &server_url,
        "--token",
        "t0ken",
        "--inspect",
        "off",
    ];
    let public = format!("http://ws-app.tunnel.localhost:{port}");
    let host = format!("ws-app.tunnel.localhost:{port}");

    let mut agent = sockeye(&agent_args);
    let mut out = BufReader::new(agent.stdout.take().unwrap());
    let line = line_with(&mut out, &public).await;
    assert_eq!(line, format!("{public} -> http://127.0.0.1:{local}"));
    echo_through(port, &host).await.unwrap();

    // A second agent for the same subdomain exits with a clear refusal.
    let second = sockeye(&agent_args);
    let output = within(second.wait_with_output()).await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("subdomain \"ws-app\" is in use by another agent"),
        "{stderr}"
    );

    // A wrong token: refused, saying so.
    let mut bad_args = agent_args;
    bad_args[7] = "wrong";
    let output = within(sockeye(&bad_args).wait_with_output()).await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("token was not accepted"), "{stderr}");

    // Killed: the public gets 502 (polled: no event reaches this test), and
    // the restarted agent gets the same subdomain back.
    agent.kill().await.unwrap();
    within(async {
        loop {
            match echo_through(port, &host).await {
                Err(e) if e.contains("502") => break,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    let mut again = sockeye(&agent_args);
    let mut out = BufReader::new(again.stdout.take().unwrap());
    line_with(&mut out, &public).await;
    echo_through(port, &host).await.unwrap();
    again.kill().await.unwrap();

    // sockeye start NAME with a sockeye.toml.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sockeye.toml");
    std::fs::write(
        &file,
        format!(
            "server = \"{server_url}\"\ntoken = \"t0ken\"\ninspect = \"off\"\n\n\
             [tunnels.from-file]\nport = {local}\n\n[tunnels.other]\nport = 1\n"
        ),
    )
    .unwrap();
    let mut started = sockeye(&["start", "from-file", "--config", file.to_str().unwrap()]);
    let mut out = BufReader::new(started.stdout.take().unwrap());
    line_with(
        &mut out,
        &format!("http://from-file.tunnel.localhost:{port}"),
    )
    .await;
    echo_through(port, &format!("from-file.tunnel.localhost:{port}"))
        .await
        .unwrap();
    started.kill().await.unwrap();
    server.kill().await.unwrap();
}
