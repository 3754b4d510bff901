//! The UMT5 text encoder and its tokenizer against transformers/diffusers on the tiny fixtures:
//! the prompt ids WanPipeline's tokenizer call gives and `_get_t5_prompt_embeds`' output.

mod common;

use candle_core::{DType, Device, Tensor};
use reelfarm_models::wan::text_encoder::{prompt_embeds, PromptTokenizer, TextEncoder};

fn load(name: &str) -> (PromptTokenizer, TextEncoder) {
    let dir = common::fixture(name);
    let tok = PromptTokenizer::load(&dir.join("tokenizer/tokenizer.json")).expect("tokenizer.json");
    let enc = reelfarm_models::weights::load_component(
        &dir.join("text_encoder"),
        DType::F32,
        &Device::Cpu,
        TextEncoder::load,
    )
    .expect("loading the text encoder");
    (tok, enc)
}

fn ids_of(t: &Tensor) -> Vec<i64> {
    t.flatten_all().unwrap().to_vec1::<i64>().unwrap()
}

#[test]
fn prompt_ids_match_the_tokenizer() {
    for name in common::CONFIGS {
        let (tok, _) = load(name);
        let refs = common::references(name);
        let call = common::call(name);
        let max_len = call["max_sequence_length"].as_u64().unwrap() as usize;
        for (key, ids_key) in [
            ("prompt", "text.prompt_ids"),
            ("negative_prompt", "text.negative_ids"),
        ] {
            let prompt = call[key].as_str().unwrap();
            let (ids, n) = tok.encode(prompt, max_len).unwrap();
            let theirs = ids_of(&refs[ids_key]);
            let ours: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
            assert_eq!(ours, theirs, "{name} {key}");
            assert_eq!(
                n,
                theirs.iter().filter(|&&i| i != 0).count(),
                "{name} {key}: real tokens"
            );
        }
    }
}

#[test]
fn truncation_keeps_the_closing_token() {
    let (tok, _) = load(common::CONFIGS[0]);
    let (full, n) = tok
        .encode("a red ball bouncing on the wooden floor", 64)
        .unwrap();
    assert!(n > 4);
    let (short, m) = tok
        .encode("a red ball bouncing on the wooden floor", 4)
        .unwrap();
    assert_eq!(m, 4);
    assert_eq!(&short[..3], &full[..3]);
    assert_eq!(short[3], full[n - 1], "the last id is still </s>");
}

#[test]
fn prompt_embeds_match_diffusers() {
    for name in common::CONFIGS {
        let (tok, enc) = load(name);
        let refs = common::references(name);
        let call = common::call(name);
        let max_len = call["max_sequence_length"].as_u64().unwrap() as usize;
        for (key, embeds_key) in [
            ("prompt", "text.prompt_embeds"),
            ("negative_prompt", "text.negative_embeds"),
        ] {
            let prompt = call[key].as_str().unwrap();
            let ours = prompt_embeds(&tok, &enc, prompt, max_len, &Device::Cpu).unwrap();
            let diff = common::max_abs_diff(&ours, &refs[embeds_key]);
            eprintln!("{name} {embeds_key}: max |ours - diffusers| = {diff:e}");
            common::assert_close(
                &format!("{name} {embeds_key}"),
                &ours,
                &refs[embeds_key],
                1e-4,
            );
        }
    }
}

#[test]
fn forward_takes_i64_ids() {
    let name = common::CONFIGS[0];
    let (tok, enc) = load(name);
    let refs = common::references(name);
    let ids = &refs["text.prompt_ids"];
    let mask = ids.ne(0i64).unwrap().to_dtype(DType::I64).unwrap();
    let hidden = enc.forward(ids, &mask).unwrap();
    let (u32_ids, n) = tok
        .encode(
            common::call(name)["prompt"].as_str().unwrap(),
            ids.dim(1).unwrap(),
        )
        .unwrap();
    let u32_ids = Tensor::from_vec(u32_ids, (1, ids.dim(1).unwrap()), &Device::Cpu).unwrap();
    let again = enc.forward(&u32_ids, &mask).unwrap();
    common::assert_close("i64 vs u32 ids", &hidden, &again, 0.0);
    let real = hidden.narrow(1, 0, n).unwrap();
    let theirs = refs["text.prompt_embeds"].narrow(1, 0, n).unwrap();
    common::assert_close("forward, real rows", &real, &theirs, 1e-4);
}

#[test]
fn a_tokenizer_that_is_not_json_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, "this is not { json").unwrap();
    let err = PromptTokenizer::load(&path).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    let missing = PromptTokenizer::load(&dir.path().join("absent.json"));
    assert!(missing.is_err());
}
