//! Certificates and TLS configuration of the transport (docs/TRANSPORT.md "Certificates",
//! docs/CLI.md).
//!
//! - Making a cluster CA and its node and client certificates (`keel certs init`, and the
//!   development CA `keel server` / `keel dev` create on first start).
//! - Loading a node's TLS material from a directory laid out by `keel certs init`.
//! - The rustls configurations: the server side serving both ALPNs, the peer dialler and the
//!   client dialler. Only TLS 1.3 with the ring provider, always passed explicitly: the crate
//!   graph must never hold a second provider (rustls' default builders would panic).
//! - Reading the node id a peer certificate vouches for (`node-<id>` in its DNS SANs).

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::NodeId;

/// ALPN of node-to-node connections (mutual TLS under the cluster CA).
pub const PEER_ALPN: &[u8] = b"keel-peer/1";
/// ALPN of client connections: keel-wire's, which names its protocol version.
pub const CLIENT_ALPN: &[u8] = keel_wire::CLIENT_ALPN;

/// Number of node certificates `keel certs init` makes without `--nodes`.
pub const DEFAULT_NODE_COUNT: u64 = 3;

/// File names inside a TLS directory (docs/CLI.md, `keel certs init`).
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
pub const CLIENT_CERT_FILE: &str = "client.pem";
pub const CLIENT_KEY_FILE: &str = "client.key";

/// `node-<id>.pem`.
pub fn node_cert_file(node_id: NodeId) -> String {
    format!("node-{node_id}.pem")
}

/// `node-<id>.key`.
pub fn node_key_file(node_id: NodeId) -> String {
    format!("node-{node_id}.key")
}

/// The DNS subject alternative name that makes a certificate node `node_id`'s, and the server
/// name a peer dials it by.
pub fn node_server_name(node_id: NodeId) -> String {
    format!("node-{node_id}")
}

/// Why certificates could not be made, loaded or turned into a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path} already holds a CA ({CA_CERT_FILE} or {CA_KEY_FILE}); refusing to overwrite it"
    )]
    CaExists { path: PathBuf },
    #[error("{path} has only one of {CA_CERT_FILE} and {CA_KEY_FILE}")]
    CaIncomplete { path: PathBuf },
    #[error("{path}: not a usable PEM file: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path}: holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("node id 0 is reserved; node ids start at 1")]
    ZeroNodeId,
    #[error("--host {host:?} is neither an IP address nor a valid DNS name")]
    BadHost { host: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The ring provider, the only one Keel compiles in, with the SDK's suite order (AES-128-GCM
/// first, see `keel_wire::quic::crypto_provider`).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(keel_wire::quic::crypto_provider())
}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

/// Makes a new cluster CA in `directory` (created if needed) with certificates for nodes
/// `1..=node_count` and one client certificate. Each node certificate carries the SANs
/// `node-<id>`, `localhost`, `127.0.0.1` and every entry of `hosts` (DNS name or IP address).
///
/// Refuses a directory that already holds a CA: replacing it would strand every certificate it
/// signed. [`ensure_dev_certs`] is the path that adds to an existing CA.
pub fn generate_cluster_certs(
    directory: &Path,
    node_count: u64,
    hosts: &[String],
) -> Result<(), TlsError> {
    validate_hosts(hosts)?;
    fs::create_dir_all(directory).map_err(io_error(directory))?;
    if directory.join(CA_CERT_FILE).exists() || directory.join(CA_KEY_FILE).exists() {
        return Err(TlsError::CaExists {
            path: directory.to_path_buf(),
        });
    }
    let ca = CertificateAuthority::create(directory)?;
    for node_id in 1..=node_count {
        ca.write_node_cert(directory, node_id, hosts)?;
    }
    ca.write_client_cert(directory)?;
    Ok(())
}

/// The development CA path (`keel server` / `keel dev` on first start): makes the CA if
/// `directory` has none, then whatever of `node-<id>.{pem,key}` (for each of `node_ids`) and
/// `client.{pem,key}` is missing, signed by that CA. Existing files are left alone.
pub fn ensure_dev_certs(directory: &Path, node_ids: &[NodeId]) -> Result<(), TlsError> {
    fs::create_dir_all(directory).map_err(io_error(directory))?;
    let ca_cert_exists = directory.join(CA_CERT_FILE).exists();
    let ca_key_exists = directory.join(CA_KEY_FILE).exists();
    let ca = match (ca_cert_exists, ca_key_exists) {
        (false, false) => CertificateAuthority::create(directory)?,
        (true, true) => CertificateAuthority::load(directory)?,
        _ => {
            return Err(TlsError::CaIncomplete {
                path: directory.to_path_buf(),
            })
        }
    };
    for &node_id in node_ids {
        let cert_exists = directory.join(node_cert_file(node_id)).exists();
        let key_exists = directory.join(node_key_file(node_id)).exists();
        if !(cert_exists && key_exists) {
            ca.write_node_cert(directory, node_id, &[])?;
        }
    }
    if !(directory.join(CLIENT_CERT_FILE).exists() && directory.join(CLIENT_KEY_FILE).exists()) {
        ca.write_client_cert(directory)?;
    }
    Ok(())
}

fn validate_hosts(hosts: &[String]) -> Result<(), TlsError> {
    for host in hosts {
        let valid = host.parse::<IpAddr>().is_ok()
            || rustls_pki_types::DnsName::try_from(host.as_str()).is_ok();
        if !valid {
            return Err(TlsError::BadHost { host: host.clone() });
        }
    }
    Ok(())
}

/// A CA able to sign: its key and the issuer fields taken from its certificate.
struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    fn create(directory: &Path) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Keel cluster CA");
        // Only end-entity certificates below the CA: no intermediates to reason about.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key)?;
        write_file(&directory.join(CA_CERT_FILE), certificate.pem(), Secret::No)?;
        write_file(
            &directory.join(CA_KEY_FILE),
            key.serialize_pem(),
            Secret::Yes,
        )?;
        Ok(CertificateAuthority {
            issuer: Issuer::new(params, key),
        })
    }

    fn load(directory: &Path) -> Result<Self, TlsError> {
        let cert_path = directory.join(CA_CERT_FILE);
        let key_path = directory.join(CA_KEY_FILE);
        let cert_pem = fs::read_to_string(&cert_path).map_err(io_error(&cert_path))?;
        let key_pem = fs::read_to_string(&key_path).map_err(io_error(&key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|error| TlsError::Pem {
            path: key_path.clone(),
            reason: error.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|error| TlsError::Pem {
            path: cert_path.clone(),
            reason: error.to_string(),
        })?;
        Ok(CertificateAuthority { issuer })
    }

    fn write_node_cert(
        &self,
        directory: &Path,
        node_id: NodeId,
        hosts: &[String],
    ) -> Result<(), TlsError> {
        if node_id == 0 {
            return Err(TlsError::ZeroNodeId);
        }
        let mut names = vec![
            node_server_name(node_id),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ];
        for host in hosts {
            if !names.contains(host) {
                names.push(host.clone());
            }
        }
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, node_server_name(node_id));
        // A node is a server to clients and peers and a client to the peers it dials.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign_and_write(
            params,
            &directory.join(node_cert_file(node_id)),
            &directory.join(node_key_file(node_id)),
        )
    }

    fn write_client_cert(&self, directory: &Path) -> Result<(), TlsError> {
        // No `node-<id>` SAN: a client certificate can never pass as a peer.
        let mut params = CertificateParams::new(Vec::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "keel client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_and_write(
            params,
            &directory.join(CLIENT_CERT_FILE),
            &directory.join(CLIENT_KEY_FILE),
        )
    }

    fn sign_and_write(
        &self,
        mut params: CertificateParams,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<(), TlsError> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        write_file(key_path, key.serialize_pem(), Secret::Yes)?;
        write_file(cert_path, certificate.pem(), Secret::No)
    }
}

/// Whether a file holds a private key (readable by its owner only).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Secret {
    Yes,
    No,
}

fn write_file(path: &Path, contents: String, secret: Secret) -> Result<(), TlsError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret == Secret::Yes { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(io_error(path))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// A node's TLS material: the cluster CA and its own certificate chain and key.
#[derive(Debug)]
pub struct NodeTls {
    pub node_id: NodeId,
    pub ca_certificates: Vec<CertificateDer<'static>>,
    pub certificate_chain: Vec<CertificateDer<'static>>,
    pub private_key: PrivateKeyDer<'static>,
}

impl Clone for NodeTls {
    fn clone(&self) -> Self {
        NodeTls {
            node_id: self.node_id,
            ca_certificates: self.ca_certificates.clone(),
            certificate_chain: self.certificate_chain.clone(),
            private_key: self.private_key.clone_key(),
        }
    }
}

impl NodeTls {
    /// Loads `ca.pem` and `node-<id>.{pem,key}` from a directory made by `keel certs init`.
    pub fn load(directory: &Path, node_id: NodeId) -> Result<NodeTls, TlsError> {
        Ok(NodeTls {
            node_id,
            ca_certificates: load_certificates(&directory.join(CA_CERT_FILE))?,
            certificate_chain: load_certificates(&directory.join(node_cert_file(node_id)))?,
            private_key: load_private_key(&directory.join(node_key_file(node_id)))?,
        })
    }
}

/// Every certificate in a PEM file; at least one.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certificates)
}

/// The private key in a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| TlsError::Pem {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })
}

fn root_store(ca_certificates: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in ca_certificates {
        roots.add(certificate.clone())?;
    }
    Ok(roots)
}

// ---------------------------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------------------------

/// Whether clients (ALPN `keel/2`) must present a certificate signed by the cluster CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientCertPolicy {
    /// A client may connect without a certificate; one it presents is still verified.
    #[default]
    Optional,
    /// `--require-client-cert`: the handshake fails without a valid client certificate.
    Required,
}

/// The server side of a node's endpoint: serves `keel-peer/1` and `keel/2`, TLS 1.3 only.
///
/// One rustls configuration carries one client-certificate verifier, and the ALPN is not known
/// when it runs. So with [`ClientCertPolicy::Optional`] the verifier lets a client without a
/// certificate through (any certificate presented is verified under the CA), and the accept
/// loop refuses a `keel-peer/1` connection that presented none (see `endpoint`).
pub fn server_config(
    tls: &NodeTls,
    client_cert_policy: ClientCertPolicy,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = crypto_provider();
    let roots = Arc::new(root_store(&tls.ca_certificates)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    let verifier = match client_cert_policy {
        ClientCertPolicy::Required => verifier.build()?,
        ClientCertPolicy::Optional => verifier.allow_unauthenticated().build()?,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls.certificate_chain.clone(), tls.private_key.clone_key())?;
    // rustls refuses a handshake whose ALPN offer matches none of these.
    config.alpn_protocols = vec![PEER_ALPN.to_vec(), CLIENT_ALPN.to_vec()];
    Ok(config)
}

/// The dialling side of a peer connection: presents this node's certificate and verifies the
/// server under the cluster CA. The server name passed when connecting must be
/// [`node_server_name`] of the node dialled, so the server proves it is that node.
pub fn peer_client_config(tls: &NodeTls) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(&tls.ca_certificates)?)
        .with_client_auth_cert(tls.certificate_chain.clone(), tls.private_key.clone_key())?;
    config.alpn_protocols = vec![PEER_ALPN.to_vec()];
    Ok(config)
}

/// A client's configuration: verifies the server under `ca_certificates` and the host dialled
/// (the server name given when connecting); presents `client_identity` if given.
pub fn client_config(
    ca_certificates: &[CertificateDer<'static>],
    client_identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(ca_certificates)?);
    let mut config = match client_identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![CLIENT_ALPN.to_vec()];
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// Peer identity
// ---------------------------------------------------------------------------------------------

/// Why a verified certificate does not name exactly one node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no certificate was presented")]
    NoCertificate,
    #[error("certificate does not parse: {0}")]
    Unparsable(String),
    #[error("certificate names no node (no node-<id> DNS SAN)")]
    NotANodeCertificate,
    #[error("certificate names several nodes: {node_ids:?}")]
    SeveralNodes { node_ids: Vec<NodeId> },
}

/// The node id a (chain-verified) certificate vouches for: the `<id>` of its one `node-<id>`
/// DNS subject alternative name.
pub fn node_id_from_certificate(certificate: &CertificateDer<'_>) -> Result<NodeId, IdentityError> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate)
        .map_err(|error| IdentityError::Unparsable(error.to_string()))?;
    let subject_alternative_names = parsed
        .subject_alternative_name()
        .map_err(|error| IdentityError::Unparsable(error.to_string()))?;
    let mut node_ids = Vec::new();
    if let Some(extension) = subject_alternative_names {
        for name in &extension.value.general_names {
            if let GeneralName::DNSName(dns_name) = name {
                if let Some(node_id) = parse_node_server_name(dns_name) {
                    node_ids.push(node_id);
                }
            }
        }
    }
    match node_ids.as_slice() {
        [] => Err(IdentityError::NotANodeCertificate),
        [node_id] => Ok(*node_id),
        _ => Err(IdentityError::SeveralNodes { node_ids }),
    }
}

/// `node-<id>` -> id, for canonical decimal ids >= 1 only (`node-01` is not node 1).
fn parse_node_server_name(name: &str) -> Option<NodeId> {
    let digits = name.strip_prefix("node-")?;
    let node_id: NodeId = digits.parse().ok()?;
    (node_id != 0 && digits == node_id.to_string()).then_some(node_id)
}

/// The node id of the end-entity certificate a quinn connection's peer presented.
pub fn peer_node_id(connection: &quinn::Connection) -> Result<NodeId, IdentityError> {
    let identity = connection
        .peer_identity()
        .ok_or(IdentityError::NoCertificate)?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| IdentityError::NoCertificate)?;
    let end_entity = chain.first().ok_or(IdentityError::NoCertificate)?;
    node_id_from_certificate(end_entity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_parse_only_canonically() {
        assert_eq!(parse_node_server_name("node-7"), Some(7));
        assert_eq!(parse_node_server_name("node-0"), None);
        assert_eq!(parse_node_server_name("node-07"), None);
        assert_eq!(parse_node_server_name("node-"), None);
        assert_eq!(parse_node_server_name("node-+7"), None);
        assert_eq!(parse_node_server_name("localhost"), None);
    }

    #[test]
    fn generated_certificates_name_their_node_and_the_ca_is_not_overwritten() {
        let directory = tempfile::tempdir().expect("tempdir");
        generate_cluster_certs(directory.path(), 2, &["db.example".to_string()]).expect("generate");
        for node_id in 1..=2 {
            let tls = NodeTls::load(directory.path(), node_id).expect("load");
            assert_eq!(
                node_id_from_certificate(&tls.certificate_chain[0]),
                Ok(node_id)
            );
            server_config(&tls, ClientCertPolicy::Optional).expect("server config");
            peer_client_config(&tls).expect("peer client config");
        }
        let client = load_certificates(&directory.path().join(CLIENT_CERT_FILE)).expect("client");
        assert_eq!(
            node_id_from_certificate(&client[0]),
            Err(IdentityError::NotANodeCertificate)
        );
        let ca_before = fs::read(directory.path().join(CA_CERT_FILE)).expect("ca");
        assert!(matches!(
            generate_cluster_certs(directory.path(), 2, &[]),
            Err(TlsError::CaExists { .. })
        ));
        // The dev path keeps the CA and adds only what is missing.
        fs::remove_file(directory.path().join(node_key_file(2))).expect("remove");
        ensure_dev_certs(directory.path(), &[1, 2, 3]).expect("ensure");
        assert_eq!(
            fs::read(directory.path().join(CA_CERT_FILE)).expect("ca"),
            ca_before
        );
        for node_id in 1..=3 {
            NodeTls::load(directory.path(), node_id).expect("load after ensure");
        }
    }

    #[test]
    fn invalid_hosts_are_refused() {
        let directory = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            generate_cluster_certs(directory.path(), 1, &["not a host".to_string()]),
            Err(TlsError::BadHost { .. })
        ));
        assert!(!directory.path().join(CA_CERT_FILE).exists());
    }
}
