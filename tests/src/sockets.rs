//! Small socket peers for VMs: a TCP echo server and clients that say whether a round trip went
//! through, with real sockets (the VM's own stack, default offloads).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

/// `serve PORT SECONDS` (TCP echo), `udp-serve PORT SECONDS` (UDP echo), `connect IP PORT` and
/// `udp IP PORT` (one round trip: prints ok or failed), `udp-refused IP PORT` (one datagram on a
/// connected socket: prints refused when an ICMP port unreachable came back), `hold IP PORT FLAG`
/// (a round trip, prints up, waits for the file FLAG, then one more round trip: prints ok or cut).
const PEER: &str = r#"
import os, socket, sys, time
mode = sys.argv[1]
def echo_tcp(port, secs):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('', port)); s.listen(16)
    end = time.time() + secs
    while time.time() < end:
        s.settimeout(max(0.1, end - time.time()))
        try: c, _ = s.accept()
        except socket.timeout: break
        if os.fork() == 0:
            c.settimeout(max(0.1, end - time.time()))
            try:
                while True:
                    d = c.recv(100)
                    if not d: break
                    c.sendall(d)
            except Exception: pass
            os._exit(0)
        c.close()
def echo_udp(port, secs):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('', port))
    end = time.time() + secs
    while time.time() < end:
        s.settimeout(max(0.1, end - time.time()))
        try: d, a = s.recvfrom(100)
        except socket.timeout: break
        s.sendto(d, a)
def trip(c):
    try:
        c.sendall(b'x')
        return c.recv(1) == b'x'
    except Exception:
        return False
if mode == 'serve': echo_tcp(int(sys.argv[2]), float(sys.argv[3]))
elif mode == 'udp-serve': echo_udp(int(sys.argv[2]), float(sys.argv[3]))
elif mode == 'connect':
    c = socket.socket(); c.settimeout(2)
    try:
        c.connect((sys.argv[2], int(sys.argv[3])))
        print('ok' if trip(c) else 'failed')
    except Exception: print('failed')
elif mode == 'udp':
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(2)
    try:
        c.sendto(b'x', (sys.argv[2], int(sys.argv[3])))
        print('ok' if c.recv(1) == b'x' else 'failed')
    except Exception: print('failed')
elif mode == 'udp-refused':
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(2)
    c.connect((sys.argv[2], int(sys.argv[3])))
    try:
        c.send(b'x'); c.recv(1); print('answered')
    except ConnectionRefusedError: print('refused')
    except Exception: print('failed')
elif mode == 'hold':
    c = socket.socket(); c.settimeout(2)
    c.connect((sys.argv[2], int(sys.argv[3])))
    print('up' if trip(c) else 'failed', flush=True)
    end = time.time() + 20
    while not os.path.exists(sys.argv[4]) and time.time() < end: time.sleep(0.02)
    c.settimeout(1.5)
    print('ok' if trip(c) else 'cut', flush=True)
"#;

/// A peer process, killed when dropped.
pub struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        // TERM, which `timeout` passes on to the script; KILL would stop `timeout` alone.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Peer {
    fn spawn(ns: &Netns, args: &[&str]) -> Result<Peer> {
        let child = ns
            .command("timeout")
            .args(["30", "/usr/bin/python3", "-c", PEER])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("python3 in {}", ns.name))?;
        Ok(Peer(child))
    }

    /// A TCP (or UDP) echo server on `port` for `secs` seconds; it listens once this returns.
    pub fn serve(ns: &Netns, udp: bool, port: u16, secs: u32) -> Result<Peer> {
        let mode = if udp { "udp-serve" } else { "serve" };
        let peer = Peer::spawn(ns, &[mode, &port.to_string(), &secs.to_string()])?;
        let proto = if udp { "-lun" } else { "-ltn" };
        for _ in 0..100 {
            if ns.exec(&["ss", proto])?.contains(&format!(":{port} ")) {
                return Ok(peer);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("no listener on port {port} in {}", ns.name)
    }

    /// A connection to `ip`:`port` held open across a change: the first round trip has gone
    /// through when this returns; the next goes once `flag` exists (`next`).
    pub fn hold(ns: &Netns, ip: &str, port: u16, flag: &str) -> Result<(Peer, BufReader<ChildStdout>)> {
        let mut peer = Peer::spawn(ns, &["hold", ip, &port.to_string(), flag])?;
        let mut out = BufReader::new(peer.0.stdout.take().context("stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "up" {
            bail!("the held connection to {ip}:{port} did not come up: {line:?}");
        }
        Ok((peer, out))
    }
}

/// Whether a TCP (or UDP) round trip from `ns` to `ip`:`port` goes through (2 s at most).
pub fn round_trip(ns: &Netns, udp: bool, ip: &str, port: u16) -> Result<bool> {
    let mode = if udp { "udp" } else { "connect" };
    Ok(once(ns, mode, ip, port)? == "ok")
}

/// Whether a datagram from `ns` to `ip`:`port`, where nothing listens, is answered by an ICMP port
/// unreachable that reaches the sending socket (2 s at most).
pub fn udp_refused(ns: &Netns, ip: &str, port: u16) -> Result<bool> {
    Ok(once(ns, "udp-refused", ip, port)? == "refused")
}

/// What the peer prints in `mode` toward `ip`:`port`.
fn once(ns: &Netns, mode: &str, ip: &str, port: u16) -> Result<String> {
    let out = ns.exec(&[
        "timeout",
        "10",
        "/usr/bin/python3",
        "-c",
        PEER,
        mode,
        ip,
        &port.to_string(),
    ])?;
    Ok(out.trim().to_string())
}
