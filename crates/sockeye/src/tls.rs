//! TLS client settings for `wss://`.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;

use crate::Error;

pub use crate::tls_insecure::insecure_client_config;

/// The default roots: Mozilla's (webpki-roots) plus whatever the platform trusts.
pub fn default_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// A client configuration trusting the default roots.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    build(default_roots())
}

/// A client configuration trusting the default roots and the PEM
/// certificates in `ca_file` (a private CA, a self-signed test server).
pub fn client_config_with_ca(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, Error> {
    let pem = std::fs::read(ca_file)
        .map_err(|e| Error::Tls(format!("cannot read CA file {}: {e}", ca_file.display())))?;
    client_config_with_ca_pem(&pem)
}

/// Like [`client_config_with_ca`], with the PEM text itself.
pub fn client_config_with_ca_pem(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = default_roots();
    let mut added = 0;
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.map_err(|e| Error::Tls(format!("bad PEM in CA file: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("unusable CA certificate: {e}")))?;
        added += 1;
    }
    if added == 0 {
        return Err(Error::Tls("the CA file holds no PEM certificate".into()));
    }
    Ok(build(roots))
}

fn build(roots: RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}
