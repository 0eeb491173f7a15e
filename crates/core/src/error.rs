//! Errors of the AWS adapters, sorted once into "retry it" or "don't".

use std::fmt;

/// A failed AWS call. Keeps the service's error code (never a stringified SDK error) so that
/// callers branch on codes, and whether retrying the same call later can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AwsError {
    /// `service:Operation`, e.g. `ec2:CreateFleet`.
    pub operation: &'static str,
    /// The service's error code (`Throttling`, `InvalidInstanceID.NotFound`, ...), when it sent one.
    pub code: Option<String>,
    pub message: Option<String>,
    /// Throttling, 5xx, timeouts and connection failures: the same call may succeed later.
    pub transient: bool,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {} ({})",
            self.operation,
            self.code.as_deref().unwrap_or("no error code"),
            self.message.as_deref().unwrap_or("no message"),
        )
    }
}

const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "Unavailable",
    // Auto Scaling: another change to the group is still being applied.
    "ResourceContention",
    "ResourceContentionFault",
];

impl AwsError {
    pub fn new(operation: &'static str, code: Option<String>, message: Option<String>, http_5xx: bool) -> Self {
        let transient = http_5xx || code.as_deref().is_some_and(|c| THROTTLING_CODES.contains(&c));
        Self { operation, code, message, transient }
    }

    /// A failure before any answer from the service (timeout, connection refused, ...).
    pub fn unanswered(operation: &'static str, message: String) -> Self {
        Self { operation, code: None, message: Some(message), transient: true }
    }

    pub fn code(&self) -> &str {
        self.code.as_deref().unwrap_or("")
    }

    /// The service says an id does not exist (`InvalidInstanceID.NotFound`, `...Malformed`).
    pub fn is_not_found(&self) -> bool {
        let code = self.code();
        code.ends_with(".NotFound")
            || code.ends_with(".VersionNotFound")
            || code.ends_with(".Malformed")
            || code == "InvalidInstanceID"
    }
}

/// Errors reading configuration: the function refuses to start and says which variable is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("environment variable {name} has an invalid value {value:?}: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
}
