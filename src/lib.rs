//! strom: a partitioned commit-log server.
//!
//! (The crate tour grows with the layers; today the crate is the partition log.)
#![deny(unsafe_code)]

pub mod error;
pub mod log;

pub use error::{Error, Result};
