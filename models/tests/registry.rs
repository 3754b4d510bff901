//! `--models PATH` scanning: good folders register with their facts, broken ones are
//! reported naming the file and tensor, and never stop the scan.

mod common;

use std::path::Path;

use common::*;
use reelfarm_models::registry::scan;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A safetensors file holding `tensors` (name, shape) of f32 zeros.
fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>)]) {
    let map: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .iter()
        .map(|(n, s)| {
            (
                n.to_string(),
                candle_core::Tensor::zeros(
                    s.clone(),
                    candle_core::DType::F32,
                    &candle_core::Device::Cpu,
                )
                .unwrap(),
            )
        })
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

#[test]
fn good_models_register_and_each_broken_folder_is_reported_by_file_and_tensor() {
    let root = tempfile::tempdir().unwrap();
    for name in CONFIGS {
        copy_dir(&fixture(name), &root.path().join(name));
    }
    // Missing tensor: a transformer file without proj_out.bias.
    let missing = root.path().join("missing-tensor");
    copy_dir(&fixture("wan-tiny-a"), &missing);
    let weights = missing.join("transformer/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    tensors.remove("proj_out.bias");
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    // Misshapen tensor.
    let misshapen = root.path().join("misshapen");
    copy_dir(&fixture("wan-tiny-a"), &misshapen);
    let weights = misshapen.join("transformer/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    tensors.insert(
        "blocks.0.attn1.to_q.weight".into(),
        candle_core::Tensor::zeros((24, 23), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap(),
    );
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    // Bad JSON, unknown class, a weights file that is not safetensors.
    let bad_json = root.path().join("bad-json");
    copy_dir(&fixture("wan-tiny-b"), &bad_json);
    std::fs::write(bad_json.join("transformer/config.json"), "{ not json").unwrap();
    let unknown = root.path().join("unknown-class");
    copy_dir(&fixture("wan-tiny-b"), &unknown);
    let index = std::fs::read_to_string(unknown.join("model_index.json")).unwrap();
    std::fs::write(
        unknown.join("model_index.json"),
        index.replace("\"WanPipeline\"", "\"FluxPipeline\""),
    )
    .unwrap();
    let garbage = root.path().join("garbage-weights");
    copy_dir(&fixture("wan-tiny-b"), &garbage);
    std::fs::write(
        garbage.join("transformer/diffusion_pytorch_model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\xffjunk",
    )
    .unwrap();
    write_safetensors(
        &root.path().join("not-a-model.safetensors"),
        &[("x", vec![1])],
    );

    let registry = scan(root.path()).unwrap();
    let names: Vec<&str> = registry.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["wan-tiny-a", "wan-tiny-b"]);
    let a = &registry.models[0];
    assert_eq!(a.family, "wan2.1-t2v");
    assert_eq!(a.dtypes, ["F32"]);
    // Every tensor the engine runs is counted once: all of the transformer, the text
    // encoder and the VAE (its encoder encodes the physics guide).
    let params: u64 = ["transformer", "text_encoder", "vae"]
        .iter()
        .flat_map(|c| {
            reelfarm_models::weights::check::read_headers(&fixture("wan-tiny-a").join(c))
                .unwrap()
                .into_iter()
        })
        .map(|(_, t)| t.shape.iter().product::<usize>() as u64)
        .sum();
    assert_eq!(a.parameters, params);
    assert_eq!(a.weight_bytes, params * 4);

    let problem = |name: &str| {
        registry
            .broken
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("{name} not reported broken"))
            .problems
            .join("\n")
    };
    let p = problem("missing-tensor");
    assert!(p.contains("missing tensor proj_out.bias"), "{p}");
    let p = problem("misshapen");
    assert!(
        p.contains("diffusion_pytorch_model.safetensors")
            && p.contains("blocks.0.attn1.to_q.weight")
            && p.contains("[24, 23]"),
        "{p}"
    );
    let p = problem("bad-json");
    assert!(
        p.contains("transformer/config.json") && p.contains("JSON"),
        "{p}"
    );
    let p = problem("unknown-class");
    assert!(
        p.contains("model_index.json") && p.contains("FluxPipeline"),
        "{p}"
    );
    let p = problem("garbage-weights");
    assert!(
        p.contains("diffusion_pytorch_model.safetensors") && p.contains("not a safetensors file"),
        "{p}"
    );
    assert_eq!(registry.broken.len(), 5);
}

#[test]
fn a_sharded_transformer_is_read_through_its_index() {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("sharded");
    copy_dir(&fixture("wan-tiny-a"), &model);
    let dir = model.join("transformer");
    let single = dir.join("diffusion_pytorch_model.safetensors");
    let tensors = candle_core::safetensors::load(&single, &candle_core::Device::Cpu).unwrap();
    std::fs::remove_file(&single).unwrap();
    let (mut one, mut two) = (
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    );
    let mut weight_map = serde_json::Map::new();
    for (i, (name, t)) in tensors.into_iter().enumerate() {
        let shard = if i % 2 == 0 {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        weight_map.insert(name.clone(), shard.into());
        if i % 2 == 0 {
            one.insert(name, t);
        } else {
            two.insert(name, t);
        }
    }
    candle_core::safetensors::save(&one, dir.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&two, dir.join("model-00002-of-00002.safetensors")).unwrap();
    std::fs::write(
        dir.join("diffusion_pytorch_model.safetensors.index.json"),
        serde_json::json!({ "weight_map": weight_map }).to_string(),
    )
    .unwrap();
    let registry = scan(root.path()).unwrap();
    assert_eq!(registry.models.len(), 1, "{:?}", registry.broken);
    // And the production loader gives the same outputs from the shards.
    let refs = references("wan-tiny-a");
    let model = reelfarm_models::weights::load_component(
        &dir,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
        reelfarm_models::wan::transformer::WanTransformer::load,
    )
    .unwrap();
    let out = model
        .forward(
            &refs["transformer.latents"],
            &refs["transformer.timestep"],
            &refs["transformer.context"],
        )
        .unwrap();
    assert_close("sharded", &out, &refs["transformer.out"], 1e-4);
}

#[test]
fn an_unreadable_models_folder_is_an_error() {
    let err = scan(Path::new("/nonexistent/reelfarm-models")).unwrap_err();
    assert!(
        err.contains("--models /nonexistent/reelfarm-models"),
        "{err}"
    );
}
