//! Arbitrary bytes as an HTTP upgrade request: `parse_request`, then
//! `validate_request`, then `accept` with permessage-deflate, then the
//! response bytes; or the rejection for a bad request. The same bytes also
//! go to the client's response parser and to both sides of extension
//! negotiation. Nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sockeye_proto::extension::DeflateConfig;
use sockeye_proto::handshake::{
    accept, parse_request, rejection, validate_request, write_response, ClientHandshake,
};

fuzz_target!(|data: &[u8]| {
    let protocols = ["chat".to_string(), "superchat".to_string()];
    let deflate = DeflateConfig::default();
    let small_windows = DeflateConfig {
        client_max_window_bits: 9,
        server_max_window_bits: 10,
        server_no_context_takeover: true,
        ..DeflateConfig::default()
    };

    for max in [16 * 1024, 100] {
        match parse_request(data, max) {
            Ok(Some((request, len))) => {
                assert!(len <= data.len() && len <= max);
                match validate_request(&request) {
                    Ok(upgrade) => {
                        for config in [None, Some(&deflate), Some(&small_windows)] {
                            let mut out = Vec::new();
                            match accept(&upgrade, &protocols, config) {
                                Ok(accepted) => write_response(&accepted.response, b"", &mut out),
                                Err(e) => write_response(&rejection(&e), b"", &mut out),
                            }
                        }
                    }
                    Err(e) => {
                        let response = rejection(&e);
                        let mut out = Vec::new();
                        write_response(&response, response.body().as_bytes(), &mut out);
                    }
                }
            }
            Ok(None) => assert!(data.len() <= max),
            Err(_) => {}
        }
    }

    // The client's side: the bytes as a response head.
    let uri = "ws://example.com/chat".parse().expect("uri");
    if let Ok((client, _)) =
        ClientHandshake::new(&uri, &protocols, &Default::default(), Some(&deflate))
    {
        if let Ok(Some((response, _))) = client.parse_response(data, 16 * 1024) {
            let _ = client.validate_response(&response);
        }
    }

    // Extension negotiation on the raw text.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = deflate.negotiate_server(&[text]);
        let _ = small_windows.negotiate_server(&text.split('\n').collect::<Vec<_>>());
        let _ = deflate.negotiate_client(text);
        let _ = small_windows.negotiate_client(text);
    }
});
