//! Steward's decisions on Cedar: the schema of a tenant (Steward's entity
//! types plus declared resource types and actions), policies validated against
//! it, and decisions along a delegation chain with hints a person can act on.
//! No I/O: the server loads catalogs and entities from the store.
#![deny(missing_docs)]

mod cache;
pub mod decide;
pub mod engine;
pub mod files;
pub mod schema;
pub mod shape;
pub mod values;

pub use decide::{DecisionInput, EntityData, Outcome, Subject};
pub use engine::{Catalog, Engine, build_schema, check_policy};
pub use files::split_policies;

#[cfg(test)]
mod tests;
