//! `reelfarm words`: the prompt words the scene parser understands, by kind. Any other word
//! is reported back in the job's `scene.ignored` and never fails a job.

use crate::output::Format;

pub fn run(format: Format) -> anyhow::Result<()> {
    let vocabulary = reelfarm_worker::pipeline::scene::vocabulary::vocabulary();
    match format {
        Format::Json => {
            let map: serde_json::Map<String, serde_json::Value> = vocabulary
                .into_iter()
                .map(|(kind, words)| (kind.to_string(), serde_json::json!(words)))
                .collect();
            println!("{}", serde_json::Value::Object(map));
        }
        Format::Text => {
            for (kind, words) in vocabulary {
                println!("{kind}: {}", words.join(", "));
            }
        }
    }
    Ok(())
}
