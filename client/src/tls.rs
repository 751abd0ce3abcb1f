//! The client's TLS material and its rustls configuration (docs/TRANSPORT.md "Crypto"): TLS 1.3
//! only, with the ring provider passed explicitly (the crate graph holds no other provider, and
//! rustls' default builders would panic if it did), the server verified under the cluster CA and
//! the host dialled, ALPN `keel/2`, and an optional client certificate for
//! `--require-client-cert`.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ClientError;
use crate::wire::quic::crypto_provider;
use crate::wire::CLIENT_ALPN;

/// What the client trusts and, optionally, who it is.
#[derive(Debug)]
pub struct ClientTls {
    /// Certificates of the CA(s) that sign broker certificates (`ca.pem`).
    pub ca_certificates: Vec<CertificateDer<'static>>,
    /// Client certificate chain and key (`client.pem`, `client.key`), if any.
    pub identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

impl Clone for ClientTls {
    fn clone(&self) -> Self {
        ClientTls {
            ca_certificates: self.ca_certificates.clone(),
            identity: self
                .identity
                .as_ref()
                .map(|(chain, key)| (chain.clone(), key.clone_key())),
        }
    }
}

impl ClientTls {
    /// Trust the CA in `ca_pem` (a PEM file with one or more certificates); no client identity.
    pub fn from_ca_file(ca_pem: &Path) -> Result<ClientTls, ClientError> {
        Ok(ClientTls {
            ca_certificates: load_certificates(ca_pem)?,
            identity: None,
        })
    }

    /// [`ClientTls::from_ca_file`], plus a client certificate and key when both are given.
    /// One without the other is an error.
    pub fn from_files(
        ca_pem: &Path,
        cert_pem: Option<&Path>,
        key_pem: Option<&Path>,
    ) -> Result<ClientTls, ClientError> {
        let mut tls = ClientTls::from_ca_file(ca_pem)?;
        match (cert_pem, key_pem) {
            (Some(cert), Some(key)) => {
                tls.identity = Some((load_certificates(cert)?, load_private_key(key)?));
            }
            (None, None) => {}
            _ => {
                return Err(ClientError::Tls(
                    "a client certificate needs its key and a key needs its certificate".into(),
                ))
            }
        }
        Ok(tls)
    }

    /// The rustls configuration: TLS 1.3, ring, roots = the CA, ALPN `keel/2`.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, ClientError> {
        let tls_error = |error: rustls::Error| ClientError::Tls(error.to_string());
        let mut roots = RootCertStore::empty();
        for certificate in &self.ca_certificates {
            roots.add(certificate.clone()).map_err(tls_error)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(crypto_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(tls_error)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![CLIENT_ALPN.to_vec()];
        Ok(config)
    }
}

fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let bytes = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ClientError::Tls(format!("{}: {error}", path.display())))?;
    if certificates.is_empty() {
        return Err(ClientError::Tls(format!(
            "{}: holds no certificate",
            path.display()
        )));
    }
    Ok(certificates)
}

fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ClientError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|error| ClientError::Tls(format!("{}: {error}", path.display())))
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|error| ClientError::Tls(format!("{}: {error}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_are_tls_errors() {
        let directory =
            std::env::temp_dir().join(format!("keel-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let empty = directory.join("empty.pem");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            ClientTls::from_ca_file(&directory.join("missing.pem")),
            Err(ClientError::Tls(_))
        ));
        assert!(matches!(
            ClientTls::from_ca_file(&empty),
            Err(ClientError::Tls(message)) if message.contains("no certificate")
        ));
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
