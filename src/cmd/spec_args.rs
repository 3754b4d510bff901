//! Job-spec flags shared by `submit` and `demo`. Zero or absent means the coordinator's
//! default (see the README's request limits).

use clap::{Args, ValueEnum};
use reelfarm_proto::v1;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SamplerArg {
    Ddim,
    Euler,
    DpmSolverPp2m,
    /// Flow-matching Euler (model jobs).
    FlowEuler,
    /// UniPC, flow prediction (model jobs; their default).
    Unipc,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PriorityArg {
    Low,
    Normal,
    High,
}

#[derive(Args, Clone, Debug)]
pub struct SpecArgs {
    /// What to generate, in free text.
    pub prompt: String,
    /// Clip length in seconds (0.5..=20; default 4).
    #[arg(long, default_value_t = 0.0)]
    pub duration: f64,
    /// Frames per second (1..=60; default 12).
    #[arg(long, default_value_t = 0)]
    pub fps: u32,
    /// Frame width in pixels (even, 64..=3840; default 320).
    #[arg(long, default_value_t = 0)]
    pub width: u32,
    /// Frame height in pixels (even, 64..=2160; default 180).
    #[arg(long, default_value_t = 0)]
    pub height: u32,
    /// Random seed (default: drawn by the coordinator and recorded in the job).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Diffusion sampler steps (1..=200; default 20).
    #[arg(long, default_value_t = 0)]
    pub steps: u32,
    /// Sampler (default ddim; unipc for a model job).
    #[arg(long, value_enum)]
    pub sampler: Option<SamplerArg>,
    /// Generate no audio track.
    #[arg(long)]
    pub no_audio: bool,
    /// Priority class (default normal).
    #[arg(long, value_enum)]
    pub priority: Option<PriorityArg>,
    /// Tenant (default "default").
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Label KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// An open model the workers serve (a --models folder name); default: the reference
    /// pipeline.
    #[arg(long, default_value = "")]
    pub model: String,
    /// Model jobs: what the clip should not show.
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Model jobs: classifier-free guidance scale (1..=20; default 5).
    #[arg(long)]
    pub guidance_scale: Option<f64>,
    /// Model jobs: follow the reference pipeline's physics simulation (video-to-video).
    #[arg(long)]
    pub guide: bool,
    /// With --guide: how much the model may repaint (0..=1; default 0.7).
    #[arg(long)]
    pub guide_strength: Option<f64>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("label must be KEY=VALUE, got {s:?}"))
}

impl SpecArgs {
    pub fn to_proto(&self) -> v1::JobSpec {
        v1::JobSpec {
            prompt: self.prompt.clone(),
            duration_seconds: self.duration,
            fps: self.fps,
            width: self.width,
            height: self.height,
            seed: self.seed,
            steps: self.steps,
            sampler: match self.sampler {
                None => v1::Sampler::Unspecified,
                Some(SamplerArg::Ddim) => v1::Sampler::Ddim,
                Some(SamplerArg::Euler) => v1::Sampler::Euler,
                Some(SamplerArg::DpmSolverPp2m) => v1::Sampler::DpmSolverPp2m,
                Some(SamplerArg::FlowEuler) => v1::Sampler::FlowEuler,
                Some(SamplerArg::Unipc) => v1::Sampler::Unipc,
            } as i32,
            audio: Some(!self.no_audio),
            priority: match self.priority {
                None => v1::Priority::Unspecified,
                Some(PriorityArg::Low) => v1::Priority::Low,
                Some(PriorityArg::Normal) => v1::Priority::Normal,
                Some(PriorityArg::High) => v1::Priority::High,
            } as i32,
            tenant: self.tenant.clone(),
            labels: self.labels.iter().cloned().collect(),
            model: self.model.clone(),
            negative_prompt: self.negative_prompt.clone(),
            guidance_scale: self.guidance_scale,
            guide: self.guide,
            guide_strength: self.guide_strength,
        }
    }
}
