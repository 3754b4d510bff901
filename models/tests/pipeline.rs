//! The whole model folder run stage by stage as the farm runs a model job
//! (`wan::pipeline::WanModel`): shapes, determinism in the seed, the model's shape rules,
//! and video-to-video at the ends of its strength range.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use reelfarm_models::wan::pipeline::{
    from_safetensors, to_safetensors, DenoiseParams, SamplerKind, WanModel,
};

fn model(name: &str) -> WanModel {
    WanModel::load(&fixture(name), DType::F32, &Device::Cpu).unwrap()
}

fn params(seed: u64, sampler: SamplerKind) -> DenoiseParams {
    DenoiseParams {
        frames: 9,
        height: 32,
        width: 48,
        steps: 3,
        sampler,
        guidance_scale: 5.0,
        seed,
    }
}

#[test]
fn text_to_video_runs_every_stage_with_the_clip_s_shape_and_is_deterministic_in_the_seed() {
    for name in CONFIGS {
        let m = model(name);
        let text = m.encode_text("a red ball", "blurry", 5.0).unwrap();
        assert!(
            text.negative.is_some(),
            "guidance encodes the negative prompt"
        );
        for sampler in [SamplerKind::UniPc, SamplerKind::FlowEuler] {
            let mut steps = vec![];
            let latents = m
                .denoise(&text, &params(7, sampler), None, |done, total| {
                    steps.push((done, total));
                    Ok(())
                })
                .unwrap();
            assert_eq!(steps, [(1, 3), (2, 3), (3, 3)], "progress after every step");
            let shape = m.latent_shape(9, 32, 48).unwrap();
            assert_eq!(latents.dims(), shape, "{name}");
            let again = m
                .denoise(&text, &params(7, sampler), None, |_, _| Ok(()))
                .unwrap();
            assert_eq!(
                max_abs_diff(&latents, &again),
                0.0,
                "same seed, same latents"
            );
            let other = m
                .denoise(&text, &params(8, sampler), None, |_, _| Ok(()))
                .unwrap();
            assert!(
                max_abs_diff(&latents, &other) > 1e-3,
                "another seed differs"
            );
            let video = m.decode(&latents).unwrap();
            assert_eq!(video.dims(), [1, 3, 9, 32, 48], "{name}");
        }
    }
}

#[test]
fn shapes_outside_the_model_s_rules_are_refused_with_the_rule() {
    let m = model("wan-tiny-a");
    let e = m.latent_shape(8, 32, 48).unwrap_err().to_string();
    assert!(e.contains("4k+1"), "{e}");
    let e = m.latent_shape(9, 40, 48).unwrap_err().to_string();
    assert!(e.contains("multiple of 16"), "{e}");
    // wan-tiny-b's VAE compresses time 2x: 5 frames is 2k+1.
    assert_eq!(
        model("wan-tiny-b").latent_shape(5, 16, 32).unwrap(),
        [1, 6, 3, 2, 4]
    );
}

#[test]
fn guide_strength_zero_returns_the_vae_reconstruction_and_a_positive_one_repaints() {
    let refs = references("wan-tiny-a");
    let m = model("wan-tiny-a");
    let video = &refs["vae.video"]; // [1, 3, 9, 32, 48] in [-1, 1]
    let guide = m.encode_video(video).unwrap();
    let text = m.encode_text("a red ball", "", 5.0).unwrap();
    let p = params(3, SamplerKind::UniPc);
    let mut calls = 0;
    let kept = m
        .denoise(&text, &p, Some((&guide, 0.0)), |_, _| {
            calls += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(calls, 0, "strength 0 runs no step");
    assert_eq!(
        max_abs_diff(&kept, &guide),
        0.0,
        "the guide's latents, unchanged"
    );
    let reconstruction = m.decode(&kept).unwrap();
    assert_eq!(reconstruction.dims(), video.dims());

    let mut steps = 0;
    let half = m
        .denoise(&text, &p, Some((&guide, 0.67)), |_, _| {
            steps += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(steps, 2, "floor(3 * 0.67) = 2 of the 3 steps run");
    let free = m.denoise(&text, &p, None, |_, _| Ok(())).unwrap();
    let (d_half, d_free) = (max_abs_diff(&half, &guide), max_abs_diff(&free, &guide));
    assert!(d_half > 0.0, "a positive strength repaints");
    assert!(
        d_half < d_free,
        "and stays nearer the guide than text-to-video: {d_half} vs {d_free}"
    );
}

#[test]
fn a_cancelled_denoise_stops_at_the_step_it_was_cancelled() {
    let m = model("wan-tiny-a");
    let text = m.encode_text("a red ball", "", 5.0).unwrap();
    let mut seen = 0;
    let r = m.denoise(&text, &params(1, SamplerKind::UniPc), None, |done, _| {
        seen = done;
        if done == 1 {
            candle_core::bail!("cancelled")
        }
        Ok(())
    });
    assert!(r.is_err());
    assert_eq!(seen, 1);
}

#[test]
fn tensors_round_trip_through_safetensors_bytes_and_garbage_is_an_error() {
    let t = Tensor::arange(0f32, 24.0, &Device::Cpu)
        .unwrap()
        .reshape((2, 3, 4))
        .unwrap();
    let bytes = to_safetensors(&[("latents", &t)]).unwrap();
    let back = from_safetensors(&bytes, &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&back["latents"], &t), 0.0);
    assert!(from_safetensors(b"not a safetensors file", &Device::Cpu).is_err());
    assert!(from_safetensors(&bytes[..bytes.len() / 2], &Device::Cpu).is_err());
}

#[test]
fn a_denoise_resumed_from_a_checkpoint_equals_the_uninterrupted_run_bit_for_bit() {
    use reelfarm_models::wan::pipeline::DenoiseStart;
    for name in CONFIGS {
        let m = model(name);
        let text = m.encode_text("a red ball", "blurry", 5.0).unwrap();
        for sampler in [SamplerKind::UniPc, SamplerKind::FlowEuler] {
            let p = DenoiseParams {
                steps: 5,
                ..params(11, sampler)
            };
            let whole = m.denoise(&text, &p, None, |_, _| Ok(())).unwrap();
            // Stopped after every possible step (as a preempted or killed task is), then
            // resumed from what it saved there.
            for k in 1..p.steps {
                let mut saved = None;
                let stopped = m.denoise_from(&text, &p, DenoiseStart::Noise, |s| {
                    if s.done == k {
                        saved = Some(m.checkpoint(s, &p).unwrap());
                        candle_core::bail!("preempted")
                    }
                    Ok(())
                });
                assert!(stopped.is_err());
                let saved = saved.expect("a checkpoint at step k");
                let mut resumed_steps = vec![];
                let resumed = m
                    .denoise_from(
                        &text,
                        &p,
                        DenoiseStart::Resume(m.read_checkpoint(&saved, &p).unwrap()),
                        |s| {
                            resumed_steps.push(s.done);
                            Ok(())
                        },
                    )
                    .unwrap();
                assert_eq!(
                    resumed_steps,
                    ((k + 1)..=p.steps).collect::<Vec<_>>(),
                    "{name} {sampler:?}: resumes after step {k}"
                );
                assert_eq!(
                    bits(&resumed),
                    bits(&whole),
                    "{name} {sampler:?}: resumed after step {k} differs from the uninterrupted run"
                );
            }
        }
    }
}

#[test]
fn a_checkpoint_of_another_schedule_or_a_damaged_one_is_refused() {
    use reelfarm_models::wan::pipeline::DenoiseStart;
    let m = model("wan-tiny-a");
    let text = m.encode_text("a red ball", "", 5.0).unwrap();
    let p = params(1, SamplerKind::UniPc);
    let mut saved = None;
    let _ = m.denoise_from(&text, &p, DenoiseStart::Noise, |s| {
        saved = Some(m.checkpoint(s, &p).unwrap());
        candle_core::bail!("stop")
    });
    let saved = saved.unwrap();
    // Read for this denoise, then handed to others: denoise_from checks it again.
    let read = || m.read_checkpoint(&saved, &p).unwrap();
    let more_steps = DenoiseParams {
        steps: 4,
        ..p.clone()
    };
    let e = m
        .denoise_from(&text, &more_steps, DenoiseStart::Resume(read()), |_| Ok(()))
        .unwrap_err();
    assert!(format!("{e:#}").contains("another schedule"), "{e:#}");
    let euler = DenoiseParams {
        sampler: SamplerKind::FlowEuler,
        ..p.clone()
    };
    assert!(m
        .denoise_from(&text, &euler, DenoiseStart::Resume(read()), |_| Ok(()))
        .is_err());
    let bigger = DenoiseParams {
        width: 64,
        ..p.clone()
    };
    let e = m
        .denoise_from(&text, &bigger, DenoiseStart::Resume(read()), |_| Ok(()))
        .unwrap_err();
    assert!(format!("{e:#}").contains("do not match"), "{e:#}");
    // Read for another denoise, or damaged: refused when read.
    let e = m.read_checkpoint(&saved, &more_steps).err().unwrap();
    assert!(format!("{e:#}").contains("another schedule"), "{e:#}");
    let e = m
        .read_checkpoint(&saved[..saved.len() / 2], &p)
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("checkpoint"), "{e:#}");
}
