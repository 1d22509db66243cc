//! The zlib C API under the name flate2's `zlib-ng` backend imports (`libz_ng_sys`).
//!
//! flate2 calls the same functions and types (`deflateInit2_`, `z_stream`, …) whichever zlib
//! backs it, so re-exporting `libz-sys` is enough; see `Cargo.toml` for why this crate exists.
pub use libz_sys::*;
