//! The four workflows, one per function: each reads fresh what it depends on, decides with the
//! domain, and acts through the [`crate::cloud::Cloud`] port. They share steps through
//! [`crate::actions`] and never import one another.

pub mod interrupt;
pub mod launch;
pub mod scan;
pub mod swap;
