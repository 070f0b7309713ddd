//! Goal state over TLS with client-certificate verification: only clients holding a certificate
//! from the configured CA get in.

use std::net::IpAddr;

use alioth::cli::{connect, ClientTls};
use alioth_proto::schema::goal_state_provisioner_client::GoalStateProvisionerClient;
use alioth_proto::schema::*;
use alioth_tests::agent::alioth_bin;
use alioth_tests::goalstate::*;
use alioth_tests::grpc::Server;
use alioth_tests::netns;
use alioth_tests::pki::Pki;
use anyhow::{ensure, Result};

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
