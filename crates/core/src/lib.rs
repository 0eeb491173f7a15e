//! asg-optimizer's core: the domain (pure planning over plain data), the messages, the
//! configuration, the port to AWS and its SDK adapter, and the three functions' workflows.

pub mod aws;
pub mod batch;
pub mod cloud;
pub mod config;
pub mod error;
pub mod launch;
pub mod message;
pub mod model;
pub mod plan;
pub mod scan;
pub mod swap;

/// Seconds since the Unix epoch, now.
pub fn now() -> model::Epoch {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}
