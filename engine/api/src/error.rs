use std::fmt::Display;

/// Errors the engine reports. Each kind maps to a process exit code, so scripts can tell a
/// mistake in the pipeline (2) from an unreachable service (3) and a failure at run time (1).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The pipeline file or its input is wrong: the user must change something. Exit code 2.
    #[error("{0}")]
    Config(String),
    /// A configured key has a value the node cannot take. `key` is the key's path inside the
    /// node (`aggregates[0].fn`), so the pipeline loader can point at its line; the message
    /// never repeats the value. Exit code 2.
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
    /// A service (Kafka, the object store) cannot be reached or refuses our credentials. Exit code 3.
    #[error("{0}")]
    Unavailable(String),
    /// Something failed while running. Exit code 1.
    #[error("{0}")]
    Runtime(String),
    /// Errors already printed (such as `engine validate`'s, one line each); only the exit code
    /// is left to give.
    #[error("errors reported above")]
    Reported(i32),
}

impl EngineError {
    pub fn config(msg: impl Display) -> Self {
        EngineError::Config(msg.to_string())
    }
    /// A bad value for `key` (see [`EngineError::Invalid`]).
    pub fn invalid(key: impl Display, message: impl Display) -> Self {
        EngineError::Invalid {
            key: key.to_string(),
            message: message.to_string(),
        }
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
            EngineError::Config(_) | EngineError::Invalid { .. } => 2,
            EngineError::Unavailable(_) => 3,
            EngineError::Runtime(_) => 1,
            EngineError::Reported(code) => *code,
        }
    }

    /// Ties a configuration error to the key it is about (`rules[2]`, `schema.total`), so the
    /// pipeline loader points at that key's line. An error already about a key inside it keeps
    /// that key under this one; errors of other kinds are unchanged.
    pub fn for_key(self, key: impl Display) -> Self {
        match self {
            EngineError::Config(message) => EngineError::Invalid {
                key: key.to_string(),
                message,
            },
            EngineError::Invalid {
                key: inner,
                message,
            } => EngineError::Invalid {
                key: format!("{key}.{inner}"),
                message,
            },
            other => other,
        }
    }

    /// Prefixes the message with some context, keeping the kind.
    pub fn context(self, ctx: impl Display) -> Self {
        match self {
            EngineError::Config(m) => EngineError::Config(format!("{ctx}: {m}")),
            e @ EngineError::Invalid { .. } => EngineError::Config(format!("{ctx}: {e}")),
            EngineError::Unavailable(m) => EngineError::Unavailable(format!("{ctx}: {m}")),
            EngineError::Runtime(m) => EngineError::Runtime(format!("{ctx}: {m}")),
            e @ EngineError::Reported(_) => e,
        }
    }
}

impl From<arrow::error::ArrowError> for EngineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        EngineError::Runtime(e.to_string())
    }
}

/// A remediation hint, in parentheses, for an address on this machine, where the local stack
/// (`scripts/stack up`) runs; nothing for any other address, where that advice would mislead.
pub fn local_stack_hint(address: &str, hint: &str) -> String {
    let first = address.split(',').next().unwrap_or_default().trim();
    let host_port = first.rsplit("://").next().unwrap_or(first);
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if local {
        format!(" ({hint})")
    } else {
        String::new()
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_stack_is_named_only_for_local_addresses() {
        for local in [
            "127.0.0.1:9092",
            "localhost:9092,other:9092",
            "http://127.0.0.1:9000",
            "[::1]:9092",
            "PLAINTEXT://127.0.0.2:19092",
        ] {
            assert_eq!(local_stack_hint(local, "x"), " (x)", "{local}");
        }
        for remote in [
            "kafka-1.prod:9092",
            "https://s3.eu-west-1.amazonaws.com",
            "10.0.0.5:9092",
            "",
            "AWS S3",
        ] {
            assert_eq!(local_stack_hint(remote, "x"), "", "{remote}");
        }
    }
}
