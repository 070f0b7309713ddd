//! The real `alioth` binary, run as an agent inside a host namespace for the length of a test.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use crate::binary::alioth_bin;
use crate::netns::{self, Netns};

/// An agent process in `ns`; on drop it is killed and `alioth agent --reset` removes its links,
/// pins and state.
pub struct Agent {
    child: Child,
    pub listen: String,
    pub pin_dir: String,
    pub state_dir: String,
    /// False once `kill` handed the pins and state to a successor.
    reset_on_drop: bool,
    /// The agent's network namespace (None: this one).
    ns_name: Option<String>,
    pub log: PathBuf,
}

impl Agent {
    /// Starts `alioth agent` in `ns` with a unique pin directory and waits until it serves gRPC.
    pub fn start(ns: &Netns, extra: &[&str]) -> Result<Agent> {
        let pin_dir = format!("/sys/fs/bpf/{}", netns::unique("alioth-test-"));
        let state_dir = std::env::temp_dir()
            .join(netns::unique("alioth-state-"))
            .to_string_lossy()
            .into_owned();
        Self::launch(ns, &pin_dir, &state_dir, extra)
    }

    /// Starts an agent on the pins and state a previous one left (a restart).
    pub fn start_with(ns: &Netns, mut left: Leftover, extra: &[&str]) -> Result<Agent> {
        left.armed = false;
        Self::launch(ns, &left.pin_dir, &left.state_dir, extra)
    }

    /// Starts an agent in this (the root) network namespace on a free loopback port: for benchmarks,
    /// whose ports have no interfaces and so are never attached.
    pub fn start_local(extra: &[&str]) -> Result<Agent> {
        let pin_dir = format!("/sys/fs/bpf/{}", netns::unique("alioth-bench-"));
        let state_dir = std::env::temp_dir()
            .join(netns::unique("alioth-state-"))
            .to_string_lossy()
            .into_owned();
        Self::local(&pin_dir, &state_dir, extra)
    }

    /// `start_local` on the pins and state a previous local agent left (a restart).
    pub fn restart_local(mut left: Leftover, extra: &[&str]) -> Result<Agent> {
        left.armed = false;
        Self::local(&left.pin_dir, &left.state_dir, extra)
    }

    /// A free loopback port unless `extra` says where to listen.
    fn local(pin_dir: &str, state_dir: &str, extra: &[&str]) -> Result<Agent> {
        if extra.contains(&"--listen") {
            return Self::spawn(None, pin_dir, state_dir, extra);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["--listen", &listen];
        args.extend_from_slice(extra);
        Self::spawn(None, pin_dir, state_dir, &args)
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn launch(ns: &Netns, pin_dir: &str, state_dir: &str, extra: &[&str]) -> Result<Agent> {
        Self::spawn(Some(ns), pin_dir, state_dir, extra)
    }

    fn spawn(ns: Option<&Netns>, pin_dir: &str, state_dir: &str, extra: &[&str]) -> Result<Agent> {
        let bin = alioth_bin()?;
        let (pin_dir, state_dir) = (pin_dir.to_string(), state_dir.to_string());
        // A later --listen in `extra` overrides this default.
        let listen = extra
            .iter()
            .position(|a| *a == "--listen")
            .and_then(|i| extra.get(i + 1))
            .map_or_else(|| "127.0.0.1:50001".to_string(), |l| l.to_string());
        let log = std::env::temp_dir().join(format!("{}.log", netns::unique("alioth-agent-")));
        let logf = std::fs::File::create(&log)?;
        // As operators start it: `ip netns exec` (a private mount namespace whose /sys hides the
        // machine's bpffs; the agent pins on the machine's all the same).
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", &ns.name]).arg(&bin);
                c
            }
            None => std::process::Command::new(&bin),
        };
        cmd.arg("agent");
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", &listen]);
        }
        let child = cmd
            .args(["--pin-dir", &pin_dir, "--state-dir", &state_dir])
            .args(extra)
            // The tests read info lines; ALIOTH_TEST_AGENT_LOG adds more (e.g. phase timings:
            // "info,alioth::controller=debug").
            .env(
                "ALIOTH_LOG",
                std::env::var("ALIOTH_TEST_AGENT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .context("spawn the agent")?;
        let mut agent = Agent {
            child,
            listen,
            pin_dir,
            state_dir,
            reset_on_drop: true,
            ns_name: ns.map(|ns| ns.name.clone()),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = agent.child.try_wait()? {
                bail!("agent exited ({status}):\n{}", agent.log_text());
            }
            if agent.log_text().contains("alioth agent ready") {
                return Ok(agent);
            }
            if Instant::now() > deadline {
                bail!("agent not ready after 20 s:\n{}", agent.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CPU time (user plus system) the agent has used so far.
    pub fn cpu_time(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap_or(0) + 1..].split_whitespace().collect();
        let ticks = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        let hz: u64 = netns::run(&["getconf", "CLK_TCK"])?.trim().parse()?;
        Ok(Duration::from_millis(ticks * 1000 / hz))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs an `alioth` client subcommand in the agent's namespace, pointed at this agent.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        let bin = alioth_bin()?;
        let mut full = match &self.ns_name {
            Some(name) => vec!["ip", "netns", "exec", name.as_str(), bin.to_str().unwrap()],
            None => vec![bin.to_str().unwrap()],
        };
        full.extend_from_slice(args);
        let server_flag = ["apply", "health", "echo"].contains(&args[0]);
        let pin_flag = [
            "status",
            "stats",
            "ports",
            "routes",
            "elastic-ips",
            "snat",
            "port",
            "trace",
            "monitor",
        ]
        .contains(&args[0]);
        let server = match self.listen.starts_with("unix:") {
            true => self.listen.clone(),
            false => format!("http://{}", self.listen),
        };
        if server_flag {
            full.extend_from_slice(&["--server", &server]);
        }
        if pin_flag {
            full.extend_from_slice(&["--pin-dir", &self.pin_dir, "--state-dir", &self.state_dir]);
        }
        if args[0] == "state" {
            full.extend_from_slice(&["--state-dir", &self.state_dir]);
        }
        netns::run_output(&full)
    }

    /// Counter values from `alioth stats --json`.
    pub fn stats(&self) -> Result<serde_json::Value> {
        let out = self.cli(&["stats", "--json"])?;
        if !out.status.success() {
            bail!("alioth stats failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// SIGKILLs the agent; what it leaves (a forwarding data plane) is for `start_with` or `reset`.
    pub fn kill(mut self) -> Result<Leftover> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(self.leave())
    }

    fn leave(&mut self) -> Leftover {
        self.reset_on_drop = false;
        Leftover {
            pin_dir: self.pin_dir.clone(),
            state_dir: self.state_dir.clone(),
            armed: true,
        }
    }

    /// `alioth agent --reset`: detaches every port and removes pins and state.
    pub fn reset(pin_dir: &str, state_dir: &str) -> Result<()> {
        let bin = alioth_bin()?;
        let out = netns::run_output(&[
            bin.to_str().unwrap_or_default(),
            "agent",
            "--reset",
            "--pin-dir",
            pin_dir,
            "--state-dir",
            state_dir,
        ])?;
        if !out.status.success() {
            bail!("alioth agent --reset: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Stops the agent with SIGTERM (the data plane keeps forwarding): its exit status and what it left.
    pub fn stop(mut self) -> Result<(std::process::ExitStatus, Leftover)> {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait()? {
                return Ok((s, self.leave()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("agent did not stop within 10 s")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if self.reset_on_drop {
            let _ = Self::reset(&self.pin_dir, &self.state_dir);
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The pins and state a stopped or killed agent left: a data plane that keeps forwarding.
/// Dropped, it is reset; `Agent::start_with` hands it to a new agent instead.
pub struct Leftover {
    pub pin_dir: String,
    pub state_dir: String,
    armed: bool,
}

impl Leftover {
    /// Takes charge of the pins and state an agent started some other way will leave.
    pub fn new(pin_dir: &str, state_dir: &str) -> Leftover {
        Leftover {
            pin_dir: pin_dir.into(),
            state_dir: state_dir.into(),
            armed: true,
        }
    }

    /// Marks the maps as holding no record (the `RECORD` sequence 0), as an agent killed while it
    /// changed them leaves them: the next agent fills new maps instead of taking these over.
    pub fn forget_record_mark(&self) -> Result<()> {
        let mark = std::path::Path::new(&self.pin_dir).join("RECORD");
        let mark = mark.to_str().context("pin path")?;
        let mut cmd = vec!["map", "update", "pinned", mark, "key", "0", "0", "0", "0", "value"];
        cmd.extend(["0"; 8]);
        let out = std::process::Command::new("bpftool").args(&cmd).output()?;
        if !out.status.success() {
            bail!("bpftool: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// `alioth agent --reset` now, reporting failure.
    pub fn reset(mut self) -> Result<()> {
        self.armed = false;
        Agent::reset(&self.pin_dir, &self.state_dir)
    }
}

impl Drop for Leftover {
    fn drop(&mut self) {
        if self.armed {
            let _ = Agent::reset(&self.pin_dir, &self.state_dir);
        }
    }
}

/// The `/metrics` text of the agent in `ns`, at its default address, fetched from inside `ns`.
pub fn metrics(ns: &Netns) -> Result<String> {
    ns.exec(&[
        "/usr/bin/python3",
        "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9464/metrics').read().decode())",
    ])
}

/// How the programs run on each interface `alioth status --json` lists (its `xdp` rows: `native`,
/// `generic`, `tc`, `none`), in its order.
pub fn hooks(status: &serde_json::Value) -> Vec<&str> {
    status["xdp"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["xdp"].as_str()).collect())
        .unwrap_or_default()
}

/// The value of the unlabelled series `name` in a `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
