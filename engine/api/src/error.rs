use std::fmt::Display;

/// Errors the engine reports. Each kind maps to a process exit code, so scripts can tell a
/// mistake in the pipeline (2) from an unreachable service (3) and a failure at run time (1).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The pipeline file or its input is wrong: the user must change something. Exit code 2.
    #[error("{0}")]
    Config(String),
    /// A service (Kafka, the object store) cannot be reached or refuses our credentials. Exit code 3.
    #[error("{0}")]
    Unavailable(String),
    /// Something failed while running. Exit code 1.
    #[error("{0}")]
    Runtime(String),
}

impl EngineError {
    pub fn config(msg: impl Display) -> Self {
        EngineError::Config(msg.to_string())
    }
    pub fn unavailable(msg: impl Display) -> Self {
        EngineError::Unavailable(msg.to_string())
    }
    pub fn runtime(msg: impl Display) -> Self {
        EngineError::Runtime(msg.to_string())
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Config(_) => 2,
            EngineError::Unavailable(_) => 3,
            EngineError::Runtime(_) => 1,
        }
    }

    /// Prefixes the message with some context, keeping the kind.
    pub fn context(self, ctx: impl Display) -> Self {
        match self {
            EngineError::Config(m) => EngineError::Config(format!("{ctx}: {m}")),
            EngineError::Unavailable(m) => EngineError::Unavailable(format!("{ctx}: {m}")),
            EngineError::Runtime(m) => EngineError::Runtime(format!("{ctx}: {m}")),
        }
    }
}

impl From<arrow::error::ArrowError> for EngineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        EngineError::Runtime(e.to_string())
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
