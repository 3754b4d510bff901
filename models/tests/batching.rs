//! Batching across jobs (`WanModel::denoise_batch`): clips denoised together in one
//! transformer forward per step equal each clip denoised alone, bit for bit, whatever mix
//! of seeds, guidance, samplers, step counts and starts the batch holds; a clip stopped
//! part-way ends alone; a batch of two shapes is refused.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use reelfarm_models::wan::pipeline::{
    BatchClip, DenoiseParams, DenoiseStart, SamplerKind, TextEmbeddings, WanModel,
};

fn model(name: &str) -> WanModel {
    WanModel::load(&fixture(name), DType::F32, &Device::Cpu).unwrap()
}

fn params(seed: u64, sampler: SamplerKind, steps: usize, guidance_scale: f64) -> DenoiseParams {
    DenoiseParams {
        frames: 9,
        height: 32,
        width: 48,
        steps,
        sampler,
        guidance_scale,
        seed,
    }
}

fn alone(m: &WanModel, text: &TextEmbeddings, p: &DenoiseParams) -> Tensor {
    m.denoise_from(text, p, DenoiseStart::Noise, |_| Ok(()))
        .unwrap()
}

#[test]
fn a_batch_equals_each_clip_denoised_alone_bit_for_bit() {
    for name in CONFIGS {
        let m = model(name);
        let guided = m.encode_text("a red ball", "blurry", 5.0).unwrap();
        let plain = m.encode_text("a blue cube", "", 1.0).unwrap();
        // Guided and unguided clips, both samplers, different seeds and step counts.
        let clips = [
            (&guided, params(1, SamplerKind::UniPc, 3, 5.0)),
            (&plain, params(2, SamplerKind::UniPc, 3, 1.0)),
            (&guided, params(3, SamplerKind::FlowEuler, 4, 3.0)),
            (&plain, params(4, SamplerKind::FlowEuler, 2, 1.0)),
        ];
        let solo: Vec<Tensor> = clips.iter().map(|(t, p)| alone(&m, t, p)).collect();
        let mut seen = vec![vec![]; clips.len()];
        let batch = clips
            .iter()
            .map(|(text, params)| BatchClip {
                text,
                params,
                start: DenoiseStart::Noise,
            })
            .collect();
        let batched = m
            .denoise_batch(batch, |i, s| {
                seen[i].push((s.done, s.total));
                Ok(())
            })
            .unwrap();
        for (i, (r, solo)) in batched.into_iter().zip(&solo).enumerate() {
            assert_eq!(
                bits(&r.unwrap()),
                bits(solo),
                "{name}: clip {i} batched differs from alone"
            );
            let total = clips[i].1.steps;
            assert_eq!(
                seen[i],
                (1..=total).map(|d| (d, total)).collect::<Vec<_>>(),
                "{name}: clip {i}'s progress"
            );
        }
    }
}

#[test]
fn a_resumed_clip_batches_with_fresh_ones_and_each_equals_its_run_alone() {
    let m = model("wan-tiny-a");
    let text = m.encode_text("a red ball", "blurry", 5.0).unwrap();
    let p = params(11, SamplerKind::UniPc, 5, 5.0);
    let fresh = params(12, SamplerKind::UniPc, 5, 5.0);
    let whole = alone(&m, &text, &p);
    let mut saved = None;
    let _ = m.denoise_from(&text, &p, DenoiseStart::Noise, |s| {
        if s.done == 2 {
            saved = Some(m.checkpoint(s, &p).unwrap());
            candle_core::bail!("preempted")
        }
        Ok(())
    });
    let checkpoint = m.read_checkpoint(&saved.unwrap(), &p).unwrap();
    let batch = vec![
        BatchClip {
            text: &text,
            params: &fresh,
            start: DenoiseStart::Noise,
        },
        BatchClip {
            text: &text,
            params: &p,
            start: DenoiseStart::Resume(checkpoint),
        },
    ];
    let out = m.denoise_batch(batch, |_, _| Ok(())).unwrap();
    let mut out = out.into_iter().map(Result::unwrap);
    assert_eq!(bits(&out.next().unwrap()), bits(&alone(&m, &text, &fresh)));
    assert_eq!(
        bits(&out.next().unwrap()),
        bits(&whole),
        "the resumed clip equals the uninterrupted run"
    );
}

#[test]
fn a_clip_stopped_part_way_ends_alone_and_the_others_go_on() {
    let m = model("wan-tiny-a");
    let text = m.encode_text("a red ball", "blurry", 5.0).unwrap();
    let ps: Vec<DenoiseParams> = (0..3)
        .map(|seed| params(seed, SamplerKind::FlowEuler, 4, 5.0))
        .collect();
    let batch = ps
        .iter()
        .map(|params| BatchClip {
            text: &text,
            params,
            start: DenoiseStart::Noise,
        })
        .collect();
    let mut after_stop = 0;
    let out = m
        .denoise_batch(batch, |i, s| {
            if i == 1 && s.done == 2 {
                candle_core::bail!("cancelled")
            }
            if i == 1 && s.done > 2 {
                after_stop += 1;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(after_stop, 0, "a stopped clip takes no more steps");
    let mut out = out.into_iter();
    assert_eq!(
        bits(&out.next().unwrap().unwrap()),
        bits(&alone(&m, &text, &ps[0]))
    );
    let e = out.next().unwrap().unwrap_err();
    assert!(format!("{e:#}").contains("cancelled"), "{e:#}");
    assert_eq!(
        bits(&out.next().unwrap().unwrap()),
        bits(&alone(&m, &text, &ps[2]))
    );
}

#[test]
fn a_batch_of_two_shapes_is_refused_naming_the_clip() {
    let m = model("wan-tiny-a");
    let text = m.encode_text("a red ball", "", 1.0).unwrap();
    let p = params(1, SamplerKind::UniPc, 2, 1.0);
    let wider = DenoiseParams {
        width: 64,
        ..p.clone()
    };
    let batch = vec![
        BatchClip {
            text: &text,
            params: &p,
            start: DenoiseStart::Noise,
        },
        BatchClip {
            text: &text,
            params: &wider,
            start: DenoiseStart::Noise,
        },
    ];
    let e = m.denoise_batch(batch, |_, _| Ok(())).err().unwrap();
    assert!(format!("{e:#}").contains("clips[1]"), "{e:#}");
}
