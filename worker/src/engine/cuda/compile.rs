//! Compiling `kernels.cu`: with NVRTC at run time for the device at hand, and, as the CI
//! gate, for every architecture the farm supports, assembled by `ptxas` to count registers
//! and spills (no GPU needed for either).

use std::path::{Path, PathBuf};
use std::process::Command;

use cudarc::nvrtc::{CompileOptions, Ptx};

/// The kernels' source, compiled into the binary.
pub const SOURCE: &str = include_str!("kernels.cu");

/// Every `extern "C" __global__` function of [`SOURCE`].
pub const KERNELS: [&str; 4] = ["initial_noise", "posterior_mean", "combine", "to_rgb8"];

/// The architectures CI compiles for: A100 (sm_80), L4/L40S/RTX 4090 (sm_89), H100/H200
/// (sm_90). The PTX for the device at hand is made at start, whatever its architecture.
pub const CI_ARCHITECTURES: [(i32, i32); 3] = [(8, 0), (8, 9), (9, 0)];

/// NVRTC options: `--fmad=false` keeps `a*b + c` as two roundings, as in Rust, so the
/// kernels give the CPU functions' bits (see kernels.cu); precise division and square root
/// are NVRTC's defaults and are kept.
fn options(compute_capability: (i32, i32)) -> CompileOptions {
    let (major, minor) = compute_capability;
    CompileOptions {
        fmad: Some(false),
        options: vec![
            format!("--gpu-architecture=compute_{major}{minor}"),
            "--std=c++17".into(),
        ],
        name: Some("kernels.cu".into()),
        ..Default::default()
    }
}

/// Compiles [`SOURCE`] to PTX for `compute_capability` (e.g. `(9, 0)`).
pub fn compile_ptx(compute_capability: (i32, i32)) -> Result<Ptx, String> {
    cudarc::nvrtc::compile_ptx_with_opts(SOURCE, options(compute_capability))
        .map_err(|e| format!("NVRTC: {e:?}"))
}

/// What `ptxas -v` says about one kernel on one architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelResources {
    pub kernel: String,
    pub arch: String,
    pub registers: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    pub stack_bytes: u32,
}

/// The `ptxas` to use: `$PTXAS`, else `$CUDA_HOME/bin/ptxas`, else `ptxas` on PATH.
pub fn ptxas() -> PathBuf {
    if let Some(p) = std::env::var_os("PTXAS") {
        return p.into();
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        let p = Path::new(&home).join("bin/ptxas");
        if p.exists() {
            return p;
        }
    }
    "ptxas".into()
}

/// Assembles `ptx` for `sm_XY` with `ptxas -v` and returns each kernel's resources.
pub fn assemble(ptx: &str, compute_capability: (i32, i32)) -> Result<Vec<KernelResources>, String> {
    let arch = format!("sm_{}{}", compute_capability.0, compute_capability.1);
    let dir = tempfile_dir()?;
    let input = dir.join(format!("kernels-{arch}.ptx"));
    std::fs::write(&input, ptx).map_err(|e| format!("writing {}: {e}", input.display()))?;
    let tool = ptxas();
    let out = Command::new(&tool)
        .arg(format!("-arch={arch}"))
        .arg("-v")
        .arg(&input)
        .arg("-o")
        .arg(dir.join(format!("kernels-{arch}.cubin")))
        .output()
        .map_err(|e| format!("running {}: {e}", tool.display()))?;
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err(format!("{} -arch={arch} failed:\n{log}", tool.display()));
    }
    parse_ptxas_log(&log, &arch)
}

/// A private scratch folder under the system temp dir.
fn tempfile_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "reelfarm-ptxas-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Parses `ptxas -v` output: per kernel, a "Compiling entry function 'NAME' for 'sm_XY'"
/// line, then "N bytes stack frame, S bytes spill stores, L bytes spill loads" and
/// "Used R registers, ...".
pub fn parse_ptxas_log(log: &str, arch: &str) -> Result<Vec<KernelResources>, String> {
    let number_before = |line: &str, unit: &str| -> Option<u32> {
        let at = line.find(unit)?;
        line[..at].split_whitespace().last()?.parse().ok()
    };
    let mut found: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            found.push(KernelResources {
                kernel: name,
                arch: arch.to_string(),
                registers: 0,
                spill_store_bytes: 0,
                spill_load_bytes: 0,
                stack_bytes: 0,
            });
        } else if let Some(k) = found.last_mut() {
            if line.contains("spill stores") {
                k.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                k.spill_store_bytes = number_before(line, "bytes spill stores").unwrap_or(0);
                k.spill_load_bytes = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used") && line.contains("registers") {
                k.registers = number_before(line, "registers")
                    .ok_or_else(|| format!("unreadable ptxas line: {line}"))?;
            }
        }
    }
    for name in KERNELS {
        if !found.iter().any(|k| k.kernel == name) {
            return Err(format!(
                "ptxas reported nothing for kernel {name} on {arch}:\n{log}"
            ));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptxas_log_is_parsed_per_kernel() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'initial_noise' for 'sm_90'\n\
ptxas info    : Function properties for initial_noise\n\
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 30 registers, used 0 barriers, 408 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'posterior_mean' for 'sm_90'\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 14 registers, used 0 barriers\n\
ptxas info    : Compiling entry function 'combine' for 'sm_90'\n\
ptxas info    : Used 12 registers\n\
ptxas info    : Compiling entry function 'to_rgb8' for 'sm_90'\n\
ptxas info    : Used 10 registers\n";
        let r = parse_ptxas_log(log, "sm_90").expect("all four kernels");
        assert_eq!(r.len(), 4);
        assert_eq!(
            (
                r[0].registers,
                r[0].spill_store_bytes,
                r[0].spill_load_bytes,
                r[0].stack_bytes
            ),
            (30, 4, 12, 8)
        );
        assert_eq!(
            (r[1].kernel.as_str(), r[1].registers),
            ("posterior_mean", 14)
        );
        let missing = parse_ptxas_log("ptxas info : Used 3 registers", "sm_80");
        assert!(
            missing.is_err(),
            "a log without the kernels must be an error"
        );
    }

    /// The CI gate: every kernel compiles with NVRTC for every supported architecture and
    /// assembles with ptxas without register spills. Needs libnvrtc and ptxas, not a GPU.
    #[test]
    fn every_kernel_compiles_for_sm80_sm89_sm90_without_spills() {
        let mut spills = Vec::new();
        eprintln!(
            "{:<16} {:<6} {:>9} {:>12} {:>11}",
            "kernel", "arch", "registers", "spill bytes", "stack bytes"
        );
        for cc in CI_ARCHITECTURES {
            let ptx = compile_ptx(cc).expect("kernels.cu compiles with NVRTC");
            let resources = assemble(&ptx.to_src(), cc).expect("ptxas assembles the PTX");
            for k in resources {
                eprintln!(
                    "{:<16} {:<6} {:>9} {:>12} {:>11}",
                    k.kernel,
                    k.arch,
                    k.registers,
                    k.spill_store_bytes + k.spill_load_bytes,
                    k.stack_bytes
                );
                if k.spill_store_bytes + k.spill_load_bytes > 0 {
                    spills.push(format!("{} on {}", k.kernel, k.arch));
                }
            }
        }
        assert!(spills.is_empty(), "register spills in: {spills:?}");
    }
}
