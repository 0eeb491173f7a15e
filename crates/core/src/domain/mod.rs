//! The domain: plain data and pure decisions over it, no I/O.

pub mod drift;
pub mod housekeeping;
pub mod model;
pub mod plan;
pub mod policy;
pub mod pools;
pub mod reserved;
pub mod savings;
pub mod state;

#[cfg(test)]
mod fixtures;
