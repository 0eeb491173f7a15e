//! asg-optimizer's core, in layers that import only downwards:
//!
//! - [`domain`]: plain data and pure decisions (what a group's tags say, which instances to
//!   replace, which pools to try, reservation coverage, drift, housekeeping), table-tested;
//! - [`message`], [`config`], [`error`], [`metrics`]: the messages between the functions and how
//!   handling one ends, the configuration, the error types, the EMF metrics;
//! - [`cloud`]: the port, every AWS call the logic makes; [`aws`] implements it with the SDK;
//! - [`actions`]: the Cloud steps several workflows share;
//! - [`workflows`]: scan, launch, swap, interrupt, each over any [`cloud::Cloud`], never
//!   importing one another;
//! - [`lambda`]: the plumbing the function crates compose (the SDK adapter, the clock, the SQS
//!   batch runner); no workflow imports it.

pub mod actions;
pub mod aws;
pub mod cloud;
pub mod config;
pub mod domain;
pub mod error;
pub mod lambda;
pub mod message;
pub mod metrics;
pub mod workflows;
