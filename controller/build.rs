//! Builds the XDP object from `dataplane-ebpf/xdp` and hands its path to `include_bytes!`.
//!
//! The object is rebuilt by cargo's own freshness check on every controller build, so the embedded
//! object is never stale. It needs the toolchain `cargo xtask setup` installs: Debian's rustc (with
//! the prebuilt `core` for bpfel-unknown-none) and bpf-linker. `ALIOTH_XDP_OBJECT` points at a
//! prebuilt object instead.
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ALIOTH_XDP_OBJECT");
    println!("cargo:rerun-if-env-changed=ALIOTH_BPF_RUSTC");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let dest = out.join("alioth-xdp.o");
    if let Some(prebuilt) = std::env::var_os("ALIOTH_XDP_OBJECT") {
        println!("cargo:rerun-if-changed={}", Path::new(&prebuilt).display());
        std::fs::copy(&prebuilt, &dest).expect("copy ALIOTH_XDP_OBJECT");
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap();
    let ebpf = root.join("dataplane-ebpf");
    for p in [
        "xdp/src",
        "xdp/Cargo.toml",
        "xdp/Cargo.lock",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", ebpf.join(p).display());
    }
    let rustc = std::env::var("ALIOTH_BPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    if !Path::new(&rustc).exists() {
        panic!("{rustc} not found: the eBPF toolchain is missing; run `cargo xtask setup`");
    }
    let target_dir = root.join("target").join("bpf");
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
    let status = cmd
        .current_dir(ebpf.join("xdp"))
        .env("RUSTC", &rustc)
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
        .arg(&target_dir)
        .status()
        .expect("run cargo for the eBPF crate");
    if !status.success() {
        panic!("building the XDP object failed ({status}); is bpf-linker installed? (`cargo xtask setup`)");
    }
    let obj = target_dir.join("bpfel-unknown-none/release/alioth-xdp");
    std::fs::copy(&obj, &dest).expect("copy the XDP object");
}
