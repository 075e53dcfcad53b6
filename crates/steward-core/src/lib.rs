//! Steward's domain: the rules about identities, their lifecycle, spawning and
//! credentials, as pure functions over data. This crate does no I/O and never
//! reads the clock: `now` is always passed in.
#![deny(missing_docs)]

pub mod approval;
pub mod behaviour;
pub mod context;
pub mod credentials;
pub mod error;
pub mod lifecycle;
pub mod quota;
pub mod risk;
pub mod spawn;
pub mod validate;

pub use context::{AuditEvent, ChangeContext, InventoryRules};
pub use error::{Error, Result};
