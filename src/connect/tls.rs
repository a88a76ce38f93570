//! TLS with libpq's `sslmode` semantics, on OpenSSL (the `tls` feature, on by default).
//!
//! | sslmode       | encrypts                  | checks the certificate chain | checks the host name |
//! |---------------|---------------------------|------------------------------|----------------------|
//! | `disable`     | no                        | –                            | –                    |
//! | `prefer`      | when the server offers it | only with a root certificate | no                   |
//! | `require`     | yes                       | only with a root certificate | no                   |
//! | `verify-ca`   | yes                       | yes                          | no                   |
//! | `verify-full` | yes                       | yes                          | yes                  |
//!
//! The root certificate is `sslrootcert` (default `~/.postgresql/root.crt` when it exists;
//! `system` means the system's trusted roots), the client certificate `sslcert` and `sslkey`
//! (default `~/.postgresql/postgresql.crt` / `.key` when they exist).

use std::path::{Path, PathBuf};

use crate::{Error, ErrorKind, Result};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub(crate) fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            // `allow` tries plain first; pgbroker tries TLS first, as `prefer` does.
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "invalid sslmode `{other}`: expected disable, prefer, require, verify-ca or verify-full"
                    ),
                ))
            }
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What `postgres::Config` is told: it knows only whether TLS is off, tried or required.
    pub(crate) fn negotiation(self) -> postgres::config::SslMode {
        match self {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        }
    }
}

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Roots {
    /// No verification of the server's certificate.
    None,
    /// The PEM file given (or found at the default path).
    File(PathBuf),
    /// The system's trusted roots (`sslrootcert=system`).
    System,
}

/// Everything TLS needs, resolved from the connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub mode: SslMode,
    pub roots: Roots,
    pub verify_host: bool,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub key_password: Option<String>,
}

impl TlsSettings {
    /// Resolves the TLS settings as libpq does, including its default file locations under
    /// `home/.postgresql/`.
    pub(crate) fn resolve(
        mode: Option<&str>,
        rootcert: Option<&str>,
        cert: Option<&str>,
        key: Option<&str>,
        key_password: Option<String>,
        home: Option<&Path>,
    ) -> Result<TlsSettings> {
        let mode = SslMode::parse(mode.unwrap_or("prefer"))?;
        let default_file = |name: &str| home.map(|h| h.join(".postgresql").join(name));
        let verify = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
        let roots = match rootcert {
            Some("system") => {
                if mode != SslMode::VerifyFull {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "sslrootcert=system needs sslmode=verify-full (not {}): public CAs certify host names, not servers",
                            mode.as_str()
                        ),
                    ));
                }
                Roots::System
            }
            Some(path) => {
                let path = PathBuf::from(path);
                if !path.is_file() && mode != SslMode::Disable {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!("sslrootcert file {} does not exist", path.display()),
                    ));
                }
                Roots::File(path)
            }
            None => match default_file("root.crt").filter(|p| p.is_file()) {
                Some(path) => Roots::File(path),
                None if verify => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "sslmode={} needs a root certificate: set sslrootcert (or PGSSLROOTCERT) to the CA's PEM file, \
                             use sslrootcert=system for the system's trusted roots, or put it at ~/.postgresql/root.crt",
                            mode.as_str()
                        ),
                    ))
                }
                None => Roots::None,
            },
        };
        let roots = if mode == SslMode::Disable {
            Roots::None
        } else {
            roots
        };
        let cert = cert
            .map(PathBuf::from)
            .or_else(|| default_file("postgresql.crt").filter(|p| p.is_file()));
        let client_cert = match cert {
            Some(cert) if mode != SslMode::Disable => {
                if !cert.is_file() {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!("sslcert file {} does not exist", cert.display()),
                    ));
                }
                let key = key
                    .map(PathBuf::from)
                    .or_else(|| default_file("postgresql.key"))
                    .filter(|p| p.is_file())
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Config,
                            format!(
                                "sslcert {} is given but its private key is not: set sslkey (or PGSSLKEY)",
                                cert.display()
                            ),
                        )
                    })?;
                Some((cert, key))
            }
            _ => None,
        };
        Ok(TlsSettings {
            mode,
            roots,
            verify_host: mode == SslMode::VerifyFull,
            client_cert,
            key_password,
        })
    }

    /// Settings for a prebuilt `postgres::Config`: its own mode, no verification.
    pub(crate) fn unverified(mode: postgres::config::SslMode) -> TlsSettings {
        let mode = match mode {
            postgres::config::SslMode::Disable => SslMode::Disable,
            postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        TlsSettings {
            mode,
            roots: Roots::None,
            verify_host: false,
            client_cert: None,
            key_password: None,
        }
    }
}

/// The connector every connection of a broker uses.
#[derive(Clone)]
pub(crate) enum Connector {
    /// No TLS: `sslmode=disable`, or `prefer` without the `tls` feature.
    Plain,
    /// OpenSSL, configured for the mode.
    #[cfg(feature = "tls")]
    OpenSsl(postgres_openssl::MakeTlsConnector),
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connector::Plain => f.write_str("Plain"),
            #[cfg(feature = "tls")]
            Connector::OpenSsl(_) => f.write_str("OpenSsl"),
        }
    }
}

impl Connector {
    /// Connects with `pg` through this connector.
    pub(crate) fn connect(
        &self,
        pg: &postgres::Config,
    ) -> std::result::Result<postgres::Client, postgres::Error> {
        match self {
            Connector::Plain => pg.connect(postgres::NoTls),
            #[cfg(feature = "tls")]
            Connector::OpenSsl(c) => pg.connect(c.clone()),
        }
    }
}

/// Builds the connector for `settings`.
#[cfg(not(feature = "tls"))]
pub(crate) fn connector(settings: &TlsSettings) -> Result<Connector> {
    match settings.mode {
        SslMode::Disable | SslMode::Prefer => Ok(Connector::Plain),
        mode => Err(Error::new(
            ErrorKind::Config,
            format!(
                "sslmode={} needs TLS, but pgbroker was built without its `tls` feature",
                mode.as_str()
            ),
        )),
    }
}

/// Builds the connector for `settings`.
#[cfg(feature = "tls")]
pub(crate) fn connector(settings: &TlsSettings) -> Result<Connector> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};

    if settings.mode == SslMode::Disable {
        return Ok(Connector::Plain);
    }
    let tls_err = |what: String| {
        move |e: openssl::error::ErrorStack| Error::with_cause(ErrorKind::Tls, Some(what), e)
    };
    let mut b = SslConnector::builder(SslMethod::tls_client())
        .map_err(tls_err("setting up OpenSSL".into()))?;
    match &settings.roots {
        Roots::None => b.set_verify(SslVerifyMode::NONE),
        Roots::System => b.set_verify(SslVerifyMode::PEER),
        Roots::File(path) => {
            // Trust only this file, not the system's roots as well (libpq does the same).
            let pem = std::fs::read(path).map_err(|e| {
                Error::with_cause(
                    ErrorKind::Config,
                    Some(format!("reading sslrootcert {}", path.display())),
                    e,
                )
            })?;
            let what = format!("reading sslrootcert {}", path.display());
            let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(tls_err(what.clone()))?;
            if certs.is_empty() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("sslrootcert {} holds no PEM certificate", path.display()),
                ));
            }
            let mut store =
                openssl::x509::store::X509StoreBuilder::new().map_err(tls_err(what.clone()))?;
            for c in certs {
                store.add_cert(c).map_err(tls_err(what.clone()))?;
            }
            b.set_cert_store(store.build());
            b.set_verify(SslVerifyMode::PEER);
        }
    }
    if let Some((cert, key)) = &settings.client_cert {
        let what = format!("reading sslcert {}", cert.display());
        b.set_certificate_chain_file(cert).map_err(tls_err(what))?;
        let what = format!("reading sslkey {}", key.display());
        match &settings.key_password {
            Some(pw) => {
                let pem = std::fs::read(key)
                    .map_err(|e| Error::with_cause(ErrorKind::Config, Some(what.clone()), e))?;
                let pkey =
                    openssl::pkey::PKey::private_key_from_pem_passphrase(&pem, pw.as_bytes())
                        .map_err(tls_err(what.clone()))?;
                b.set_private_key(&pkey).map_err(tls_err(what))?;
            }
            None => b
                .set_private_key_file(key, openssl::ssl::SslFiletype::PEM)
                .map_err(tls_err(what))?,
        }
        b.check_private_key().map_err(tls_err(format!(
            "sslkey {} does not belong to sslcert {}",
            key.display(),
            cert.display()
        )))?;
    }
    let mut connector = postgres_openssl::MakeTlsConnector::new(b.build());
    if !settings.verify_host {
        connector.set_callback(|config, _host| {
            config.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(Connector::OpenSsl(connector))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn modes_as_libpq_reads_them() {
        let none = TlsSettings::resolve(None, None, None, None, None, None).unwrap();
        assert_eq!(none.mode, SslMode::Prefer);
        assert_eq!(none.roots, Roots::None);
        let err =
            TlsSettings::resolve(Some("verify-ca"), None, None, None, None, None).unwrap_err();
        assert!(
            err.to_string().contains("needs a root certificate"),
            "{err}"
        );
        let err = TlsSettings::resolve(Some("verify"), None, None, None, None, None).unwrap_err();
        assert!(
            err.to_string().contains("invalid sslmode `verify`"),
            "{err}"
        );
        let err = TlsSettings::resolve(Some("require"), Some("system"), None, None, None, None)
            .unwrap_err();
        assert!(err.to_string().contains("verify-full"), "{err}");
        let full =
            TlsSettings::resolve(Some("verify-full"), Some("system"), None, None, None, None)
                .unwrap();
        assert!(full.verify_host);
        let err = TlsSettings::resolve(
            Some("require"),
            Some("/nonexistent/ca.pem"),
            None,
            None,
            None,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
