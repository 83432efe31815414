use std::error::Error as StdError;
use std::fmt::{self, Display};

/// The error a [`EngineError`] wraps, if any.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, as a program can tell: the process exit code, and the remediation hint the
/// command line adds, come from the kind, never from the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The pipeline file or its input is wrong: the user must change something. Exit code 2.
    Config,
    /// A service cannot be reached, refuses our credentials, or lacks the topic or bucket the
    /// pipeline names. Exit code 3, except [`Reason::NotFound`]: 2, as a missing topic or bucket
    /// is fixed in the pipeline (or by creating it).
    Unavailable { service: Service, reason: Reason },
    /// Something failed while running. Exit code 1.
    Runtime,
    /// Errors already printed (such as `engine validate`'s, one line each); only the exit code
    /// is left to give.
    Reported(i32),
}

/// The service an [`ErrorKind::Unavailable`] error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Kafka,
    /// The object store a sink writes to (or `engine report` reads).
    ObjectStore,
    /// The object store holding the pipeline's checkpoints.
    CheckpointStore,
    /// Not said (errors made with [`EngineError::unavailable`]).
    Other,
}

/// Why a service is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The connection failed (refused, reset, no route, DNS).
    Unreachable,
    /// The service did not answer in time.
    Timeout,
    /// The service refused our credentials or their rights.
    Denied,
    /// The bucket or topic does not exist.
    NotFound,
    /// Not said.
    Other,
}

impl ErrorKind {
    /// The process exit code for an error of this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Config => 2,
            ErrorKind::Unavailable {
                reason: Reason::NotFound,
                ..
            } => 2,
            ErrorKind::Unavailable { .. } => 3,
            ErrorKind::Runtime => 1,
            ErrorKind::Reported(code) => code,
        }
    }
}

/// Errors the engine reports: a kind (which gives the process exit code, so scripts can tell a
/// mistake in the pipeline (2) from an unreachable service (3) and a failure at run time (1)),
/// the one-line message, and, when known, the node, the configuration key, the service's
/// address and the error that caused it ([`std::error::Error::source`]).
///
/// The message never repeats a configured value: a secret pasted into the wrong key must not
/// show.
#[derive(Debug)]
pub struct EngineError {
    kind: ErrorKind,
    message: String,
    key: Option<String>,
    node: Option<String>,
    address: Option<String>,
    source: Option<BoxError>,
}

impl EngineError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Display) -> Self {
        EngineError {
            kind,
            message: message.to_string(),
            key: None,
            node: None,
            address: None,
            source: None,
        }
    }

    /// The pipeline file or its input is wrong ([`ErrorKind::Config`]).
    pub fn config(msg: impl Display) -> Self {
        Self::new(ErrorKind::Config, msg)
    }

    /// A bad value for the configured `key`: the key's path inside the node
    /// (`aggregates[0].fn`), so the pipeline loader can point at its line. Shown as
    /// ``"`key`: message"``; the message never repeats the value.
    pub fn invalid(key: impl Display, message: impl Display) -> Self {
        Self::config(message).for_key(key)
    }

    /// A service is unavailable, for a reason not said.
    pub fn unavailable(msg: impl Display) -> Self {
        Self::new(
            ErrorKind::Unavailable {
                service: Service::Other,
                reason: Reason::Other,
            },
            msg,
        )
    }

    /// `service`, at `address` (brokers, endpoint), is unavailable for `reason`. The address
    /// lets the command line say how to start a local service.
    pub fn service(
        service: Service,
        reason: Reason,
        address: impl Display,
        message: impl Display,
    ) -> Self {
        let mut e = Self::new(ErrorKind::Unavailable { service, reason }, message);
        e.address = Some(address.to_string());
        e
    }

    /// Something failed while running ([`ErrorKind::Runtime`]).
    pub fn runtime(msg: impl Display) -> Self {
        Self::new(ErrorKind::Runtime, msg)
    }

    /// Errors already printed; only the exit code `code` is left to give.
    pub fn reported(code: i32) -> Self {
        Self::new(ErrorKind::Reported(code), "errors reported above")
    }

    /// Attaches the error that caused this one.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Names the node the error is about.
    pub fn with_node(mut self, node: impl Display) -> Self {
        self.node = Some(node.to_string());
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The configuration key the error is about (`rules[2].when`), while the message does not
    /// show it yet: [`EngineError::context`] folds it into the message.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The node the error is about, if known.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The address of the service an [`ErrorKind::Unavailable`] error is about, if known.
    pub fn address(&self) -> Option<&str> {
        self.address.as_deref()
    }

    /// The message, without the key (which `Display` shows before it).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }

    /// Ties a configuration error to the key it is about (`rules[2]`, `schema.total`), so the
    /// pipeline loader points at that key's line. An error already about a key inside it keeps
    /// that key under this one; errors of other kinds are unchanged.
    pub fn for_key(mut self, key: impl Display) -> Self {
        if self.kind == ErrorKind::Config {
            self.key = Some(match self.key.take() {
                Some(inner) => format!("{key}.{inner}"),
                None => key.to_string(),
            });
        }
        self
    }

    /// Prefixes the message with some context, keeping the kind; the key, if any, becomes part
    /// of the message.
    pub fn context(mut self, ctx: impl Display) -> Self {
        if matches!(self.kind, ErrorKind::Reported(_)) {
            return self;
        }
        self.message = match self.key.take() {
            Some(key) => format!("{ctx}: `{key}`: {}", self.message),
            None => format!("{ctx}: {}", self.message),
        };
        self
    }
}

impl Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "`{key}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl StdError for EngineError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<arrow::error::ArrowError> for EngineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        EngineError::runtime(&e).with_source(e)
    }
}

/// Whether `address` (a broker list, an endpoint URL) is on this machine, where the local stack
/// (`scripts/stack up`) runs. An empty address, or one such as `AWS S3`, is not.
pub fn is_local_address(address: &str) -> bool {
    let first = address.split(',').next().unwrap_or_default().trim();
    let host_port = first.rsplit("://").next().unwrap_or(first);
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A remediation hint, in parentheses, for an address on this machine, where the local stack
/// (`scripts/stack up`) runs; nothing for any other address, where that advice would mislead.
pub fn local_stack_hint(address: &str, hint: &str) -> String {
    if is_local_address(address) {
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
            assert!(is_local_address(local), "{local}");
        }
        for remote in [
            "kafka-1.prod:9092",
            "https://s3.eu-west-1.amazonaws.com",
            "10.0.0.5:9092",
            "",
            "AWS S3",
        ] {
            assert_eq!(local_stack_hint(remote, "x"), "", "{remote}");
            assert!(!is_local_address(remote), "{remote}");
        }
    }

    #[test]
    fn texts_and_exit_codes_are_those_of_each_kind() {
        let e = EngineError::config("bad");
        assert_eq!((e.to_string(), e.exit_code()), ("bad".into(), 2));
        assert_eq!(e.kind(), ErrorKind::Config);
        let e = EngineError::invalid("aggregates[0].fn", "unknown function");
        assert_eq!(e.to_string(), "`aggregates[0].fn`: unknown function");
        assert_eq!(
            (e.key(), e.message(), e.exit_code()),
            (Some("aggregates[0].fn"), "unknown function", 2)
        );
        let e = EngineError::unavailable("down");
        assert_eq!((e.to_string(), e.exit_code()), ("down".into(), 3));
        let e = EngineError::runtime("broke");
        assert_eq!((e.to_string(), e.exit_code()), ("broke".into(), 1));
        assert_eq!(e.kind(), ErrorKind::Runtime);
        let e = EngineError::reported(2);
        assert_eq!(
            (e.to_string(), e.exit_code()),
            ("errors reported above".into(), 2)
        );
        for (reason, code) in [
            (Reason::Unreachable, 3),
            (Reason::Timeout, 3),
            (Reason::Denied, 3),
            (Reason::Other, 3),
            (Reason::NotFound, 2),
        ] {
            let e = EngineError::service(Service::Kafka, reason, "127.0.0.1:9092", "m");
            assert_eq!(e.exit_code(), code, "{reason:?}");
            assert_eq!(e.address(), Some("127.0.0.1:9092"));
        }
    }

    #[test]
    fn keys_nest_and_context_folds_them_into_the_message() {
        let e = EngineError::invalid("fn", "unknown").for_key("aggregates[0]");
        assert_eq!(e.key(), Some("aggregates[0].fn"));
        assert_eq!(e.to_string(), "`aggregates[0].fn`: unknown");
        let e = EngineError::config("no such column").for_key("rules[2]");
        assert_eq!(e.to_string(), "`rules[2]`: no such column");
        let e = e.context("p.toml:3: node `r`");
        assert_eq!(
            e.to_string(),
            "p.toml:3: node `r`: `rules[2]`: no such column"
        );
        assert_eq!((e.key(), e.kind()), (None, ErrorKind::Config));
        // Only configuration errors are about a key.
        let e = EngineError::runtime("x").for_key("k");
        assert_eq!((e.key(), e.to_string()), (None, "x".into()));
        // Context keeps the kind, the node, the address and the source; reported errors keep
        // their text.
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = EngineError::service(Service::ObjectStore, Reason::Unreachable, "h", "down")
            .with_node("sink")
            .with_source(io)
            .context("checkpoint location");
        assert_eq!(e.to_string(), "checkpoint location: down");
        assert_eq!(
            e.kind(),
            ErrorKind::Unavailable {
                service: Service::ObjectStore,
                reason: Reason::Unreachable
            }
        );
        assert_eq!((e.node(), e.address()), (Some("sink"), Some("h")));
        let source = StdError::source(&e).expect("a source");
        assert_eq!(
            source.downcast_ref::<std::io::Error>().map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        let e = EngineError::reported(3).context("ignored");
        assert_eq!(e.to_string(), "errors reported above");
    }
}
