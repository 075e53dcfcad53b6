//! Wire types shared by Steward's server, client and CLI: inventory records,
//! credentials, audit entries and the error catalogue.
#![deny(missing_docs)]

pub mod apply;
pub mod approval;
pub mod audit;
pub mod behaviour;
pub mod credentials;
pub mod delegation;
pub mod error;
pub mod inventory;
pub mod mcp;
pub mod policy;
pub mod quota;
pub mod recert;
pub mod webhook;

pub use apply::*;
pub use approval::*;
pub use audit::*;
pub use behaviour::*;
pub use credentials::*;
pub use delegation::*;
pub use error::*;
pub use inventory::*;
pub use mcp::*;
pub use policy::*;
pub use quota::*;
pub use recert::*;
pub use webhook::*;
