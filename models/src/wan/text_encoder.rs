//! UMT5 encoder and its tokenizer (transformers `UMT5EncoderModel`, `tokenizer.json`).
