//! Goal state over TLS with client-certificate verification: only clients holding a certificate
//! from the configured CA get in.

use std::net::IpAddr;
use std::path::PathBuf;

use alioth::cli::{connect, ClientTls};
use alioth_proto::schema::goal_state_provisioner_client::GoalStateProvisionerClient;
use alioth_proto::schema::*;
use alioth_tests::agent::alioth_bin;
use alioth_tests::goalstate::*;
use alioth_tests::grpc::Server;
use alioth_tests::netns;
use anyhow::{ensure, Result};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, plus a client
    /// certificate from a second, unrelated CA; all PEM files in a fresh directory.
    fn new() -> Result<Pki> {
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

    fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    fn server_tls(&self) -> Result<ServerTlsConfig> {
        let read = |f: &str| std::fs::read(self.path(f));
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(read("server.pem")?, read("server.key")?))
            .client_ca_root(Certificate::from_pem(read("ca.pem")?)))
    }

    fn client(&self, stem: Option<&str>) -> ClientTls {
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

async fn push(server: &str, tls: &ClientTls) -> Result<GoalStateOperationReply> {
    let mut c = GoalStateProvisionerClient::new(connect(server, tls).await?);
    let msg = GoalState {
        vpc_states: vec![vpc(OperationType::Create, "v", 1001, 0, UpdateType::Delta)],
        ..Default::default()
    };
    Ok(c.push_network_resource_states(msg).await?.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn only_clients_with_a_certificate_from_the_ca_get_in() -> Result<()> {
    let pki = Pki::new()?;
    let server = Server::start_tls(vec!["198.18.200.1".parse::<IpAddr>()?], Some(pki.server_tls()?)).await?;
    let addr = server.addr.to_string();

    let reply = push(&addr, &pki.client(Some("client"))).await?;
    ensure!(statuses(&reply) == [("v".to_string(), OperationStatus::Success)]);

    ensure!(
        push(&addr, &pki.client(None)).await.is_err(),
        "a client without a certificate is refused"
    );
    ensure!(
        push(&addr, &pki.client(Some("evil"))).await.is_err(),
        "a certificate from another CA is refused"
    );
    ensure!(
        push(&addr, &ClientTls::default()).await.is_err(),
        "plaintext is refused"
    );

    // The CLI speaks the same TLS (what an exec probe would run).
    let s = |f: &str| pki.path(f).to_string_lossy().into_owned();
    let out = netns::run_output(&[
        alioth_bin()?.to_str().unwrap_or_default(),
        "health",
        "--server",
        &addr,
        "--tls-ca",
        &s("ca.pem"),
        "--tls-client-cert",
        &s("client.pem"),
        "--tls-client-key",
        &s("client.key"),
        "--tls-domain",
        "localhost",
    ])?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "SERVING",
        "{out:?}"
    );
    server.stop().await
}
