//! Throwaway certificates for TLS servers and clients, made at run time: a CA, server
//! certificates (valid, expired, or for another host) and client certificates for mutual TLS.

use std::fmt;
#[cfg(feature = "tls")]
use std::net::{IpAddr, Ipv4Addr};

#[cfg(feature = "tls")]
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

#[cfg(feature = "tls")]
use crate::error::{Result, TestkitError};

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
}

// A test key is no secret, but a printed key is noise in every failure message.
impl fmt::Debug for CertPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertPair").field("cert_pem", &self.cert_pem.len()).field("key_pem", &"<redacted>").finish()
    }
}

#[cfg(feature = "tls")]
/// A throwaway certificate authority: everything it issues lives as long as the test.
///
/// ```
/// let ca = rdlock_testkit::TestCa::new("example").unwrap();
/// let server = ca.server_cert().unwrap();
/// assert!(server.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
/// ```
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

#[cfg(feature = "tls")]
impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// What a certificate is for.
#[cfg(feature = "tls")]
enum Use {
    /// A server on loopback (which also presents it as a replica, to its primary).
    Server,
    /// A client of mutual TLS.
    Client,
}

#[cfg(feature = "tls")]
impl TestCa {
    /// A new CA named `name` (its common name reads `rdlock test CA <name>`).
    pub fn new(name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
        params.distinguished_name.push(DnType::CommonName, format!("rdlock test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(tls_error)?;
        Ok(Self { issuer: CertifiedIssuer::self_signed(params, key).map_err(tls_error)? })
    }

    /// The CA's certificate, PEM: the root a client trusts.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `127.0.0.1` and `localhost`, valid now.
    pub fn server_cert(&self) -> Result<CertPair> {
        self.issue(&[SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)), dns("localhost")?], Use::Server, false)
    }

    /// A server certificate for `host` only: a client of `127.0.0.1` must refuse it.
    pub fn server_cert_for(&self, host: &str) -> Result<CertPair> {
        self.issue(&[dns(host)?], Use::Server, false)
    }

    /// A server certificate for `127.0.0.1` and `localhost` that expired in 2001.
    pub fn expired_server_cert(&self) -> Result<CertPair> {
        self.issue(&[SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)), dns("localhost")?], Use::Server, true)
    }

    /// A client certificate, for servers that require one (mutual TLS).
    pub fn client_cert(&self) -> Result<CertPair> {
        self.issue(&[], Use::Client, false)
    }

    fn issue(&self, names: &[SanType], usage: Use, expired: bool) -> Result<CertPair> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = names.to_vec();
        let cn = match usage {
            Use::Server => "rdlock test server",
            Use::Client => "rdlock test client",
        };
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        // A server also connects to its primary as a replica, presenting the same certificate.
        params.extended_key_usages = match usage {
            Use::Server => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Use::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().map_err(tls_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(tls_error)?;
        Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

#[cfg(feature = "tls")]
fn dns(host: &str) -> Result<SanType> {
    Ok(SanType::DnsName(host.try_into().map_err(tls_error)?))
}

#[cfg(feature = "tls")]
fn tls_error(e: rcgen::Error) -> TestkitError {
    TestkitError::InvalidArgument(format!("certificate: {e}"))
}

/// How a TLS server treats clients without a certificate (`tls-auth-clients`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    No,
    /// A client certificate signed by the CA is required (mutual TLS).
    Required,
}

/// What a TLS server is started with ([`crate::ServerBuilder::tls`]): it listens only on
/// its TLS port (`--port 0`), and replicates over TLS (`--tls-replication yes`).
#[derive(Clone, Debug)]
pub struct TlsServer {
    pub(crate) ca_pem: String,
    pub(crate) server: CertPair,
    /// The test-kit's own certificate, for its admin connections to a mutual-TLS server.
    pub(crate) admin: CertPair,
    pub(crate) clients: ClientAuth,
    /// Whether the test-kit checks the server's certificate: not when a test gave it a bad
    /// one on purpose.
    verified: bool,
}

impl TlsServer {
    /// A server with a valid certificate of `ca`, asking clients for none.
    #[cfg(feature = "tls")]
    pub fn new(ca: &TestCa) -> Result<Self> {
        Ok(Self { verified: true, ..Self::with_cert(ca, ca.server_cert()?)? })
    }

    /// A server presenting `server` (say an expired one), trusting `ca` for clients and
    /// replicas. The test-kit's own connections to it do not check its certificate.
    #[cfg(feature = "tls")]
    pub fn with_cert(ca: &TestCa, server: CertPair) -> Result<Self> {
        Ok(Self { ca_pem: ca.ca_pem(), server, admin: ca.client_cert()?, clients: ClientAuth::No, verified: false })
    }

    /// How clients without a certificate are treated.
    #[must_use]
    pub fn clients(mut self, auth: ClientAuth) -> Self {
        self.clients = auth;
        self
    }

    /// The redis crate's client of `url` (`rediss://`) that trusts this server's CA and shows
    /// the test-kit's client certificate.
    #[cfg(feature = "tls")]
    pub(crate) fn client(&self, mut url: String) -> redis::RedisResult<redis::Client> {
        if !self.verified {
            url.push_str("#insecure");
        }
        let admin = redis::ClientTlsConfig {
            client_cert: self.admin.cert_pem.clone().into_bytes(),
            client_key: self.admin.key_pem.clone().into_bytes(),
        };
        let certificates =
            redis::TlsCertificates { client_tls: Some(admin), root_cert: Some(self.ca_pem.clone().into_bytes()) };
        redis::Client::build_with_tls(url, certificates)
    }
}

/// Without the `tls` feature no `TlsServer` can be made, so this is never called.
#[cfg(not(feature = "tls"))]
impl TlsServer {
    pub(crate) fn client(&self, _url: String) -> redis::RedisResult<redis::Client> {
        let _ = (&self.ca_pem, &self.server, &self.admin, self.verified);
        Err((redis::ErrorKind::InvalidClientConfig, "the test kit was built without its tls feature").into())
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;
    use crate::{RedisServer, Replicated};

    #[test]
    fn a_tls_server_answers_over_tls_only_and_replicates_over_tls() -> Result<()> {
        let ca = TestCa::new("testkit")?;
        let set =
            Replicated::start_with(1, RedisServer::builder().tls(TlsServer::new(&ca)?.clients(ClientAuth::Required)))?;
        assert!(set.primary().url().starts_with("rediss://"));
        let mut conn = set.primary().connection()?;
        redis::cmd("SET").arg("k").arg("v").query::<()>(&mut conn)?;
        let acked: u64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut conn)?;
        assert_eq!(acked, 1, "the replica acknowledged over TLS");
        let plain = redis::Client::open(format!("redis://127.0.0.1:{}/", set.primary().port()))?;
        assert!(
            plain
                .get_connection_with_timeout(std::time::Duration::from_secs(2))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_err()
        );
        let v: String = redis::cmd("GET").arg("k").query(&mut set.replica(0).connection()?)?;
        assert_eq!(v, "v");
        Ok(())
    }
}
