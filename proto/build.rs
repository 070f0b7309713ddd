//! Generates the prost messages, the tonic service and proto3-JSON serde impls (pbjson) from `proto/`.
use std::path::PathBuf;

const FILES: &[&str] = &[
    "common.proto",
    "vpc.proto",
    "subnet.proto",
    "port.proto",
    "neighbor.proto",
    "dhcp.proto",
    "router.proto",
    "securitygroup.proto",
    "gateway.proto",
    "elasticip.proto",
    "goalstate.proto",
    "goalstateprovisioner.proto",
    "subscribeinfoprovisioner.proto",
    "diagnostics.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A protoc shipped in a crates.io package: the build needs nothing from the system.
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("alcor_descriptor.bin");
    let files: Vec<String> = FILES.iter().map(|f| format!("proto/{f}")).collect();
    // Maps (GoalStateV2's resources by id) decode into BTreeMaps: no hashing of 100,000 ids, and
    // the agent takes the resources in id order without sorting them.
    tonic_prost_build::configure()
        .btree_map(".")
        // Clients and servers decode from one slice (`codec.rs`).
        .codec_path("crate::codec::SliceCodec")
        .file_descriptor_set_path(&descriptors)
        .compile_protos(&files, &["proto".to_string()])?;
    let set = std::fs::read(&descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        .btree_map(["."])
        // Every field in what is printed (`alioth apply --json`), defaults included: a SUCCESS
        // status is the enum's zero value, which proto3 JSON would leave out.
        .emit_fields()
        .build(&[".alcor.schema", ".alioth.v1"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
