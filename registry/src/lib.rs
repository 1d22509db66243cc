//! A nacre registry node: the Nacos 1.x naming Open API served from an in-memory ephemeral
//! store (Distro) and a Raft-replicated persistent store kept in SQLite.

pub mod api;
pub mod auth;
pub mod changes;
pub mod clock;
pub mod configs;
pub mod distro;
pub mod health;
pub mod listener;
pub mod membership;
pub mod metrics;
pub mod naming;
pub mod node;
pub mod overload;
pub mod peer;
pub mod push;
pub mod raft;
pub mod server;

pub use server::{load_or_create_secret, run, ServeError};
