//! Checking a component's weights against the architecture without loading them: the
//! model is built from a `VarBuilder` whose backend only compares each requested tensor's
//! name and shape with the safetensors headers (read from the first bytes of each file) and
//! hands back a zero-stride stand-in, so even a 14B model is checked in milliseconds and
//! with no memory. Every problem is collected, each naming the file and the tensor.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::{safetensors_files, WeightsError};

/// One tensor as a safetensors header describes it.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub file: PathBuf,
    pub dtype: String,
    pub shape: Vec<usize>,
}

impl TensorEntry {
    /// Bytes on disk, from the header's dtype.
    pub fn bytes(&self) -> u64 {
        let width = match self.dtype.as_str() {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            _ => 1,
        };
        self.shape.iter().product::<usize>() as u64 * width
    }
}

/// Largest header accepted: real headers are a few hundred KiB; more is a corrupt file.
const MAX_HEADER: u64 = 100 << 20;

/// Reads the header of one safetensors file: tensor name -> entry.
pub fn read_header(file: &Path) -> Result<HashMap<String, TensorEntry>, String> {
    let mut f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| "shorter than a safetensors header".to_string())?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(format!(
            "header length {len} is not plausible: not a safetensors file"
        ));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|_| "truncated safetensors header".to_string())?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| format!("safetensors header is not JSON: {e}"))?;
    let obj = json
        .as_object()
        .ok_or("safetensors header is not an object")?;
    let mut out = HashMap::new();
    for (name, info) in obj {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info["dtype"]
            .as_str()
            .ok_or(format!("{name}: no dtype"))?
            .to_string();
        let shape = info["shape"]
            .as_array()
            .ok_or(format!("{name}: no shape"))?
            .iter()
            .map(|d| {
                d.as_u64()
                    .map(|d| d as usize)
                    .ok_or(format!("{name}: bad shape"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(
            name.clone(),
            TensorEntry {
                file: file.to_path_buf(),
                dtype,
                shape,
            },
        );
    }
    Ok(out)
}

/// Every tensor of a component folder, by name, from the headers of all its files.
pub fn read_headers(dir: &Path) -> Result<HashMap<String, TensorEntry>, WeightsError> {
    let mut all = HashMap::new();
    for file in safetensors_files(dir)? {
        let tensors = read_header(&file).map_err(|reason| WeightsError::BadIndex {
            file: file.clone(),
            reason,
        })?;
        all.extend(tensors);
    }
    Ok(all)
}

/// The checking backend: compares requests with the headers, records what does not fit.
struct Checker {
    dir: PathBuf,
    tensors: HashMap<String, TensorEntry>,
    problems: Mutex<Vec<String>>,
    used: Mutex<Vec<String>>,
}

impl SimpleBackend for Checker {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.used
            .lock()
            .expect("not poisoned")
            .push(name.to_string());
        match self.tensors.get(name) {
            None => self.problems.lock().expect("not poisoned").push(format!(
                "{}: missing tensor {name} (expected shape {:?})",
                self.dir.display(),
                s.dims()
            )),
            Some(t) if t.shape != s.dims() => {
                self.problems.lock().expect("not poisoned").push(format!(
                    "{}: tensor {name} has shape {:?}, the architecture needs {:?}",
                    t.file.display(),
                    t.shape,
                    s.dims()
                ))
            }
            Some(_) => {}
        }
        stand_in(&s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let shape = self
            .tensors
            .get(name)
            .map(|t| t.shape.clone())
            .ok_or_else(|| candle_core::Error::msg(format!("missing tensor {name}")))?;
        self.get(
            Shape::from(shape),
            name,
            candle_nn::Init::Const(0.),
            dtype,
            dev,
        )
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// A zero-stride view: the shape the model asked for, one element of memory.
fn stand_in(s: &Shape, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
    Tensor::zeros(1, dtype, dev)?
        .reshape(vec![1; s.rank().max(1)])?
        .broadcast_as(s.clone())
}

/// A backend that records every tensor a model asks for and hands back stand-ins (shared,
/// so the caller keeps what the `VarBuilder` it owns recorded).
#[derive(Clone, Default)]
struct Recorder(std::sync::Arc<Mutex<TensorList>>);

/// Tensor names and shapes, in the order a model asks for them.
pub type TensorList = Vec<(String, Vec<usize>)>;

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .expect("not poisoned")
            .push((name.to_string(), s.dims().to_vec()));
        stand_in(&s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("the recorder has no shape for {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}

/// Every tensor (name, shape) `build` asks for, in the order it asks: the architecture's
/// own list, with no memory (for writing random weights of a config, or counting its
/// parameters).
pub fn architecture<T>(
    build: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<T>,
) -> candle_core::Result<TensorList> {
    let recorder = Recorder::default();
    build(VarBuilder::from_backend(
        Box::new(recorder.clone()),
        DType::BF16,
        Device::Cpu,
    ))?;
    let tensors = recorder.0.lock().expect("not poisoned").clone();
    Ok(tensors)
}

/// What a check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Missing or misshapen tensors, each naming the file and the tensor.
    pub problems: Vec<String>,
    /// Tensors in the files that the architecture did not ask for.
    pub unused: Vec<String>,
    /// Parameters and bytes on disk of the tensors the architecture uses.
    pub parameters: u64,
    pub bytes: u64,
    /// Dtypes found on disk (e.g. "BF16").
    pub dtypes: Vec<String>,
}

/// Builds a model with `build` against the headers of `dir` and reports what does not fit.
/// `build`'s own error (for example a config the model refuses) is reported as a problem.
pub fn check_component<T>(
    dir: &Path,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<CheckReport, WeightsError> {
    let tensors = read_headers(dir)?;
    let checker = std::sync::Arc::new(Checker {
        dir: dir.to_path_buf(),
        tensors,
        problems: Mutex::new(vec![]),
        used: Mutex::new(vec![]),
    });
    let vb = VarBuilder::from_backend(
        Box::new(SharedChecker(checker.clone())),
        DType::F32,
        Device::Cpu,
    );
    let built = build(vb);
    let mut report = CheckReport {
        problems: checker.problems.lock().expect("not poisoned").clone(),
        ..CheckReport::default()
    };
    if let Err(e) = built {
        if report.problems.is_empty() {
            report.problems.push(format!("{}: {e}", dir.display()));
        }
    }
    // A model may ask for one tensor twice (shared weights): count it once.
    let used: std::collections::BTreeSet<String> = checker
        .used
        .lock()
        .expect("not poisoned")
        .iter()
        .cloned()
        .collect();
    for name in used.iter() {
        if let Some(t) = checker.tensors.get(name) {
            report.parameters += t.shape.iter().product::<usize>() as u64;
            report.bytes += t.bytes();
            if !report.dtypes.contains(&t.dtype) {
                report.dtypes.push(t.dtype.clone());
            }
        }
    }
    let mut unused: Vec<String> = checker
        .tensors
        .keys()
        .filter(|k| !used.contains(k.as_str()))
        .cloned()
        .collect();
    unused.sort();
    report.unused = unused;
    Ok(report)
}

/// `VarBuilder::from_backend` takes the backend by value; this shares the checker so its
/// findings can be read after the build.
struct SharedChecker(std::sync::Arc<Checker>);

impl SimpleBackend for SharedChecker {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.get(s, name, h, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get_unchecked(name, dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}
