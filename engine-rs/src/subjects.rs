//! Transitional re-export of [`crate::contract`] (generated from
//! `schemas/bridge/v1/contract.toml`); callers move to `contract::` directly.

pub use crate::contract::*;
