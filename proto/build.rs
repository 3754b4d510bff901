//! Compiles reelfarm/v1/*.proto into Rust, plus a file descriptor set for server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "reelfarm/v1/job.proto",
        "reelfarm/v1/worker.proto",
        "reelfarm/v1/admin.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        // The file a content check carries (up to 64 MiB) is shared, not copied, when the
        // coordinator hands it to a worker and again on a retry.
        .bytes(".reelfarm.v1.VerifyContent.data")
        .file_descriptor_set_path(out_dir.join("reelfarm_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    Ok(())
}
