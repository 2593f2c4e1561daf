//! PostgreSQL over TLS (rustls), for the pool and for migrations. The URL's `sslmode`
//! decides, as libpq's does:
//!
//! - `disable` (and no `sslmode`): plain TCP, as before;
//! - `prefer`: TLS when the server offers it, without verification, else plain;
//! - `require`: TLS or nothing; without a root certificate file it is not verified,
//!   with one (`sslrootcert`, or `~/.postgresql/root.crt` when it exists) it is
//!   verified as `verify-ca` does;
//! - `verify-ca`: TLS with a certificate chained to a root of the root certificate
//!   file (`sslrootcert`, else `~/.postgresql/root.crt`, which must then exist),
//!   whatever name it carries; `sslrootcert=system` trusts the public web roots;
//! - `verify-full`: as `verify-ca`, and the certificate must name the host.
//!
//! `sslmode` and `sslrootcert` are taken out of the URL before tokio-postgres reads it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// What the URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The URL split into what tokio-postgres reads and the TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub url: String,
    pub mode: Mode,
    pub root_cert: Option<String>,
}

/// Splits `sslmode` and `sslrootcert` off `url`.
pub fn split(url: &str) -> Result<Split, String> {
    let mut parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    let mut mode = Mode::Disable;
    let mut root_cert = None;
    // The other parameters are kept as written: re-encoding would turn %20 into +.
    let kept: Vec<String> = parsed
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("sslmode=") && !p.starts_with("sslrootcert="))
        .map(str::to_owned)
        .collect();
    for (k, v) in parsed.query_pairs() {
        match k.as_ref() {
            "sslmode" => {
                mode = match v.as_ref() {
                    "disable" | "allow" => Mode::Disable,
                    "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => return Err(format!("unknown sslmode {other:?}")),
                }
            }
            "sslrootcert" => root_cert = Some(v.into_owned()),
            _ => {}
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.set_query(Some(&kept.join("&")));
    }
    Ok(Split {
        url: parsed.to_string(),
        mode,
        root_cert,
    })
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Root {
    /// `sslrootcert=system`: the public web roots.
    System,
    File(String),
}

/// libpq's default root certificate file, `~/.postgresql/root.crt`, if it exists.
fn default_root_file() -> Option<String> {
    let home = std::env::var_os("HOME")?;
    let path = std::path::Path::new(&home).join(".postgresql/root.crt");
    path.is_file().then(|| path.to_string_lossy().into_owned())
}

/// The roots `split` names (`sslrootcert`, or the default file when it exists).
fn root_file(split: &Split, default: Option<&str>) -> Option<Root> {
    match split.root_cert.as_deref() {
        Some("system") => Some(Root::System),
        Some(path) => Some(Root::File(path.to_owned())),
        None => default.map(|p| Root::File(p.to_owned())),
    }
}

/// The rustls configuration for `split`, or `None` for plain TCP.
pub fn client_config(split: &Split) -> Result<Option<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let root = root_file(split, default_root_file().as_deref());
    let roots = || -> Result<Arc<RootCertStore>, String> {
        let mut store = RootCertStore::empty();
        match &root {
            Some(Root::System) => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(Root::File(path)) => {
                use rustls::pki_types::pem::PemObject;
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
                    store
                        .add(cert)
                        .map_err(|e| format!("sslrootcert {path}: {e}"))?;
                }
            }
            None => {
                return Err(
                    "sslmode=verify-ca and verify-full need a root certificate: set sslrootcert=<file> \
                     or put one at ~/.postgresql/root.crt (sslrootcert=system trusts the public web roots)"
                        .to_owned(),
                )
            }
        }
        Ok(Arc::new(store))
    };
    let mode = match split.mode {
        // libpq: with a root certificate file, `require` verifies as `verify-ca`.
        Mode::Require if root.is_some() => Mode::VerifyCa,
        mode => mode,
    };
    let config = match mode {
        Mode::Disable => return Ok(None),
        Mode::Prefer | Mode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
        Mode::VerifyCa => {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots()?,
                provider.clone(),
            )
            .build()
            .map_err(|e| e.to_string())?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
                .with_no_client_auth()
        }
        Mode::VerifyFull => builder
            .with_root_certificates(roots()?)
            .with_no_client_auth(),
    };
    Ok(Some(config))
}

/// `require`: encrypted, not authenticated (libpq's meaning without a root file).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must reach a trusted root; the name is not checked.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Connects to PostgreSQL at `url`, over TLS where `sslmode` asks for it.
pub async fn connect(url: &str) -> diesel::ConnectionResult<diesel_async::AsyncPgConnection> {
    use diesel::ConnectionError;
    use diesel_async::AsyncConnection;
    let split = split(url).map_err(ConnectionError::InvalidConnectionUrl)?;
    let Some(tls) = client_config(&split).map_err(ConnectionError::BadConnection)? else {
        return diesel_async::AsyncPgConnection::establish(&split.url).await;
    };
    let mut config: tokio_postgres::Config = split
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| ConnectionError::InvalidConnectionUrl(e.to_string()))?;
    config.ssl_mode(match split.mode {
        Mode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    let (client, connection) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await
        .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
    diesel_async::AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split() {
        let s = split(
            "postgres://u:p@h:5432/db?sslmode=verify-full&sslrootcert=/ca.pem&options=-c%20x%3D1",
        )
        .unwrap();
        assert_eq!(s.mode, Mode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some("/ca.pem"));
        assert_eq!(s.url, "postgres://u:p@h:5432/db?options=-c%20x%3D1");
        let s = split("postgres://h/db").unwrap();
        assert_eq!((s.mode, s.url.as_str()), (Mode::Disable, "postgres://h/db"));
        assert_eq!(
            split("postgres://h/db?sslmode=require").unwrap().mode,
            Mode::Require
        );
        assert!(split("postgres://h/db?sslmode=sometimes").is_err());
    }

    /// libpq: verify-ca and verify-full need a root file (no silent fallback to the
    /// public web roots, which any public certificate chains to); `require` verifies
    /// once a root file is given.
    #[test]
    fn roots_as_libpq_reads_them() {
        let s = |q: &str| split(&format!("postgres://h/db?{q}")).unwrap();
        let cases = [
            ("sslmode=verify-ca", None, None),
            (
                "sslmode=verify-ca",
                Some("/home/x/.postgresql/root.crt"),
                Some(Root::File("/home/x/.postgresql/root.crt".into())),
            ),
            (
                "sslmode=verify-full&sslrootcert=/ca.pem",
                Some("/d.crt"),
                Some(Root::File("/ca.pem".into())),
            ),
            (
                "sslmode=verify-ca&sslrootcert=system",
                None,
                Some(Root::System),
            ),
            ("sslmode=require", None, None),
        ];
        for (query, default, want) in cases {
            assert_eq!(root_file(&s(query), default), want, "{query}");
        }
        // Without any root file: verify-ca refuses to start rather than trust the web.
        if default_root_file().is_none() {
            let error = client_config(&s("sslmode=verify-ca")).unwrap_err();
            assert!(error.contains("root certificate"), "{error}");
            assert!(client_config(&s("sslmode=require")).unwrap().is_some());
        }
        // `require` with a root file that does not exist fails like verify-ca would.
        let error = client_config(&s("sslmode=require&sslrootcert=/nonexistent.pem")).unwrap_err();
        assert!(error.contains("/nonexistent.pem"), "{error}");
    }
}
