//! Installs the eBPF toolchain and the test tools on a fresh Debian machine, idempotently.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian packages: the eBPF build (Debian rustc with a prebuilt `core` for bpfel-unknown-none,
/// LLVM 22 for bpf-linker) and the real clients and tools the tests drive.
const PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "curl",
    "ethtool",
    "iputils-ping",
    "iputils-tracepath",
    "arping",
    "tcpdump",
    "bpftool",
    "isc-dhcp-client",
    "udhcpc",
    "kea-admin",
    "dnsmasq-base",
    "iperf3",
    "netsniff-ng",
    // Debian's python with venv, for the kubernetes-validate tool (PyPI).
    "python3-venv",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Validates the DaemonSet manifest against the Kubernetes API schemas (PyPI; ships the schemas).
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// A venv of our own at a fixed path: found whatever PATH the caller (CI) has.
const TOOLS_VENV: &str = "/opt/alioth-tools/venv";

/// The kubernetes-validate executable setup installs.
pub fn kubernetes_validate() -> PathBuf {
    PathBuf::from(TOOLS_VENV).join("bin/kubernetes-validate")
}

fn kubernetes_validate_ok() -> bool {
    Command::new(kubernetes_validate())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs Debian packages that only some commands need (e.g. buildah for `image`).
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    require_root()?;
    apt_install(&missing)
}

fn installed(p: &str) -> bool {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output();
    matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_install(missing: &[&str]) -> Result<()> {
    println!("setup: installing {}", missing.join(" "));
    let ok = Command::new("apt-get")
        .arg("update")
        .arg("-qq")
        .status()
        .context("apt-get update")?;
    if !ok.success() {
        bail!("apt-get update failed");
    }
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("apt-get install")?;
    if !ok.success() {
        bail!("apt-get install {} failed", missing.join(" "));
    }
    Ok(())
}

pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("this needs root (CAP_BPF, CAP_NET_ADMIN, network namespaces): run it as root");
    }
    Ok(())
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Disk a clean `cargo xtask test` writes under target/ (measured: about 2 GiB), with headroom.
const TEST_DISK_GIB: u64 = 4;

/// Warns, before a long build, when the target directory's file system is nearly full:
/// the build would otherwise stop midway on "No space left on device".
pub fn warn_if_low_disk(dir: &Path) {
    let free = Command::new("df")
        .args(["-Pk", "--"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines().nth(1)?.split_whitespace().nth(3)?.parse::<u64>().ok()
        });
    if let Some(kib) = free.filter(|&kib| kib < TEST_DISK_GIB << 20) {
        eprintln!(
            "warning: only {} MiB free under {}; a clean test build needs about {TEST_DISK_GIB} GiB \
             (`cargo clean` frees old builds)",
            kib >> 10,
            dir.display()
        );
    }
}

fn missing_packages() -> Vec<&'static str> {
    PACKAGES.iter().copied().filter(|p| !installed(p)).collect()
}

fn bpf_linker() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"));
    home.join("bin/bpf-linker")
}

fn bpf_linker_ok() -> bool {
    let out = Command::new(bpf_linker()).arg("--version").output();
    matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
}

/// Runs setup only if something is missing (what `build`, `run`, `test` and `bench` call first).
pub fn ensure() -> Result<()> {
    if missing_packages().is_empty() && bpf_linker_ok() && kubernetes_validate_ok() {
        return Ok(());
    }
    setup()
}

pub fn setup() -> Result<()> {
    require_root()?;
    let missing = missing_packages();
    if missing.is_empty() {
        println!("setup: Debian packages present");
    } else {
        apt_install(&missing)?;
    }
    if bpf_linker_ok() {
        println!("setup: bpf-linker {BPF_LINKER_VERSION} present");
    } else {
        println!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes, once)");
        let ok = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .status()
            .context("cargo install bpf-linker")?;
        if !ok.success() || !bpf_linker_ok() {
            bail!("installing bpf-linker failed");
        }
    }
    if kubernetes_validate_ok() {
        println!("setup: kubernetes-validate present");
    } else {
        println!("setup: installing {KUBERNETES_VALIDATE} (PyPI) in {TOOLS_VENV}");
        let ok = Command::new("/usr/bin/python3")
            .args(["-m", "venv", TOOLS_VENV])
            .status()
            .context("python3 -m venv")?;
        if !ok.success() {
            bail!("creating the venv {TOOLS_VENV} failed");
        }
        let ok = Command::new(format!("{TOOLS_VENV}/bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                KUBERNETES_VALIDATE,
            ])
            .status()
            .context("pip install kubernetes-validate")?;
        if !ok.success() || !kubernetes_validate_ok() {
            bail!("installing {KUBERNETES_VALIDATE} failed");
        }
    }
    for tool in ["/usr/bin/rustc", "/usr/lib/llvm-22/bin/llvm-config"] {
        if !std::path::Path::new(tool).exists() {
            bail!("{tool} is missing after setup");
        }
    }
    println!("setup: done");
    Ok(())
}
