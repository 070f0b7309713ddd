//! The DaemonSet: it validates against the Kubernetes API schemas, asks for what an XDP agent needs,
//! and the agent started exactly as its container says (command, ConfigMap environment) answers
//! the gRPC health probe the manifest configures.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alioth_tests::agent::{alioth_bin, Leftover};
use alioth_tests::netns::{self, Netns};
use alioth_tests::pki::Pki;
use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_norway::Value;

fn manifest_path() -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "..", "deploy", "alioth.yaml"]
        .iter()
        .collect()
}

/// The manifest's documents.
fn manifest() -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(manifest_path())?;
    let docs = serde_norway::Deserializer::from_str(&text)
        .map(Value::deserialize)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(docs)
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .with_context(|| format!("no {kind} in the manifest"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

#[test]
fn manifest_validates_against_the_kubernetes_schemas() -> Result<()> {
    let path = manifest_path();
    // `cargo xtask test` says where setup installed it; otherwise it must be on PATH.
    let tool = std::env::var("ALIOTH_KUBERNETES_VALIDATE").unwrap_or_else(|_| "kubernetes-validate".into());
    let out = Command::new(&tool)
        .arg("--strict")
        .arg(&path)
        .output()
        .with_context(|| format!("run {tool}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "kubernetes-validate: {text}");
    for resource in [
        "namespace/alioth-system",
        "serviceaccount/alioth-agent",
        "configmap/alioth-agent",
        "resourcequota/alioth-critical-pods",
        "daemonset/alioth-agent",
    ] {
        ensure!(
            text.contains(&format!("passed for resource {resource}")),
            "{resource} not validated: {text}"
        );
    }
    Ok(())
}

#[test]
fn manifest_asks_for_what_an_xdp_agent_needs() -> Result<()> {
    let docs = manifest()?;
    let ds = kind(&docs, "DaemonSet")?;
    let pod = &ds["spec"]["template"]["spec"];
    ensure!(pod["hostNetwork"] == true, "hostNetwork");
    ensure!(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1);
    let c = &pod["containers"][0];
    let caps = strs(&c["securityContext"]["capabilities"]["add"]);
    ensure!(caps == ["BPF", "PERFMON", "NET_ADMIN"], "capabilities {caps:?}");
    ensure!(strs(&c["securityContext"]["capabilities"]["drop"]) == ["ALL"]);
    ensure!(c["securityContext"]["privileged"].is_null(), "not privileged");
    let mounts = c["volumeMounts"].as_sequence().context("volumeMounts")?;
    let bpffs = mounts
        .iter()
        .find(|m| m["mountPath"] == "/sys/fs/bpf")
        .context("bpffs mount")?;
    ensure!(bpffs["mountPropagation"] == "HostToContainer");
    ensure!(
        mounts.iter().any(|m| m["mountPath"] == "/var/lib/alioth"),
        "the journal survives the pod"
    );
    let config = &kind(&docs, "ConfigMap")?["data"];
    let listen = config["ALIOTH_LISTEN"].as_str().context("ALIOTH_LISTEN")?;
    let port: u64 = listen.rsplit(':').next().context("port")?.parse()?;
    ensure!(pod["priorityClassName"] == "system-node-critical", "evicted last");
    let init = &pod["initContainers"][0];
    ensure!(
        strs(&init["command"]) == ["/alioth", "mount-bpffs"],
        "bpffs init container"
    );
    ensure!(
        init["volumeMounts"][0]["mountPropagation"] == "Bidirectional",
        "its mount reaches the host"
    );
    let quota = &kind(&docs, "ResourceQuota")?["spec"]["scopeSelector"]["matchExpressions"][0];
    ensure!(
        strs(&quota["values"]) == ["system-node-critical"],
        "a quota admits critical pods here"
    );
    // Goal state over mutual TLS by default, from a Secret mounted where the ConfigMap looks.
    let metrics_port: u64 = config["ALIOTH_METRICS_LISTEN"]
        .as_str()
        .and_then(|m| m.rsplit(':').next())
        .context("metrics port")?
        .parse()?;
    ensure!(port == 50001, "Alcor's port");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        ensure!(
            c[probe]["httpGet"]["port"].as_u64() == Some(metrics_port) && c[probe]["httpGet"]["path"] == "/healthz",
            "{probe} must ask /healthz on the metrics port {metrics_port} (gRPC probes speak no TLS)"
        );
    }
    let tls = mounts
        .iter()
        .find(|m| m["name"] == "grpc-tls")
        .context("the TLS Secret's mount")?;
    let tls_dir = tls["mountPath"].as_str().context("mountPath")?;
    for key in ["ALIOTH_TLS_CERT", "ALIOTH_TLS_KEY", "ALIOTH_TLS_CLIENT_CA"] {
        let path = config[key]
            .as_str()
            .with_context(|| format!("{key} in the ConfigMap"))?;
        ensure!(
            path.starts_with(tls_dir),
            "{key} {path} is not in the Secret's mount {tls_dir}"
        );
    }
    let volume = pod["volumes"]
        .as_sequence()
        .and_then(|v| v.iter().find(|v| v["name"] == "grpc-tls"))
        .context("the TLS volume")?;
    ensure!(volume["secret"]["secretName"] == "alioth-grpc-tls");
    ensure!(c["envFrom"][0]["configMapRef"]["name"] == "alioth-agent");
    Ok(())
}

struct Node {
    agent: Child,
    _left: Leftover,
    _ns: Netns,
    /// The agent's log, removed with it (also when the test fails).
    log: std::path::PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[test]
fn agent_started_as_deployed_answers_its_health_probe() -> Result<()> {
    let docs = manifest()?;
    let c = &kind(&docs, "DaemonSet")?["spec"]["template"]["spec"]["containers"][0];
    let mut command = strs(&c["command"]);
    command.extend(strs(&c["args"]));
    ensure!(command.first().map(String::as_str) == Some("/alioth"), "{command:?}");
    // The init container first, as the kubelet runs it: here the machine has bpffs, so it is a no-op.
    let init = strs(&kind(&docs, "DaemonSet")?["spec"]["template"]["spec"]["initContainers"][0]["command"]);
    let out = Command::new(alioth_bin()?).args(&init[1..]).output()?;
    ensure!(
        out.status.success(),
        "{init:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = kind(&docs, "ConfigMap")?["data"]
        .as_mapping()
        .context("ConfigMap data")?
        .clone();

    let node = Netns::new("alnode")?;
    // A node's underlay: an interface holding the default route (`ALIOTH_UPLINK: auto` takes it).
    node.exec(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer"])?;
    node.exec(&["ip", "link", "set", "eth0peer", "up"])?;
    node.exec(&["ip", "addr", "add", "198.18.250.2/24", "dev", "eth0"])?;
    node.exec(&["ip", "link", "set", "eth0", "up"])?;
    node.exec(&["ip", "route", "add", "default", "via", "198.18.250.1", "dev", "eth0"])?;
    // The only substitutions: the binary's path in the image, this agent's pin and state
    // directories, which must not be the machine's own (/sys/fs/bpf/alioth, /var/lib/alioth), and
    // the Secret's files (a throwaway PKI).
    let pin_dir = format!("/sys/fs/bpf/{}", netns::unique("alioth-deploy-"));
    let state_dir = std::env::temp_dir()
        .join(netns::unique("alioth-deploy-"))
        .to_string_lossy()
        .into_owned();
    let left = Leftover::new(&pin_dir, &state_dir);
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", node.name))
        .arg(alioth_bin()?)
        .args(&command[1..]);
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in &config {
        cmd.env(k.as_str().context("key")?, v.as_str().context("value")?);
    }
    cmd.env("ALIOTH_PIN_DIR", &pin_dir).env("ALIOTH_STATE_DIR", &state_dir);
    let pki = Pki::new()?;
    let file = |f: &str| pki.path(f).to_string_lossy().into_owned();
    cmd.env("ALIOTH_TLS_CERT", file("server.pem"))
        .env("ALIOTH_TLS_KEY", file("server.key"))
        .env("ALIOTH_TLS_CLIENT_CA", file("ca.pem"));
    let log = std::env::temp_dir().join(netns::unique("alioth-deploy-log-"));
    let logf = std::fs::File::create(&log)?;
    let agent = cmd
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()?;
    let mut nodeg = Node {
        agent,
        _left: left,
        _ns: node,
        log: log.clone(),
    };

    // The probe, as the kubelet asks it: GET /healthz on the manifest's port (pod IP = node IP with
    // hostNetwork; inside the node namespace, loopback reaches the same 0.0.0.0 listener).
    let probe = &c["readinessProbe"]["httpGet"];
    let url = format!(
        "http://127.0.0.1:{}{}",
        probe["port"].as_u64().context("probe port")?,
        probe["path"].as_str().context("probe path")?
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = nodeg.agent.try_wait()? {
            bail!(
                "agent exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let out = nodeg._ns.net_output(&["curl", "-sf", "-m", "2", &url])?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{url} did not answer ok in 20 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Goal state's own health service answers a client with a certificate from the CA, and no
    // one without.
    let port = listen_port(&config)?;
    let server = format!("https://127.0.0.1:{port}");
    let health = |client: bool| -> Result<std::process::Output> {
        let bin = alioth_bin()?.to_string_lossy().into_owned();
        let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
        let mut args = vec![bin.as_str(), "health", "--server", &server, "--tls-ca", &ca];
        args.extend(["--tls-domain", "localhost"]);
        if client {
            args.extend(["--tls-client-cert", &cert, "--tls-client-key", &key]);
        }
        nodeg._ns.net_output(&args)
    };
    let answer = loop {
        if let Some(status) = nodeg.agent.try_wait()? {
            bail!(
                "agent exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let out = health(true)?;
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        if Instant::now() > deadline {
            bail!(
                "no healthy answer in 20 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(answer.trim() == "SERVING", "{answer}");
    let anonymous = health(false)?;
    ensure!(!anonymous.status.success(), "a client without a certificate got in");
    // And the ConfigMap's metrics address answers too.
    let metrics = config
        .get("ALIOTH_METRICS_LISTEN")
        .and_then(Value::as_str)
        .context("metrics")?;
    let mport = metrics.rsplit(':').next().unwrap_or_default();
    let text = std::fs::read_to_string(&log)?;
    ensure!(
        text.contains("metrics at /metrics") && text.contains(&format!(":{mport}")),
        "{text}"
    );
    ensure!(
        text.contains("uplink: the default route's interface")
            && text.contains("overlay uplink attached uplink=\"eth0\""),
        "the default route's interface is the uplink: {text}"
    );
    drop(nodeg);
    Ok(())
}

/// The gRPC port of the ConfigMap's `ALIOTH_LISTEN`.
fn listen_port(config: &serde_norway::Mapping) -> Result<u64> {
    let listen = config
        .get("ALIOTH_LISTEN")
        .and_then(Value::as_str)
        .context("ALIOTH_LISTEN")?;
    Ok(listen.rsplit(':').next().context("port")?.parse()?)
}
