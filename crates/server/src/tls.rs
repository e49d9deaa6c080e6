//! TLS for `https://` and `wss://`: a rustls server configuration from PEM.
//!
//! ```text
//!   cert.pem ─┐                                ┌─► tokio_rustls::TlsAcceptor ─► sockeye::accept
//!   key.pem ──┴─► server_config ─► ServerConfig┤
//!                  (checks the key fits)       └─► ALPN: http/1.1 only
//! ```
//!
//! The configuration uses rustls' `ring` provider and its safe defaults
//! (TLS 1.3 and 1.2), no client certificates, and offers only `http/1.1`
//! in ALPN: a WebSocket upgrade is an HTTP/1.1 exchange, and a browser that
//! negotiated `h2` would need RFC 8441's extended CONNECT, which we do not
//! serve.
//!
//! Problems are found here, at startup, with the file named: a missing file,
//! a file without a certificate or key, a key that is not the certificate's.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, ServerConfig};

/// What went wrong building a TLS server configuration; each message names
/// the file (or PEM text) at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file could not be read.
    #[error("cannot read certificate file {}: {source}", path.display())]
    ReadCertificate {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: io::Error,
    },
    /// The private key file could not be read.
    #[error("cannot read private key file {}: {source}", path.display())]
    ReadKey {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: io::Error,
    },
    /// The PEM text is malformed (an unterminated section, bad base64).
    #[error("invalid PEM in {origin}: {source}")]
    BadPem {
        /// The file, or which PEM argument.
        origin: String,
        /// What the PEM parser found.
        source: pem::Error,
    },
    /// The certificate PEM holds no `CERTIFICATE` section.
    #[error("no certificate found in {origin} (expected a PEM \"BEGIN CERTIFICATE\" section)")]
    NoCertificate {
        /// The file, or which PEM argument.
        origin: String,
    },
    /// The key PEM holds no private key section.
    #[error(
        "no private key found in {origin} (expected an unencrypted PEM \"BEGIN PRIVATE KEY\", \
         \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" section)"
    )]
    NoPrivateKey {
        /// The file, or which PEM argument.
        origin: String,
    },
    /// The private key is not one the `ring` provider can sign with.
    #[error("unusable private key in {origin}: {source}")]
    BadKey {
        /// The file, or which PEM argument.
        origin: String,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The first certificate cannot be parsed.
    #[error("unusable certificate in {origin}: {source}")]
    BadCertificate {
        /// The file, or which PEM argument.
        origin: String,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The private key is not the key of the first (end-entity) certificate.
    #[error(
        "certificate and key do not match: the private key in {key} is not the key of \
         the first certificate in {certificate}"
    )]
    KeyMismatch {
        /// Where the certificate chain came from.
        certificate: String,
        /// Where the key came from.
        key: String,
    },
}

/// A server configuration from a PEM certificate chain file (end-entity
/// certificate first, then intermediates) and a PEM private key file
/// (PKCS#8, PKCS#1 or SEC1; the two may be the same file).
pub fn server_config(
    cert_pem_path: &Path,
    key_pem_path: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = std::fs::read(cert_pem_path).map_err(|source| TlsError::ReadCertificate {
        path: cert_pem_path.to_owned(),
        source,
    })?;
    let key_pem = std::fs::read(key_pem_path).map_err(|source| TlsError::ReadKey {
        path: key_pem_path.to_owned(),
        source,
    })?;
    build(
        Pem {
            text: &cert_pem,
            origin: cert_pem_path.display().to_string(),
        },
        Pem {
            text: &key_pem,
            origin: key_pem_path.display().to_string(),
        },
    )
}

/// Like [`server_config`], with the PEM text itself.
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    build(
        Pem {
            text: cert_pem,
            origin: "the certificate PEM".to_owned(),
        },
        Pem {
            text: key_pem,
            origin: "the private key PEM".to_owned(),
        },
    )
}

/// PEM text and where it came from, for error messages.
struct Pem<'a> {
    text: &'a [u8],
    origin: String,
}

fn build(cert: Pem<'_>, key: Pem<'_>) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert.text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadPem {
            origin: cert.origin.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            origin: cert.origin,
        });
    }
    let key_der = match PrivateKeyDer::from_pem_slice(key.text) {
        Ok(key_der) => key_der,
        Err(pem::Error::NoItemsFound) => return Err(TlsError::NoPrivateKey { origin: key.origin }),
        Err(source) => {
            return Err(TlsError::BadPem {
                origin: key.origin,
                source,
            })
        }
    };

    // What `with_single_cert` does, step by step, so each failure names its file.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::BadKey {
            origin: key.origin.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot name its public half; rustls accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                certificate: cert.origin,
                key: key.origin,
            })
        }
        Err(source) => {
            return Err(TlsError::BadCertificate {
                origin: cert.origin,
                source,
            })
        }
    }

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Generated {
        cert_pem: String,
        key_pem: String,
    }

    fn generate() -> Generated {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        Generated {
            cert_pem: certified.cert.pem(),
            key_pem: certified.key_pair.serialize_pem(),
        }
    }

    /// Writes `files` into a new temporary directory.
    fn write(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[track_caller]
    fn expect_err(result: Result<Arc<ServerConfig>, TlsError>) -> TlsError {
        match result {
            Err(e) => e,
            Ok(_) => panic!("expected an error, got a configuration"),
        }
    }

    #[test]
    fn loads_a_certificate_and_key_from_files() {
        let g = generate();
        let dir = write(&[("cert.pem", &g.cert_pem), ("key.pem", &g.key_pem)]);
        let config =
            server_config(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn one_file_may_hold_both_certificate_and_key() {
        let g = generate();
        let both = format!("{}{}", g.key_pem, g.cert_pem);
        let dir = write(&[("both.pem", &both)]);
        let path = dir.path().join("both.pem");
        server_config(&path, &path).unwrap();
    }

    #[test]
    fn a_missing_certificate_file_is_named() {
        let g = generate();
        let dir = write(&[("key.pem", &g.key_pem)]);
        let cert = dir.path().join("missing-cert.pem");
        let e = expect_err(server_config(&cert, &dir.path().join("key.pem")));
        assert!(matches!(e, TlsError::ReadCertificate { .. }), "{e:?}");
        let message = e.to_string();
        assert!(
            message.starts_with(&format!(
                "cannot read certificate file {}: ",
                cert.display()
            )),
            "{message}"
        );
    }

    #[test]
    fn a_missing_key_file_is_named() {
        let g = generate();
        let dir = write(&[("cert.pem", &g.cert_pem)]);
        let key = dir.path().join("missing-key.pem");
        let e = expect_err(server_config(&dir.path().join("cert.pem"), &key));
        assert!(matches!(e, TlsError::ReadKey { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read private key file {}: ", key.display())),
            "{e}"
        );
    }

    #[test]
    fn a_certificate_file_without_a_certificate_is_refused() {
        let g = generate();
        // The key given twice: a common slip with --tls-cert/--tls-key.
        let dir = write(&[("key.pem", &g.key_pem)]);
        let key = dir.path().join("key.pem");
        let e = expect_err(server_config(&key, &key));
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("no certificate found in {}", key.display())),
            "{e}"
        );
    }

    #[test]
    fn a_key_file_without_a_key_is_refused() {
        let g = generate();
        let dir = write(&[("cert.pem", &g.cert_pem)]);
        let cert = dir.path().join("cert.pem");
        let e = expect_err(server_config(&cert, &cert));
        assert!(matches!(e, TlsError::NoPrivateKey { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("no private key found in {}", cert.display())),
            "{e}"
        );
    }

    #[test]
    fn empty_pem_text_is_refused() {
        let g = generate();
        let e = expect_err(server_config_from_pem(b"", g.key_pem.as_bytes()));
        assert_eq!(
            e.to_string(),
            "no certificate found in the certificate PEM (expected a PEM \"BEGIN CERTIFICATE\" section)"
        );
        let e = expect_err(server_config_from_pem(g.cert_pem.as_bytes(), b"hello"));
        assert!(matches!(e, TlsError::NoPrivateKey { .. }), "{e:?}");
    }

    #[test]
    fn a_key_from_another_certificate_is_a_mismatch() {
        let a = generate();
        let b = generate();
        let dir = write(&[("a.pem", &a.cert_pem), ("b-key.pem", &b.key_pem)]);
        let e = expect_err(server_config(
            &dir.path().join("a.pem"),
            &dir.path().join("b-key.pem"),
        ));
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e:?}");
        let message = e.to_string();
        assert!(
            message.starts_with("certificate and key do not match: "),
            "{message}"
        );
        assert!(
            message.contains("b-key.pem") && message.contains("a.pem"),
            "{message}"
        );
    }

    #[test]
    fn an_unterminated_pem_section_is_invalid_pem() {
        let g = generate();
        let cut = &g.cert_pem[..g.cert_pem.len() / 2];
        let e = expect_err(server_config_from_pem(cut.as_bytes(), g.key_pem.as_bytes()));
        assert!(matches!(e, TlsError::BadPem { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("invalid PEM in the certificate PEM: "),
            "{e}"
        );
    }

    #[test]
    fn a_key_section_that_is_not_a_key_is_unusable() {
        let g = generate();
        let junk = "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n";
        let e = expect_err(server_config_from_pem(
            g.cert_pem.as_bytes(),
            junk.as_bytes(),
        ));
        assert!(matches!(e, TlsError::BadKey { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("unusable private key in the private key PEM: "),
            "{e}"
        );
    }

    #[test]
    fn a_certificate_section_that_is_not_a_certificate_is_unusable() {
        let g = generate();
        let junk = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
        let e = expect_err(server_config_from_pem(
            junk.as_bytes(),
            g.key_pem.as_bytes(),
        ));
        assert!(matches!(e, TlsError::BadCertificate { .. }), "{e:?}");
    }

    /// A client offering `alpn`, handshaking in memory with a server
    /// configured from `g`; returns the protocol the server chose.
    fn handshake(g: &Generated, alpn: &[&[u8]]) -> Result<Option<Vec<u8>>, rustls::Error> {
        let server_config =
            server_config_from_pem(g.cert_pem.as_bytes(), g.key_pem.as_bytes()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(g.cert_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        client_config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client: rustls::Connection =
            rustls::ClientConnection::new(Arc::new(client_config), name)
                .unwrap()
                .into();
        let mut server: rustls::Connection =
            rustls::ServerConnection::new(server_config).unwrap().into();
        for _ in 0..10 {
            pump(&mut client, &mut server)?;
            pump(&mut server, &mut client)?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(server.alpn_protocol().map(<[u8]>::to_vec));
            }
        }
        panic!("the handshake did not finish");
    }

    fn pump(
        from: &mut rustls::Connection,
        to: &mut rustls::Connection,
    ) -> Result<(), rustls::Error> {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut wire = &wire[..];
        while !wire.is_empty() {
            to.read_tls(&mut wire).unwrap();
            to.process_new_packets()?;
        }
        Ok(())
    }

    #[test]
    fn a_browser_offering_h2_gets_http_1_1() {
        let g = generate();
        let chosen = handshake(&g, &[b"h2", b"http/1.1"]).unwrap();
        assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));
    }

    #[test]
    fn a_client_without_alpn_is_served() {
        let g = generate();
        assert_eq!(handshake(&g, &[]).unwrap(), None);
    }

    #[test]
    fn a_client_offering_only_h2_is_refused() {
        let g = generate();
        assert!(matches!(
            handshake(&g, &[b"h2"]),
            Err(rustls::Error::NoApplicationProtocol)
        ));
    }
}
