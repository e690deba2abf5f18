//! HTTPS: the server's certificate chain and private key, read from PEM files into a rustls
//! configuration (TLS 1.2 and 1.3, the `ring` provider, HTTP/1.1 and HTTP/2 by ALPN).

use std::sync::Arc;

use anyhow::{Context as _, bail};
use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

/// The rustls configuration of `files`; an unreadable file, a file without a certificate or key,
/// or a key that does not match the certificate is a start-up error naming the file.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<RustlsConfig> {
    let cert_path = files.cert.display();
    let key_path = files.key.display();
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("cannot read the TLS certificate file {cert_path}"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the TLS certificate file {cert_path} is not valid PEM"))?;
    if chain.is_empty() {
        bail!("the TLS certificate file {cert_path} holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!("cannot read a private key (PKCS#8, PKCS#1 or SEC1 PEM) from the TLS key file {key_path}")
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no safe protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!("the TLS key in {key_path} cannot serve the certificate in {cert_path}")
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(config)))
}
