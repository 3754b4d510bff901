//! How a failed attempt is reported: its error text, and whether another attempt can
//! succeed (TaskResult.error_class) with a short code for the cause (error_code).
//!
//! Permanent: a model whose files cannot be loaded (`model_load`), an assignment this
//! worker refuses (`spec_refused`: a spec outside the bounds or the model's rules), out of
//! device memory at batch 1 (`out_of_memory`). Everything else is transient (`task_error`,
//! or `cancelled`): the coordinator retries it on a new attempt.

use reelfarm_proto::v1;

use crate::pipeline::PipelineError;

/// The code of an attempt stopped for a preemption: handed back, not reported as failed.
pub const PREEMPTED: &str = "preempted";

/// A failed attempt, as the worker reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFailure {
    pub class: v1::ErrorClass,
    /// `[a-z0-9_]`, e.g. "model_load".
    pub code: &'static str,
    pub message: String,
}

impl TaskFailure {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            class: v1::ErrorClass::Transient,
            code: "task_error",
            message: message.into(),
        }
    }

    pub fn permanent(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            class: v1::ErrorClass::Permanent,
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Errors without a class of their own (I/O, artifacts, decoding inputs) are transient.
impl From<String> for TaskFailure {
    fn from(message: String) -> Self {
        Self::transient(message)
    }
}

impl From<&str> for TaskFailure {
    fn from(message: &str) -> Self {
        Self::transient(message)
    }
}

impl From<PipelineError> for TaskFailure {
    fn from(e: PipelineError) -> Self {
        let message = e.to_string();
        match e {
            PipelineError::ModelLoad(_) => Self::permanent("model_load", message),
            PipelineError::OutOfMemory(_) => Self::permanent("out_of_memory", message),
            PipelineError::Cancelled => Self {
                code: "cancelled",
                ..Self::transient(message)
            },
            PipelineError::Preempted { .. } => Self {
                code: PREEMPTED,
                ..Self::transient(message)
            },
            _ => Self::transient(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_load_and_out_of_memory_are_permanent_the_rest_transient() {
        let class = |e: PipelineError| {
            let f = TaskFailure::from(e);
            (f.class, f.code)
        };
        assert_eq!(
            class(PipelineError::ModelLoad("bad header".into())),
            (v1::ErrorClass::Permanent, "model_load")
        );
        assert_eq!(
            class(PipelineError::OutOfMemory(
                "CUDA_ERROR_OUT_OF_MEMORY".into()
            )),
            (v1::ErrorClass::Permanent, "out_of_memory")
        );
        assert_eq!(
            class(PipelineError::Engine("device: launch failed".into())),
            (v1::ErrorClass::Transient, "task_error")
        );
        assert_eq!(
            class(PipelineError::Cancelled),
            (v1::ErrorClass::Transient, "cancelled")
        );
        assert_eq!(
            TaskFailure::from("store unreachable".to_string()).class,
            v1::ErrorClass::Transient
        );
    }
}
