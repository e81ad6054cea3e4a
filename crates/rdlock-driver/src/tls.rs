//! TLS settings of a client (a CA to trust, a client certificate for mutual TLS), and the
//! typed error of a connection that TLS refused.

use std::fmt;

use crate::Error;

/// Certificates for TLS connections (`rediss://` URLs), in
/// [`ClientConfig::tls`](crate::ClientConfig::tls). Without it a `rediss://` connection
/// trusts the operating system's roots and shows no client certificate.
///
/// Needs the adapter's `tls` feature; without it a client with TLS settings is refused
/// ([`TlsError::NotEnabled`]).
///
/// ```
/// use rdlock_driver::{ClientConfig, ClientIdentity, TlsConfig};
///
/// let ca = "-----BEGIN CERTIFICATE-----\n...".to_owned();
/// let config = ClientConfig {
///     tls: Some(TlsConfig {
///         ca_pem: Some(ca),
///         // Mutual TLS: the server asks for a certificate its CA signed.
///         identity: Some(ClientIdentity { cert_pem: "...".into(), key_pem: "...".into() }),
///     }),
///     ..ClientConfig::default()
/// };
/// assert!(!format!("{config:?}").contains("..."), "certificates and keys are not printed");
/// ```
#[derive(Clone, Default)]
pub struct TlsConfig {
    /// CA certificates (PEM) that sign the server's certificate: they replace the operating
    /// system's roots.
    pub ca_pem: Option<String>,
    /// The client's certificate and key, for servers that require one (`tls-auth-clients`).
    pub identity: Option<ClientIdentity>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<set>"))
            .field("identity", &self.identity)
            .finish()
    }
}

/// A client certificate (chain) and its private key, both PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The certificate, followed by any intermediate ones.
    pub cert_pem: String,
    /// The private key (never printed).
    pub key_pem: String,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity").field("cert_pem", &"<set>").field("key_pem", &"<redacted>").finish()
    }
}

/// Why a TLS connection was not made ([`Error::Tls`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The server's certificate is not signed by a trusted CA.
    #[error("the server's certificate is not signed by a trusted CA")]
    UnknownIssuer,
    /// The server's certificate has expired, or is not valid yet.
    #[error("the server's certificate has expired or is not valid yet")]
    Expired,
    /// The server's certificate is not valid for the host connected to.
    #[error("the server's certificate is not valid for the host connected to")]
    WrongHost,
    /// The server's certificate was refused for another reason.
    #[error("the server's certificate was refused: {0}")]
    BadCertificate(String),
    /// The server refused the client: no client certificate, or one it does not trust.
    #[error("the server refused the client's certificate (or its lack of one)")]
    ClientRefused,
    /// The handshake failed otherwise.
    #[error("the TLS handshake failed: {0}")]
    Handshake(String),
    /// The certificates or key given could not be read.
    #[error("the TLS settings could not be used: {0}")]
    Settings(String),
    /// TLS settings were given for a connection without TLS (a `redis://`,
    /// `redis+sentinel://` or `redis+cluster://` URL): nothing was sent in the clear.
    #[error("TLS settings were given for a connection without TLS (use a rediss:// URL)")]
    NotTls,
    /// TLS settings, or a `rediss+sentinel://` or `rediss+cluster://` URL, need the
    /// adapter's `tls` feature.
    #[error("TLS needs the adapter's `tls` feature")]
    NotEnabled,
}

/// The client that connects with `tls`' certificates: `redis` itself without them.
pub(crate) fn apply(tls: Option<&TlsConfig>, redis: redis::Client) -> Result<redis::Client, Error> {
    let secure = matches!(redis.get_connection_info().addr(), redis::ConnectionAddr::TcpTls { .. });
    if secure {
        imp::install_provider();
    }
    let Some(tls) = tls else { return Ok(redis) };
    if !secure {
        return Err(TlsError::NotTls.into());
    }
    imp::with_certificates(tls, redis)
}

/// How a client through sentinels or of a cluster reaches each server it makes a client for
/// (sentinels, primaries, cluster nodes, for commands, pub/sub and lookups alike): in the
/// clear, or over TLS with the client's certificates. Both sentinels and data nodes take the
/// one setting, so that no connection of a TLS client falls back to the clear.
#[derive(Clone)]
pub(crate) struct NodeTls {
    /// A TLS address whose parameters (the certificates, parsed once) every server's address
    /// copies; `None`: in the clear.
    template: Option<redis::ConnectionAddr>,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.template.is_some() { "NodeTls(tls)" } else { "NodeTls(clear)" })
    }
}

impl NodeTls {
    /// From the URL's scheme (`secure`: `rediss+...`) and the client's TLS settings: TLS
    /// settings for a plain scheme are refused ([`TlsError::NotTls`]), and TLS without the
    /// `tls` feature ([`TlsError::NotEnabled`]).
    pub(crate) fn new(secure: bool, settings: Option<&TlsConfig>) -> Result<Self, Error> {
        match (secure, settings) {
            (false, None) => return Ok(Self { template: None }),
            (false, Some(_)) => return Err(TlsError::NotTls.into()),
            (true, _) if !cfg!(feature = "tls") => return Err(TlsError::NotEnabled.into()),
            (true, _) => {}
        }
        let addr =
            redis::ConnectionAddr::TcpTls { host: "localhost".into(), port: 0, insecure: false, tls_params: None };
        let template = apply(settings, redis::Client::open(redis::IntoConnectionInfo::into_connection_info(addr)?)?)?;
        Ok(Self { template: Some(template.get_connection_info().addr().clone()) })
    }

    /// The address of the server at `host:port`.
    pub(crate) fn addr(&self, host: &str, port: u16) -> redis::ConnectionAddr {
        match &self.template {
            Some(redis::ConnectionAddr::TcpTls { insecure, tls_params, .. }) => redis::ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => redis::ConnectionAddr::Tcp(host.to_owned(), port),
        }
    }
}

/// The typed TLS refusal `e` is, if it is one.
pub(crate) fn refusal(e: &redis::RedisError) -> Option<TlsError> {
    imp::refusal(e)
}

/// A connect error as the typed TLS refusal it is, if it is one.
pub(crate) fn typed(e: Error) -> Error {
    match e {
        Error::Redis(r) => match imp::refusal(&r) {
            Some(t) => Error::Tls(t),
            None => Error::Redis(r),
        },
        other => other,
    }
}

#[cfg(feature = "tls")]
mod imp {
    use std::error::Error as StdError;
    use std::sync::Arc;

    use rustls::{AlertDescription as Alert, CertificateError as Cert};

    use super::{TlsConfig, TlsError};
    use crate::Error;

    /// The ring provider, unless the program chose one: the redis crate asks rustls for the
    /// process default, which is ambiguous when another crate also turns on another provider.
    // Deprecated only as a nudge towards the other provider's post-quantum key exchange;
    // that one needs cmake and a C toolchain to build, ring a C compiler alone.
    #[allow(deprecated)]
    pub(super) fn install_provider() {
        // An error means a provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    pub(super) fn with_certificates(tls: &TlsConfig, redis: redis::Client) -> Result<redis::Client, Error> {
        let certificates = redis::TlsCertificates {
            client_tls: tls.identity.as_ref().map(|id| redis::ClientTlsConfig {
                client_cert: id.cert_pem.clone().into_bytes(),
                client_key: id.key_pem.clone().into_bytes(),
            }),
            root_cert: tls.ca_pem.as_ref().map(|pem| pem.clone().into_bytes()),
        };
        redis::Client::build_with_tls(redis.get_connection_info().clone(), certificates)
            .map_err(|e| TlsError::Settings(e.to_string()).into())
    }

    /// The rustls error somewhere in `e`'s causes, as a [`TlsError`]. The redis crate keeps
    /// its cause in an `Arc`, and an I/O error hides the one it wraps from `source()`.
    pub(super) fn refusal(e: &redis::RedisError) -> Option<TlsError> {
        let mut next: Option<&(dyn StdError + 'static)> = e.source();
        while let Some(cause) = next {
            if let Some(found) = rustls_in(cause) {
                return Some(classify(found));
            }
            next = cause.source();
        }
        None
    }

    fn rustls_in<'a>(cause: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
        if let Some(r) = cause.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(shared) = cause.downcast_ref::<Arc<dyn StdError + Send + Sync>>() {
            return rustls_in(&**shared);
        }
        let io = cause.downcast_ref::<std::io::Error>()?;
        rustls_in(io.get_ref()?)
    }

    fn classify(e: &rustls::Error) -> TlsError {
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                Cert::UnknownIssuer => TlsError::UnknownIssuer,
                Cert::Expired | Cert::ExpiredContext { .. } | Cert::NotValidYet | Cert::NotValidYetContext { .. } => {
                    TlsError::Expired
                }
                Cert::NotValidForName | Cert::NotValidForNameContext { .. } => TlsError::WrongHost,
                other => TlsError::BadCertificate(other.to_string()),
            },
            rustls::Error::AlertReceived(
                Alert::CertificateRequired
                | Alert::BadCertificate
                | Alert::UnknownCA
                | Alert::UnsupportedCertificate
                | Alert::CertificateUnknown
                | Alert::AccessDenied,
            ) => TlsError::ClientRefused,
            other => TlsError::Handshake(other.to_string()),
        }
    }
}

#[cfg(not(feature = "tls"))]
mod imp {
    use super::{TlsConfig, TlsError};
    use crate::Error;

    pub(super) fn install_provider() {}

    pub(super) fn with_certificates(_: &TlsConfig, _: redis::Client) -> Result<redis::Client, Error> {
        Err(TlsError::NotEnabled.into())
    }

    pub(super) fn refusal(_: &redis::RedisError) -> Option<TlsError> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TlsConfig {
        let identity = ClientIdentity { cert_pem: "CERT".into(), key_pem: "PRIVATE-KEY".into() };
        TlsConfig { ca_pem: Some("CA".into()), identity: Some(identity) }
    }

    #[test]
    fn settings_print_no_certificate_or_key() {
        let shown = format!("{:?}", settings());
        assert!(!shown.contains("PRIVATE-KEY") && !shown.contains("CERT") && !shown.contains("\"CA\""), "{shown}");
    }

    #[test]
    fn settings_for_a_plain_url_are_refused() -> Result<(), Error> {
        let plain = redis::Client::open("redis://127.0.0.1:1/")?;
        assert!(matches!(apply(Some(&settings()), plain.clone()), Err(Error::Tls(TlsError::NotTls))));
        assert!(apply(None, plain).is_ok(), "no settings, nothing to refuse");
        Ok(())
    }

    #[test]
    fn sentinel_and_cluster_servers_are_reached_as_the_url_says() -> Result<(), Error> {
        let plain = NodeTls::new(false, None)?;
        assert!(matches!(plain.addr("h", 7), redis::ConnectionAddr::Tcp(h, 7) if h == "h"));
        assert!(matches!(NodeTls::new(false, Some(&settings())), Err(Error::Tls(TlsError::NotTls))));
        if cfg!(feature = "tls") {
            // The certificates, parsed once, go to every server's address.
            let secure = NodeTls::new(true, Some(&TlsConfig::default()))?;
            let addr = secure.addr("h", 7);
            assert!(
                matches!(addr, redis::ConnectionAddr::TcpTls { ref host, port: 7, insecure: false, tls_params: Some(_) } if host == "h")
            );
            assert!(matches!(NodeTls::new(true, Some(&settings())), Err(Error::Tls(TlsError::Settings(_)))));
            assert_eq!(format!("{secure:?}"), "NodeTls(tls)", "no certificate printed");
        } else {
            assert!(matches!(NodeTls::new(true, None), Err(Error::Tls(TlsError::NotEnabled))));
        }
        Ok(())
    }

    #[cfg(feature = "tls")]
    #[test]
    fn an_unreadable_key_is_a_settings_error() -> Result<(), Error> {
        let secure = redis::Client::open("rediss://127.0.0.1:1/")?;
        assert!(matches!(apply(Some(&settings()), secure), Err(Error::Tls(TlsError::Settings(_)))));
        Ok(())
    }
}
