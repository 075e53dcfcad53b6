//! Decisions on Cedar (in progress).
