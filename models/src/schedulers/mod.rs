//! Flow-matching samplers as diffusers runs them for Wan: Euler
//! (`FlowMatchEulerDiscreteScheduler`) and UniPC in flow-prediction mode
//! (`UniPCMultistepScheduler` with `use_flow_sigmas`).
