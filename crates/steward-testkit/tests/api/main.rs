//! The integration suite: a real server on a temporary store, driven over
//! HTTP through the typed client, on SQLite and on PostgreSQL. One binary;
//! this file only lists the modules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod access;
mod apply;
mod approvals;
mod audit_log;
mod audit_read;
mod authzen;
mod bad_input;
mod behaviour;
mod cluster;
mod dashboard;
mod decisions;
mod delegation;
mod inventory;
mod lifecycle;
mod mcp;
mod operations;
mod policy_admin;
mod quotas;
mod recert;
mod support;
mod webhooks;
