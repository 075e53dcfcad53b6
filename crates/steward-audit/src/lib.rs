//! Tamper-evident log primitives (in progress).
