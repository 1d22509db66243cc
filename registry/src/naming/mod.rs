//! The naming domain: services, clusters, instances, selection and validation. No I/O.

pub mod error;
pub mod intern;
pub mod model;
pub mod persistent;
pub mod select;
pub mod validate;

pub use error::NamingError;
pub use model::*;
