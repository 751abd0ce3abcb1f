//! `keel certs init` through the real binary (docs/CLI.md): it writes the documented files,
//! refuses to overwrite an existing CA, and the certificates it makes work: two nodes connect
//! over mutual TLS, and a client with `client.pem` reaches a node by an `--host` name.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use keel_broker::transport::endpoint::quic_client_config;
use keel_broker::transport::tls::{self, NodeTls};
use keel_broker::transport::{Transport, TransportConfig};

fn keel_certs_init(dir: &Path, extra_args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["certs", "init", "--dir"])
        .arg(dir)
        .args(extra_args)
        .output()
        .expect("run keel")
}

#[test]
fn certs_init_writes_the_files_and_never_overwrites_a_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = keel_certs_init(dir.path(), &["--nodes", "2", "--host", "db.example"]);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in [
        "ca.pem",
        "ca.key",
        "node-1.pem",
        "node-1.key",
        "node-2.pem",
        "node-2.key",
        "client.pem",
        "client.key",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
    assert!(!dir.path().join("node-3.pem").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "private keys are readable by their owner only"
        );
    }

    let ca_before = std::fs::read(dir.path().join("ca.pem")).expect("ca");
    let again = keel_certs_init(dir.path(), &[]);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.starts_with("error:") && stderr.contains("overwrite"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("ca.pem")).expect("ca"),
        ca_before
    );

    let usage = keel_certs_init(dir.path(), &["--nodes", "0"]);
    assert_eq!(usage.status.code(), Some(2));

    prove_with_handshakes(dir.path());
}

/// Two nodes connect to each other (mutual TLS, node identities checked) and a client holding
/// `client.pem` connects to node 1 by the extra host name.
fn prove_with_handshakes(tls_dir: &Path) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("debug,quinn=info,quinn_proto=info,rustls=info")
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            let any_port = "127.0.0.1:0".parse().expect("address");
            let tls_1 = NodeTls::load(tls_dir, 1).expect("node 1 tls");
            let tls_2 = NodeTls::load(tls_dir, 2).expect("node 2 tls");
            let (node_1, mut channels_1) =
                Transport::start(TransportConfig::new(1, any_port), &tls_1)
                    .await
                    .expect("node 1");
            let (node_2, _channels_2) = Transport::start(TransportConfig::new(2, any_port), &tls_2)
                .await
                .expect("node 2");
            let to_2 = node_1.add_peer(2, node_2.local_address()).expect("peer");
            let to_1 = node_2.add_peer(1, node_1.local_address()).expect("peer");
            assert!(to_2.wait_connected().await && to_1.wait_connected().await);

            let ca = tls::load_certificates(&tls_dir.join(tls::CA_CERT_FILE)).expect("ca");
            let client_chain =
                tls::load_certificates(&tls_dir.join(tls::CLIENT_CERT_FILE)).expect("client");
            let client_key =
                tls::load_private_key(&tls_dir.join(tls::CLIENT_KEY_FILE)).expect("key");
            let client_tls =
                tls::client_config(&ca, Some((client_chain, client_key))).expect("client config");
            let endpoint = quinn::Endpoint::client(any_port).expect("client endpoint");
            let connection = endpoint
                .connect_with(
                    quic_client_config(client_tls, quinn::TransportConfig::default())
                        .expect("quic config"),
                    node_1.local_address(),
                    "db.example",
                )
                .expect("connect")
                .await
                .expect("client handshake by --host name");
            let accepted = channels_1
                .client_connections
                .recv()
                .await
                .expect("accepted");
            assert!(accepted.has_client_certificate);
            connection.close(0_u32.into(), b"done");
            // A client connection handle holds the UDP socket: let go before shutting down.
            drop((accepted, channels_1));
            node_1.shutdown(Duration::from_secs(5)).await;
            node_2.shutdown(Duration::from_secs(5)).await;
        })
        .await
        .expect("handshakes timed out");
    });
}
