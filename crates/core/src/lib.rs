//! asg-optimizer's core: the domain (pure planning over plain data), the messages, the
//! configuration, the port to AWS and its SDK adapter, and the three functions' workflows.

pub mod aws;
pub mod batch;
pub mod cloud;
pub mod config;
pub mod drift;
pub mod error;
pub mod interrupt;
pub mod launch;
pub mod message;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod policy;
pub mod pools;
pub mod reserved;
pub mod savings;
pub mod scan;
pub mod swap;

/// Seconds since the Unix epoch, now.
pub fn now() -> model::Epoch {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

/// What a function builds once per cold start and hands to every invocation.
#[derive(Debug, Clone)]
pub struct App<C> {
    pub cloud: C,
    pub config: config::Config,
    /// The calls `cloud` makes, when it is the SDK adapter built with them.
    pub calls: aws::ApiCalls,
    /// Write EMF metric documents to stdout: on under Lambda, off when the handlers run
    /// in-process (tests, demo), where stdout is for people.
    pub emit_metrics: bool,
}

impl App<aws::AwsCloud> {
    /// Reads the function's configuration (failing with the variable's name) and builds the SDK
    /// clients from the standard AWS environment.
    pub async fn from_env(function: config::Function) -> Result<Self, error::ConfigError> {
        let config = config::Config::from_env(function)?;
        let calls = aws::ApiCalls::default();
        let cloud = aws::AwsCloud::from_env(calls.clone()).await;
        Ok(App { cloud, config, calls, emit_metrics: true })
    }
}
