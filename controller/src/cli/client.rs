//! Connecting to an agent: a TCP address or URL, or a unix socket, optionally over TLS.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// TLS towards an agent started with --tls-cert (https:// addresses imply TLS too).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClientTls {
    /// CA (PEM) that issued the agent's certificate.
    #[arg(long, env = "ALIOTH_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for agents that verify clients.
    #[arg(long, env = "ALIOTH_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-client-cert.
    #[arg(long, env = "ALIOTH_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
    /// Name to verify the agent's certificate against (default: the address's host).
    #[arg(long)]
    pub tls_domain: Option<String>,
}

/// A channel to the agent at `server` (host:port, URL or unix:PATH), over TLS when asked for.
pub async fn connect(server: &str, tls: &ClientTls) -> Result<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let secure = server.starts_with("https://") || tls.tls_ca.is_some() || tls.tls_client_cert.is_some();
    let scheme = if secure { "https" } else { "http" };
    let socket = server.strip_prefix("unix:").map(PathBuf::from);
    let url = match (&socket, server.split_once("://")) {
        // The URL only names the HTTP/2 authority; the connector below dials the socket.
        (Some(_), _) => format!("{scheme}://localhost"),
        (None, Some((_, rest))) => format!("{scheme}://{rest}"),
        (None, None) => format!("{scheme}://{server}"),
    };
    let mut endpoint = Endpoint::from_shared(url.clone())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(crate::agent::H2_WINDOW)
        .initial_connection_window_size(2 * crate::agent::H2_WINDOW);
    if secure {
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("read {}", p.display()));
        let mut cfg = ClientTlsConfig::new();
        if let Some(ca) = &tls.tls_ca {
            cfg = cfg.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&tls.tls_client_cert, &tls.tls_client_key) {
            cfg = cfg.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(domain) = &tls.tls_domain {
            cfg = cfg.domain_name(domain.clone());
        }
        endpoint = endpoint.tls_config(cfg).context("TLS configuration")?;
    }
    match socket {
        Some(path) => {
            let dial = path.clone();
            endpoint
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let path = dial.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
                .with_context(|| format!("connect to the agent at unix:{}", path.display()))
        }
        None => endpoint
            .connect()
            .await
            .with_context(|| format!("connect to the agent at {url}")),
    }
}
