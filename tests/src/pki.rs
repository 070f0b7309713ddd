//! A throwaway PKI for TLS tests: a CA, a server certificate for localhost/127.0.0.1, a client
//! certificate from that CA and one from an unrelated CA, as PEM files in a fresh directory.

use std::path::PathBuf;

use alioth::cli::ClientTls;
use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::netns;

pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, plus a client
    /// certificate from a second, unrelated CA; all PEM files in a fresh directory.
    pub fn new() -> Result<Pki> {
        let dir = std::env::temp_dir().join(netns::unique("alioth-pki-"));
        std::fs::create_dir_all(&dir)?;
        let ca = |name: &str| -> Result<CertifiedIssuer<'static, KeyPair>> {
            let mut p = CertificateParams::new(Vec::<String>::new())?;
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            Ok(CertifiedIssuer::self_signed(p, KeyPair::generate()?)?)
        };
        let (good, evil) = (ca("alioth test CA")?, ca("some other CA")?);
        let leaf = |names: &[&str], issuer: &CertifiedIssuer<'static, KeyPair>, stem: &str| -> Result<()> {
            let key = KeyPair::generate()?;
            let cert = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?
                .signed_by(&key, issuer)?;
            std::fs::write(dir.join(format!("{stem}.pem")), cert.pem())?;
            std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem())?;
            Ok(())
        };
        std::fs::write(dir.join("ca.pem"), good.pem())?;
        leaf(&["localhost", "127.0.0.1"], &good, "server")?;
        leaf(&["controller"], &good, "client")?;
        leaf(&["intruder"], &evil, "evil")?;
        Ok(Pki { dir })
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    pub fn server_tls(&self) -> Result<ServerTlsConfig> {
        let read = |f: &str| std::fs::read(self.path(f));
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(read("server.pem")?, read("server.key")?))
            .client_ca_root(Certificate::from_pem(read("ca.pem")?)))
    }

    pub fn client(&self, stem: Option<&str>) -> ClientTls {
        ClientTls {
            tls_ca: Some(self.path("ca.pem")),
            tls_client_cert: stem.map(|s| self.path(&format!("{s}.pem"))),
            tls_client_key: stem.map(|s| self.path(&format!("{s}.key"))),
            tls_domain: Some("localhost".into()),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
