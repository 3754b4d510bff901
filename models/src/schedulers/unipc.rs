//! `UniPCMultistepScheduler` (diffusers 0.42) in the configuration Wan ships: flow prediction
//! with flow sigmas (`use_flow_sigmas`, static `flow_shift`), `predict_x0`, the B(h) = e^h - 1
//! ("bh2") solver of order 1 or 2, corrector enabled unless listed in `disable_corrector`.
//!
//! Dtypes mirror diffusers: the schedule is numpy float64, cast to float32 sigmas; every scalar
//! of the predictor / corrector (lambdas, h, rk, B(h), rhos) is a float32 0-d torch tensor, and
//! the sample math is float32. Transcendentals (`log`, `expm1`) are evaluated in f64 and
//! rounded to f32, i.e. correctly rounded float32 results.

use candle_core::{DType, Result, Tensor};
use serde::Deserialize;

use std::collections::HashMap;

use super::{counter, div_scalar, np_linspace, read_counter, scale, FlowSampler};

/// The `scheduler_config.json` fields this port reads; anything else is ignored. Defaults are
/// diffusers' `__init__` defaults, so a missing `prediction_type` means "epsilon" (refused).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UniPcConfig {
    pub num_train_timesteps: usize,
    pub solver_order: usize,
    pub prediction_type: String,
    pub thresholding: bool,
    pub predict_x0: bool,
    pub solver_type: String,
    pub lower_order_final: bool,
    pub disable_corrector: Vec<usize>,
    pub solver_p: Option<serde_json::Value>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    pub final_sigmas_type: String,
    pub use_dynamic_shifting: bool,
    pub shift_terminal: Option<f64>,
}

impl Default for UniPcConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            solver_order: 2,
            prediction_type: "epsilon".into(),
            thresholding: false,
            predict_x0: true,
            solver_type: "bh2".into(),
            lower_order_final: true,
            disable_corrector: Vec::new(),
            solver_p: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            final_sigmas_type: "zero".into(),
            use_dynamic_shifting: false,
            shift_terminal: None,
        }
    }
}

impl UniPcConfig {
    /// Wan's settings: flow prediction with flow sigmas, order 2, bh2, zero final sigma.
    pub fn wan(flow_shift: f64) -> Self {
        Self {
            prediction_type: "flow_prediction".into(),
            use_flow_sigmas: true,
            flow_shift,
            ..Self::default()
        }
    }

    /// Err naming the first setting this port does not implement.
    pub fn check(&self) -> std::result::Result<(), String> {
        let refuse =
            |field: &str, value: String| Err(format!("UniPC: unsupported {field} = {value}"));
        if self.prediction_type != "flow_prediction" {
            return refuse(
                "prediction_type",
                format!("{:?} (only \"flow_prediction\")", self.prediction_type),
            );
        }
        if !self.use_flow_sigmas {
            return refuse("use_flow_sigmas", "false (only true)".into());
        }
        if !(1..=2).contains(&self.solver_order) {
            return refuse(
                "solver_order",
                format!("{} (only 1 or 2)", self.solver_order),
            );
        }
        if self.thresholding {
            return refuse("thresholding", "true".into());
        }
        if !self.predict_x0 {
            return refuse("predict_x0", "false".into());
        }
        // diffusers maps "midpoint", "heun" and "logrho" to "bh2".
        if !matches!(
            self.solver_type.as_str(),
            "bh2" | "midpoint" | "heun" | "logrho"
        ) {
            return refuse(
                "solver_type",
                format!("{:?} (only \"bh2\")", self.solver_type),
            );
        }
        if self.solver_p.as_ref().is_some_and(|v| !v.is_null()) {
            return refuse("solver_p", "set (only null)".into());
        }
        if self.use_karras_sigmas {
            return refuse("use_karras_sigmas", "true".into());
        }
        if self.use_exponential_sigmas {
            return refuse("use_exponential_sigmas", "true".into());
        }
        if self.use_beta_sigmas {
            return refuse("use_beta_sigmas", "true".into());
        }
        if self.use_dynamic_shifting {
            return refuse("use_dynamic_shifting", "true".into());
        }
        if let Some(t) = self.shift_terminal.filter(|t| *t != 0.0) {
            return refuse("shift_terminal", t.to_string());
        }
        if !matches!(self.final_sigmas_type.as_str(), "zero" | "sigma_min") {
            return refuse("final_sigmas_type", format!("{:?}", self.final_sigmas_type));
        }
        if self.num_train_timesteps == 0 {
            return refuse("num_train_timesteps", "0".into());
        }
        if !(self.flow_shift.is_finite() && self.flow_shift > 0.0) {
            return refuse("flow_shift", self.flow_shift.to_string());
        }
        Ok(())
    }
}

/// UniPC multistep sampler (predictor UniP + corrector UniC) for flow-prediction models.
#[derive(Debug, Clone)]
pub struct UniPc {
    config: UniPcConfig,
    timesteps: Vec<f64>,
    /// float32 sigmas, `num_inference_steps + 1` of them.
    sigmas: Vec<f32>,
    /// converted (x0) model outputs, oldest first, `solver_order` slots.
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    last_sample: Option<Tensor>,
    this_order: usize,
    /// the step the next call must be (0 restarts).
    next_step: usize,
}

impl UniPc {
    /// Wan's default UniPC (`UniPcConfig::wan`) after `set_timesteps(num_inference_steps)`.
    pub fn new(num_inference_steps: usize, flow_shift: f64) -> Self {
        Self::with_config(UniPcConfig::wan(flow_shift), num_inference_steps)
            .expect("Wan's UniPC settings are supported")
    }

    /// From a diffusers `scheduler_config.json` value; Err names an unsupported setting.
    pub fn from_config(
        json: &serde_json::Value,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, String> {
        let config: UniPcConfig = serde_json::from_value(json.clone())
            .map_err(|e| format!("UniPC: bad scheduler config: {e}"))?;
        Self::with_config(config, num_inference_steps)
    }

    pub fn with_config(
        config: UniPcConfig,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, String> {
        config.check()?;
        if num_inference_steps == 0 {
            return Err("UniPC: num_inference_steps must be at least 1".into());
        }
        let n_train = config.num_train_timesteps as f64;
        let shift = config.flow_shift;
        // set_timesteps, use_flow_sigmas branch (numpy float64).
        let mut sig: Vec<f64> = np_linspace(1.0, 1.0 / n_train, num_inference_steps + 1)
            [..num_inference_steps]
            .iter()
            .map(|&s| shift * s / (1.0 + (shift - 1.0) * s))
            .collect();
        let eps = 1e-6;
        if (sig[0] - 1.0).abs() < eps {
            sig[0] -= eps;
        }
        // torch.from_numpy(float64).to(int64): truncation.
        let timesteps = sig.iter().map(|&s| (s * n_train).trunc()).collect();
        let last = if config.final_sigmas_type == "sigma_min" {
            sig[num_inference_steps - 1]
        } else {
            0.0
        };
        let sigmas = sig
            .iter()
            .chain(std::iter::once(&last))
            .map(|&s| s as f32)
            .collect();
        let order = config.solver_order;
        Ok(Self {
            config,
            timesteps,
            sigmas,
            model_outputs: vec![None; order],
            lower_order_nums: 0,
            last_sample: None,
            this_order: 0,
            next_step: 0,
        })
    }

    /// The float32 sigmas, with the terminal one.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    pub fn config(&self) -> &UniPcConfig {
        &self.config
    }

    fn reset(&mut self) {
        self.model_outputs = vec![None; self.config.solver_order];
        self.lower_order_nums = 0;
        self.last_sample = None;
        self.this_order = 0;
        self.next_step = 0;
    }

    /// `i`-th most recent converted model output (0 = newest).
    fn recent(&self, i: usize) -> Result<&Tensor> {
        let n = self.model_outputs.len();
        match n
            .checked_sub(i + 1)
            .and_then(|k| self.model_outputs[k].as_ref())
        {
            Some(t) => Ok(t),
            None => candle_core::bail!("UniPC: model output history too short"),
        }
    }

    /// UniP (B(h) = expm1(-h)) from `sigmas[s]` to `sigmas[s + 1]`, where `s` = step index.
    fn predictor(&self, s: usize, x: &Tensor, order: usize) -> Result<Tensor> {
        let m0 = self.recent(0)?;
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[s + 1]);
        let (_, sigma_s0) = alpha_sigma(self.sigmas[s]);
        let lambda_s0 = lambda(self.sigmas[s]);
        let h = lambda(self.sigmas[s + 1]) - lambda_s0;
        let hh = -h;
        let h_phi_1 = expm1_f32(hh);
        let b_h = expm1_f32(hh);
        let x_t_ = (scale(x, sigma_t / sigma_s0)? - scale(m0, alpha_t * h_phi_1)?)?;
        if order < 2 {
            // pred_res = 0
            return Ok(x_t_);
        }
        // order 2: rhos_p = [0.5]
        let rk = (lambda(self.sigmas[s - 1]) - lambda_s0) / h;
        let d1 = div_scalar(&(self.recent(1)? - m0)?, rk)?;
        let pred_res = scale(&d1, 0.5)?;
        x_t_ - scale(&pred_res, alpha_t * b_h)?
    }

    /// UniC: corrects `this_sample` (at `sigmas[s]`, predicted from `last_sample` at
    /// `sigmas[s - 1]`) with this step's converted model output `model_t`.
    fn corrector(
        &self,
        s: usize,
        model_t: &Tensor,
        last_sample: &Tensor,
        order: usize,
    ) -> Result<Tensor> {
        let m0 = self.recent(0)?;
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[s]);
        let (_, sigma_s0) = alpha_sigma(self.sigmas[s - 1]);
        let lambda_s0 = lambda(self.sigmas[s - 1]);
        let h = lambda(self.sigmas[s]) - lambda_s0;
        let hh = -h;
        let h_phi_1 = expm1_f32(hh);
        let b_h = expm1_f32(hh);
        let x_t_ = (scale(last_sample, sigma_t / sigma_s0)? - scale(m0, alpha_t * h_phi_1)?)?;
        let d1_t = (model_t - m0)?;
        let res = if order < 2 {
            // rhos_c = [0.5], corr_res = 0
            scale(&d1_t, 0.5)?
        } else {
            let rk = (lambda(self.sigmas[s - 2]) - lambda_s0) / h;
            let d1 = div_scalar(&(self.recent(1)? - m0)?, rk)?;
            // b_i = h_phi_k * i! / B_h, h_phi_k = h_phi_{k-1} / hh - 1 / (k)!
            let mut b = [0f32; 2];
            let mut h_phi_k = h_phi_1 / hh - 1.0;
            let mut factorial = 1u64;
            for (i, bi) in b.iter_mut().enumerate() {
                *bi = h_phi_k * factorial as f32 / b_h;
                factorial *= i as u64 + 2;
                h_phi_k = h_phi_k / hh - (1.0 / factorial as f64) as f32;
            }
            // R = [rks^0; rks^1] with rks = [rk, 1]
            let rhos_c = solve2([[1.0, 1.0], [rk, 1.0]], b);
            (scale(&d1, rhos_c[0])? + scale(&d1_t, rhos_c[1])?)?
        };
        x_t_ - scale(&res, alpha_t * b_h)?
    }
}

impl FlowSampler for UniPc {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigma(&self, step_index: usize) -> f32 {
        self.sigmas[step_index.min(self.sigmas.len() - 1)]
    }

    fn begin_at(&mut self, step_index: usize) {
        self.reset();
        self.next_step = step_index;
    }

    /// The converted model outputs (by slot), the last sample and the order counters.
    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut s = Vec::new();
        for (k, m) in self.model_outputs.iter().enumerate() {
            if let Some(t) = m {
                s.push((format!("model_output.{k}"), t.clone()));
            }
        }
        if let Some(t) = &self.last_sample {
            s.push(("last_sample".into(), t.clone()));
        }
        s.push(("lower_order_nums".into(), counter(self.lower_order_nums)?));
        s.push(("this_order".into(), counter(self.this_order)?));
        Ok(s)
    }

    fn restore(&mut self, next_step: usize, state: &HashMap<String, Tensor>) -> Result<()> {
        let n = self.timesteps.len();
        if next_step >= n {
            candle_core::bail!("UniPC: resume at step {next_step} of a {n}-step schedule")
        }
        let order = self.config.solver_order;
        let lower_order_nums = read_counter(state, "lower_order_nums")?;
        let this_order = read_counter(state, "this_order")?;
        if lower_order_nums > order || this_order > order {
            candle_core::bail!("UniPC: sampler state of another solver order")
        }
        let mut model_outputs = vec![None; order];
        for (k, slot) in model_outputs.iter_mut().enumerate() {
            *slot = state.get(&format!("model_output.{k}")).cloned();
        }
        let last_sample = state.get("last_sample").cloned();
        // After step i every slot from the newest back to min(i+1, order) is filled.
        let filled = model_outputs
            .iter()
            .rev()
            .take_while(|m| m.is_some())
            .count();
        if next_step > 0 && (filled < next_step.min(order) || last_sample.is_none()) {
            candle_core::bail!("UniPC: sampler state is missing its history for step {next_step}")
        }
        self.model_outputs = model_outputs;
        self.last_sample = last_sample;
        self.lower_order_nums = lower_order_nums;
        self.this_order = this_order;
        self.next_step = next_step;
        Ok(())
    }

    /// Steps must be taken in order 0, 1, 2, ...; step 0 restarts the multistep history.
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
    ) -> Result<Tensor> {
        let n = self.timesteps.len();
        if step_index == 0 && self.next_step != 0 {
            self.reset();
        }
        if step_index != self.next_step || step_index >= n {
            candle_core::bail!(
                "UniPC: step {step_index} called, expected step {} of a {n}-step schedule (steps run in order from 0)",
                self.next_step
            )
        }
        let out_dtype = sample.dtype();
        let sample = sample.to_dtype(DType::F32)?;
        let model_output = model_output.to_dtype(DType::F32)?;
        let i = step_index;
        // convert_model_output (flow prediction, predict_x0): x0 = sample - sigma * v
        let converted = (&sample - scale(&model_output, self.sigmas[i])?)?;
        let use_corrector = i > 0
            && !self.config.disable_corrector.contains(&(i - 1))
            && self.last_sample.is_some();
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.corrector(i, &converted, last, self.this_order)?,
            _ => sample,
        };
        self.model_outputs.remove(0);
        self.model_outputs.push(Some(converted));
        let order = self.config.solver_order;
        let this_order = if self.config.lower_order_final {
            order.min(n - i)
        } else {
            order
        };
        self.this_order = this_order.min(self.lower_order_nums + 1);
        let prev = self.predictor(i, &sample, self.this_order)?;
        self.last_sample = Some(sample);
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        self.next_step = i + 1;
        prev.to_dtype(out_dtype)
    }
}

/// `_sigma_to_alpha_sigma_t` for flow sigmas: (1 - sigma, sigma).
fn alpha_sigma(sigma: f32) -> (f32, f32) {
    (1.0 - sigma, sigma)
}

/// `log(alpha) - log(sigma)` in float32 (inf at sigma = 0).
fn lambda(sigma: f32) -> f32 {
    let (alpha, sigma) = alpha_sigma(sigma);
    ln_f32(alpha) - ln_f32(sigma)
}

fn ln_f32(x: f32) -> f32 {
    (x as f64).ln() as f32
}

fn expm1_f32(x: f32) -> f32 {
    (x as f64).exp_m1() as f32
}

/// `torch.linalg.solve` of a 2x2 float32 system the way torch's CPU LAPACK (`sgesv`) rounds it:
/// LU with partial pivoting, the column scaled by the pivot's reciprocal, a fused multiply-add
/// in the forward substitution and reciprocal-multiplies in the back substitution. (Matched
/// bit for bit against `torch.linalg.solve` on random systems of this shape; other LAPACK
/// builds may differ by an ulp.)
fn solve2(a: [[f32; 2]; 2], b: [f32; 2]) -> [f32; 2] {
    let (p, q) = if a[1][0].abs() > a[0][0].abs() {
        (1, 0)
    } else {
        (0, 1)
    };
    let l = a[q][0] * (1.0 / a[p][0]);
    let u11 = a[q][1] - l * a[p][1];
    let y0 = b[p];
    let y1 = (-l).mul_add(y0, b[q]);
    let x1 = y1 * (1.0 / u11);
    let x0 = (y0 - a[p][1] * x1) * (1.0 / a[p][0]);
    [x0, x1]
}
