//! Validation of names, addresses, weights and metadata sent by clients.
