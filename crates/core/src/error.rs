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

    /// The service answered that it did not do it (throttled, invalid, denied: a 4xx answer).
    /// Not after a timeout or a 5xx answer, where the change may have been made all the same.
    pub fn refused(&self) -> bool {
        // The retried codes that come with a 5xx answer; every other code here is a 4xx one.
        const MAYBE_DONE: &[&str] =
            &["ServiceUnavailable", "SlowDown", "InternalError", "InternalFailure", "Unavailable"];
        match self.code.as_deref() {
            None => false,
            Some(c) if MAYBE_DONE.contains(&c) => false,
            Some(c) => !self.transient || THROTTLING_CODES.contains(&c),
        }
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

#[cfg(test)]
mod tests {
    use super::AwsError;

    #[test]
    fn refused_is_an_answer_that_nothing_was_done() {
        let answered = |code: &str, http_5xx| {
            AwsError::new("autoscaling:UpdateAutoScalingGroup", Some(code.into()), None, http_5xx)
        };
        let table = [
            (answered("Throttling", false), true),
            (answered("ValidationError", false), true),
            (answered("AccessDenied", false), true),
            (answered("ResourceContention", false), true),
            (answered("InternalFailure", true), false),
            (answered("ServiceUnavailable", true), false),
            (answered("SomethingNew", true), false),
            (AwsError::unanswered("autoscaling:UpdateAutoScalingGroup", "timed out".into()), false),
        ];
        for (error, refused) in table {
            assert_eq!(error.refused(), refused, "{error}");
        }
    }
}
