//! Flow-matching samplers as diffusers runs them for Wan: Euler
//! (`FlowMatchEulerDiscreteScheduler`) and UniPC in flow-prediction mode
//! (`UniPCMultistepScheduler` with `use_flow_sigmas`).

pub mod flow_euler;
pub mod unipc;

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};

/// A flow-matching sampler: the timesteps to feed the model, and the update from one model
/// output (a flow prediction) to the next sample.
pub trait FlowSampler {
    /// timesteps for the model (as f32, diffusers' values)
    fn timesteps(&self) -> &[f64];
    /// one step: model output (flow prediction, tensor like sample) at step index i -> next sample
    fn step(&mut self, model_output: &Tensor, step_index: usize, sample: &Tensor)
        -> Result<Tensor>;
    /// The noise level of the sample step `step_index` takes (`timesteps().len()` gives the
    /// terminal one): a flow sample there is `(1 - sigma) * x0 + sigma * noise`.
    fn sigma(&self, step_index: usize) -> f32;
    /// Makes `step_index` the next step, with no history (video-to-video starts part-way
    /// through the schedule, as diffusers' `set_begin_index`).
    fn begin_at(&mut self, step_index: usize);
    /// What the sampler carries from one step to the next (a multistep solver's history),
    /// as named tensors for a checkpoint; counters are one-element u32 tensors.
    fn state(&self) -> Result<Vec<(String, Tensor)>>;
    /// Makes `next_step` the next step with the history [`FlowSampler::state`] saved there:
    /// the steps that follow are bit for bit those of an uninterrupted run.
    fn restore(&mut self, next_step: usize, state: &HashMap<String, Tensor>) -> Result<()>;
}

/// A counter as a checkpoint stores it.
pub(crate) fn counter(value: usize) -> Result<Tensor> {
    let v = u32::try_from(value).map_err(|_| candle_core::Error::Msg("counter overflow".into()))?;
    Tensor::new(&[v], &Device::Cpu)
}

/// A counter [`counter`] stored under `name`.
pub(crate) fn read_counter(state: &HashMap<String, Tensor>, name: &str) -> Result<usize> {
    let t = state
        .get(name)
        .ok_or_else(|| candle_core::Error::Msg(format!("sampler state without {name:?}")))?;
    if t.dtype() != DType::U32 || t.elem_count() != 1 {
        candle_core::bail!("sampler state {name:?} is not one u32");
    }
    Ok(t.flatten_all()?.to_vec1::<u32>()?[0] as usize)
}

/// `numpy.linspace(start, stop, num)` (endpoint included) in float64, computed the way numpy
/// does: `i * ((stop - start) / (num - 1)) + start`, with the last element set to `stop`.
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    let delta = stop - start;
    let div = num - 1;
    let mut y: Vec<f64> = if div > 0 {
        let step = delta / div as f64;
        if step == 0.0 {
            (0..num)
                .map(|i| i as f64 / div as f64 * delta + start)
                .collect()
        } else {
            (0..num).map(|i| i as f64 * step + start).collect()
        }
    } else {
        (0..num).map(|i| i as f64 * delta + start).collect()
    };
    if num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// `scalar * tensor` with a float32 scalar, as torch multiplies a float32 tensor by a 0-d
/// float32 tensor (one rounding per element).
pub(crate) fn scale(t: &Tensor, s: f32) -> Result<Tensor> {
    t.affine(s as f64, 0.0)
}

/// `tensor / scalar` as a true division (not a multiplication by the reciprocal).
pub(crate) fn div_scalar(t: &Tensor, s: f32) -> Result<Tensor> {
    let s = Tensor::new(s, t.device())?.to_dtype(t.dtype())?;
    t.broadcast_div(&s)
}
