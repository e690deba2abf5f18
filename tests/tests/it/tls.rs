//! `custodian serve --tls-cert --tls-key`: HTTPS through rustls, checked with a real TLS client
//! that trusts only a certificate authority made for the test.

use std::path::{Path, PathBuf};

use custodian_testkit::deployment::Deployment;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A test CA and a certificate it signed for `localhost` and 127.0.0.1, written as PEM files.
struct Pki {
    _dir: tempfile::TempDir,
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
    /// A key of another pair, which cannot serve `cert`.
    other_key: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        cert: write("cert.pem", cert.pem()),
        key: write("key.pem", key.serialize_pem()),
        other_key: write("other.pem", KeyPair::generate().unwrap().serialize_pem()),
        ca_pem: ca.pem(),
        _dir: dir,
    }
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test]
async fn serves_https_with_the_given_certificate_and_refuses_plain_http() {
    let pki = pki();
    let home = Deployment::sqlite();
    let server = home
        .serve(&["--tls-cert", arg(&pki.cert), "--tls-key", arg(&pki.key)])
        .await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client
        .get(format!("https://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"status":"ok"}"#);

    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP was answered: {:?}",
        plain.map(|r| r.status())
    );
    // A client that does not trust the test CA refuses the certificate: it is the one served.
    let untrusting = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap()
        .get(format!("https://{addr}/healthz"))
        .send()
        .await;
    assert!(untrusting.is_err());
    server.terminate_cleanly().await;
}

#[tokio::test]
async fn a_missing_unreadable_or_mismatched_tls_file_stops_the_start() {
    let pki = pki();
    let home = Deployment::sqlite();
    let missing = pki.cert.with_file_name("missing.pem");
    let not_pem = pki.cert.with_file_name("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--tls-cert", arg(&pki.cert)],
            "tls_cert and tls_key go together",
        ),
        (
            &["--tls-key", arg(&pki.key)],
            "tls_cert and tls_key go together",
        ),
        (
            &["--tls-cert", arg(&missing), "--tls-key", arg(&pki.key)],
            "cannot read the TLS certificate file",
        ),
        (
            &["--tls-cert", arg(&not_pem), "--tls-key", arg(&pki.key)],
            "holds no certificate",
        ),
        (
            &[
                "--tls-cert",
                arg(&pki.cert),
                "--tls-key",
                arg(&pki.other_key),
            ],
            "cannot serve the certificate",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend(flags);
        let out = home.cli(&args, "").await;
        assert_ne!(out.code, Some(0), "{flags:?} started: {}", out.stderr);
        assert!(out.code.is_some(), "{flags:?} did not exit on its own");
        assert!(
            out.stderr.contains(expected) || out.stdout.contains(expected),
            "{flags:?}: expected {expected:?} in\n{}\n{}",
            out.stderr,
            out.stdout
        );
    }
}
