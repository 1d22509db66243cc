//! A nacre registry node: the Nacos 1.x naming Open API served from an in-memory ephemeral
//! store (Distro) and a Raft-replicated persistent store kept in SQLite.

pub mod naming;
