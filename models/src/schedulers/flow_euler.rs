//! `FlowMatchEulerDiscreteScheduler` (diffusers 0.42) with static shifting, the default config
//! otherwise (`num_train_timesteps = 1000`, no dynamic shifting, no Karras / exponential / beta
//! sigmas, no `shift_terminal`, no inverted sigmas, deterministic sampling).
//!
//! Schedule math mirrors diffusers' dtypes: the training sigmas are float32 torch tensors (so
//! `sigma_min` is a float32 value), `set_timesteps` works in numpy float64 and casts the sigmas
//! to float32, and the timesteps are `sigmas * 1000` in float32.

use candle_core::{DType, Result, Tensor};

use super::{np_linspace, scale, FlowSampler};

const NUM_TRAIN_TIMESTEPS: usize = 1000;

/// Euler sampler for flow matching: `x_{i+1} = x_i + (sigma_{i+1} - sigma_i) * v_i`.
#[derive(Debug, Clone)]
pub struct FlowEuler {
    timesteps: Vec<f64>,
    /// float32 sigmas, `num_inference_steps + 1` of them (the last is 0).
    sigmas: Vec<f32>,
    shift: f64,
}

impl FlowEuler {
    /// `FlowMatchEulerDiscreteScheduler(shift=shift)` after `set_timesteps(num_inference_steps)`.
    pub fn new(num_inference_steps: usize, shift: f64) -> Self {
        let n_train = NUM_TRAIN_TIMESTEPS;
        // __init__: float32 torch math on timesteps 1000..1.
        let shift32 = shift as f32;
        let shifted32 = |t: f32| {
            let s = t / n_train as f32;
            shift32 * s / (1.0 + (shift32 - 1.0) * s)
        };
        let sigma_max = shifted32(n_train as f32) as f64;
        let sigma_min = shifted32(1.0) as f64;
        // set_timesteps: numpy float64, then float32.
        let ts = np_linspace(
            sigma_max * n_train as f64,
            sigma_min * n_train as f64,
            num_inference_steps,
        );
        let mut sigmas: Vec<f32> = ts
            .iter()
            .map(|t| {
                let s = t / n_train as f64;
                (shift * s / (1.0 + (shift - 1.0) * s)) as f32
            })
            .collect();
        let timesteps = sigmas
            .iter()
            .map(|&s| (s * n_train as f32) as f64)
            .collect();
        sigmas.push(0.0);
        Self {
            timesteps,
            sigmas,
            shift,
        }
    }

    /// The float32 sigmas, with the terminal 0.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    pub fn shift(&self) -> f64 {
        self.shift
    }
}

impl FlowSampler for FlowEuler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigma(&self, step_index: usize) -> f32 {
        self.sigmas[step_index.min(self.sigmas.len() - 1)]
    }

    /// Euler keeps no history: any step may come next.
    fn begin_at(&mut self, _step_index: usize) {}

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }

    fn restore(
        &mut self,
        next_step: usize,
        _state: &std::collections::HashMap<String, Tensor>,
    ) -> Result<()> {
        if next_step >= self.timesteps.len() {
            candle_core::bail!(
                "FlowEuler: resume at step {next_step} of a {}-step schedule",
                self.timesteps.len()
            )
        }
        Ok(())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
    ) -> Result<Tensor> {
        if step_index >= self.timesteps.len() {
            candle_core::bail!(
                "FlowEuler: step {step_index} of a {}-step schedule",
                self.timesteps.len()
            )
        }
        let out_dtype = model_output.dtype();
        let sample = sample.to_dtype(DType::F32)?;
        let v = model_output.to_dtype(DType::F32)?;
        let dt = self.sigmas[step_index + 1] - self.sigmas[step_index];
        (sample + scale(&v, dt)?)?.to_dtype(out_dtype)
    }
}
