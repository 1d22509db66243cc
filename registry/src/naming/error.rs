//! Domain errors of the naming model, split by what the caller must do about them.
//!
//! These values cross the Raft log (a rejected command's answer is replicated state), so they
//! are serialisable and carry the exact Nacos message text.

use serde::{Deserialize, Serialize};

/// A naming operation the domain refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NamingError {
    /// The request is malformed or conflicts with stored data (Nacos answers 400).
    #[error("{0}")]
    BadRequest(String),
    /// A read named something that does not exist (Nacos answers 404).
    #[error("{0}")]
    NotFound(String),
    /// A conditional write found the stored value changed (409).
    #[error("{0}")]
    Conflict(String),
}

impl From<nacre_ring::configs::ParamError> for NamingError {
    fn from(e: nacre_ring::configs::ParamError) -> Self {
        Self::BadRequest(e.0)
    }
}

impl NamingError {
    /// Shorthand for a 400-class error.
    pub fn bad(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }

    /// Shorthand for a 404-class error.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }
}
