//! Authentication and authorization, Nacos style: users with hashed passwords, roles,
//! permissions on `namespace:group:naming/service` resources, signed access tokens.
//!
//! Rules (each with its test):
//! - **A1 — one check, one place.** Every public route of a node goes through
//!   [`crate::api::auth::guard`] when auth is on; what each route needs is decided by one
//!   table there (`required`). Routes it does not know need an authenticated user and then
//!   answer 404 as before: nothing is let through for being unknown. *Tests:* `tests/auth.rs`.
//! - **A2 — no trust by header.** Only the cluster secret (peers replaying a forwarded write)
//!   or a valid credential passes; a `User-Agent` or `serverIdentity`-style header proves
//!   nothing. *Tests:* `tests/auth.rs` `cve_style_headers_and_odd_paths_never_grant_access`.
//! - **A3 — tokens.** A token is the user, the user's generation and an expiry, signed with
//!   HMAC-SHA256 under a key generated per cluster at first start and replicated through Raft
//!   (no default key exists). Changing a user's password or deleting the user bumps or drops
//!   its generation, so every token issued before stops working. *Tests:*
//!   `token::tests::a3_*`, `model::tests::a3_password_changes_and_deletions_move_the_generation_on`;
//!   `tests/auth.rs` `wrong_forged_and_stale_credentials_are_refused_and_change_nothing`.
//! - **A4 — passwords** are stored as Argon2id hashes only; hashing and checking run on the
//!   blocking pool; a password proven correct is remembered for a minute under an HMAC tag
//!   (never in clear), so clients sending it with every request do not pay a hash each time.
//!   *Tests:* `password::tests::a4_*`.
//! - **A5 — permissions.** `ROLE_ADMIN` may do anything; others need a permission of one of
//!   their roles whose resource pattern (`*` matches any run of characters) matches the
//!   request's resource and whose action (`r`, `w`, `rw`) contains the request's. User, role
//!   and permission management is admin-only. *Tests:*
//!   `model::tests::a5_permissions_match_by_pattern_and_action_and_admin_passes`;
//!   `tests/auth.rs` `permission_on_one_namespace_gives_nothing_in_another`.
//! - **A6 — throttling.** After [`throttle::MAX_FAILURES`] failed logins within a minute, a
//!   user name, and separately a client address, is refused for the rest of that minute.
//!   *Tests:* `throttle::tests::a6_five_failures_lock_a_user_and_an_address_for_the_window`.

pub mod model;
pub mod password;
pub mod throttle;
pub mod token;

pub use model::{AuthCommand, AuthState, ADMIN_ROLE, ADMIN_USER};
