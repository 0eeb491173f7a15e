//! Dev-only: an emulated AWS account on a moto server started on loopback, the three functions
//! wired to it through their real handlers, and a stand-in for Lambda's SQS event-source mapping
//! (batches of up to 10, partial batch failures, visibility timeouts, delays, dead-letter
//! redrive by the queue, optional duplicate delivery). Used by `make demo` and the tests.

pub mod account;
pub mod faults;
pub mod moto;
pub mod pipeline;
pub mod pricelist;
pub mod runtime;

pub use account::{Account, GroupView, InstanceView};
pub use faults::{Faults, Faulty};
pub use moto::Moto;
pub use pipeline::Pipeline;
