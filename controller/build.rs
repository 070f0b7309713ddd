//! Builds the XDP object from `dataplane-ebpf/xdp` and hands its path to `include_bytes!`; with
//! the `lab` feature, also the lab object (the same programs plus the labs' and benchmarks').
//!
//! The objects are rebuilt by cargo's own freshness check on every controller build, so an
//! embedded object is never stale. It needs the toolchain `cargo xtask setup` installs: Debian's
//! rustc (with the prebuilt `core` for bpfel-unknown-none) and bpf-linker. `ALIOTH_XDP_OBJECT`
//! points at a prebuilt object instead.
//!
//! Without that toolchain (or with `ALIOTH_XDP_OBJECT=none`) the objects are left empty, with a
//! warning, so that `cargo check`, `cargo clippy` and `cargo doc` work on any machine; a binary
//! built so refuses to load them and says why. `cargo xtask test` installs the toolchain first, so
//! tests always run the real object.
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ALIOTH_XDP_OBJECT");
    println!("cargo:rerun-if-env-changed=ALIOTH_BPF_RUSTC");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let lab = std::env::var_os("CARGO_FEATURE_LAB").is_some();
    let dests = [(out.join("alioth-xdp.o"), false), (out.join("alioth-lab.o"), true)];
    let rustc = std::env::var("ALIOTH_BPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    if let Some(why) = without_object(&rustc) {
        println!("cargo:warning=the XDP object is left empty ({why}): this build checks and lints, but its binary cannot run a data plane; `cargo xtask setup` installs the eBPF toolchain");
        for (dest, _) in &dests {
            std::fs::write(dest, b"").expect("write an empty object");
        }
        // Built for real once the toolchain is there (a path that does not exist yet reruns this).
        println!("cargo:rerun-if-changed={rustc}");
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"));
        println!("cargo:rerun-if-changed={}", home.join("bin/bpf-linker").display());
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let ebpf = manifest.parent().unwrap().join("dataplane-ebpf");
    for p in [
        "xdp/src",
        "xdp/Cargo.toml",
        "xdp/Cargo.lock",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", ebpf.join(p).display());
    }
    for (dest, is_lab) in dests {
        match std::env::var_os("ALIOTH_XDP_OBJECT") {
            Some(prebuilt) if !is_lab => {
                println!("cargo:rerun-if-changed={}", Path::new(&prebuilt).display());
                std::fs::copy(&prebuilt, &dest).expect("copy ALIOTH_XDP_OBJECT");
            }
            _ if is_lab && !lab => std::fs::write(&dest, b"").expect("write an empty object"),
            _ => {
                let obj = build(&ebpf, &rustc, is_lab);
                std::fs::copy(&obj, &dest).expect("copy the XDP object");
            }
        }
    }
}

/// Builds the eBPF crate (with its `lab` feature if `lab`), each kind in its own target directory
/// so that neither rebuilds the other. Returns the object's path.
fn build(ebpf: &Path, rustc: &str, lab: bool) -> PathBuf {
    let target_dir = ebpf
        .parent()
        .unwrap()
        .join("target")
        .join(if lab { "bpf-lab" } else { "bpf" });
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // The outer build's settings (host rustc, flags, jobserver) must not leak into the BPF build.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO_") || k.starts_with("RUSTC") || k.starts_with("RUSTFLAGS") || k == "RUSTDOC" {
            cmd.env_remove(&k);
        }
    }
    let flags = [
        "--cfg",
        "bpf_target_arch=\"x86_64\"",
        "-C",
        "debuginfo=2",
        "-C",
        "link-arg=--btf",
        // BPF v3 (jmp32, alu32), and wide loads at any alignment: this kernel's verifier and x86 JIT
        // accept misaligned packet access; without it LLVM splits every multi-byte field into bytes.
        "-C",
        "target-cpu=v3",
        "-C",
        "link-arg=--cpu-features=+allows-misaligned-mem-access",
    ];
    cmd.current_dir(ebpf.join("xdp"))
        .env("RUSTC", rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
            "--target-dir",
        ])
        .arg(&target_dir);
    if lab {
        cmd.args(["--features", "lab"]);
    }
    let status = cmd.status().expect("run cargo for the eBPF crate");
    if !status.success() {
        panic!("building the XDP object failed ({status}); is bpf-linker installed? (`cargo xtask setup`)");
    }
    target_dir.join("bpfel-unknown-none/release/alioth-xdp")
}

/// Why no object can be built here, if it cannot: asked for, or the toolchain is missing.
fn without_object(rustc: &str) -> Option<String> {
    match std::env::var_os("ALIOTH_XDP_OBJECT") {
        Some(v) if v == "none" => return Some("ALIOTH_XDP_OBJECT=none".into()),
        Some(_) => return None,
        None => {}
    }
    if !Path::new(rustc).exists() {
        return Some(format!("{rustc} not found"));
    }
    let linker = Command::new("bpf-linker").arg("--version").output();
    if !linker.is_ok_and(|o| o.status.success()) {
        return Some("bpf-linker not found on PATH".into());
    }
    None
}
