//! Dev-only: a simulated AWS account and the deterministic simulation that searches it.
//!
//! - [`world`]: the account in memory, with AWS's semantics where moto is kinder (see its
//!   module documentation), and [`sqs`], the queues;
//! - [`cloud`]: the core's `Cloud` port over it, with injected throttling and 5xx, ownership
//!   checked before every change and the invariants after every call ([`check`]);
//! - [`driver`]: one seed, one random account and one random life for it, the four functions'
//!   real handlers run on it under a deterministic executor that interleaves their calls and
//!   crashes them between any two.

pub mod catalog;
pub mod check;
pub mod cloud;
pub mod driver;
pub mod iam;
pub mod rng;
pub mod sqs;
pub mod world;

/// When every simulated account starts (2027-01-15 08:00:00 UTC).
pub const START: asg_core::domain::model::Epoch = 1_800_000_000;
