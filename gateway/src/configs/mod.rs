//! Config listeners held at the edge: the gateway answers `POST /nacos/v1/cs/configs/listener`
//! itself, so a fleet's 30-second long-polls park on the gateway and never on a node.
//!
//! The gateway keeps the md5 of the configs it has heard of ([`table`]): every node puts each
//! config change it applies on its change feed with the new md5 and the Raft log index it is
//! current as of, and a key no feed has mentioned is fetched from a node. A parked listener is
//! answered the moment a listened key's md5 differs from the client's, or empty at its hold
//! deadline ([`poll`]); the listener protocol itself (parsing, holds, the reply, rule C6) is
//! the one the nodes use, `nacre_ring::configs`. `GET` on the same path is Nacos's listener
//! query, answered from the polls parked here merged with every node's ([`listeners`]).
//!
//! Rules (each with its test):
//! - **L1 — knowledge comes from unbroken feeds.** The table holds only what was learned since
//!   its last reset. Losing any node's feed, a feed reset (the node restarted, or the gateway
//!   fell behind its log), and a change of the node set reset it: everything is forgotten, a
//!   fetch in flight is not kept, and every parked listener looks again. *Tests:*
//!   `table::tests::l1_*`.
//! - **L2 — newest revision wins.** Every node reports every config change, and nodes apply
//!   at different times: an md5 is replaced only by one with a higher revision, so a lagging
//!   node never takes a key back to an older md5. A fetch answer counts as of the revision the
//!   node had applied when it read (never newer). *Tests:* `table::tests::l2_*`.
//! - **L3 — unknown keys are fetched.** A listened key the table does not know is fetched
//!   from a ready node (`/nacre/internal/configs/md5`) before comparing; nothing is answered
//!   from a guess. *Tests:* `table::tests::l2_*` (fetch merge), `tests/configs.rs`
//!   `a_gateway_restarted_mid_poll_loses_no_notification` (a restarted gateway fetches and
//!   answers at once).
//! - **L4 — never a stale "no change".** A listener is held at the edge only while every node
//!   in rotation has its feed followed. Otherwise, or when a fetch fails, it is passed to a
//!   node for the rest of its hold (a parked one too, the moment a feed is lost), with the
//!   client's headers a node reads from a poll (`nacre_ring::configs::listen::READ_HEADERS`,
//!   all a parked poll keeps of them), and that node's answer is relayed; a passed poll the
//!   node leaves unanswered past the hold is asked once more, at once, of another node before
//!   the gateway answers "no change". *Tests:*
//!   `tests/configs.rs` `a_gateway_that_loses_a_feed_passes_listeners_to_a_node_and_takes_them_back`.
//! - **L5 — bounded.** The table keeps at most [`table::MAX_KEYS`] keys; past that it resets
//!   (rule L1) rather than evicting one key, since a forgotten key is simply fetched again but
//!   a fetch must never land on a key whose newer md5 was evicted. *Tests:*
//!   `table::tests::l5_*`.
//! - **L6 — credentials are a node's call.** While nodes require credentials, each poll is
//!   first sent to a node with `Long-Pulling-Timeout-No-Hangup` (the node checks the
//!   credential and compares at once); a refusal or a change is relayed, and only a clean
//!   "no change" is parked at the edge. *Tests:* `tests/auth.rs`
//!   `behind_the_gateway_a_config_listener_is_checked_by_a_node_then_held_at_the_edge`.
//! - **L7 — cached reads are judged by the table.** A node's answer to a config read (200 or
//!   404) is kept with its md5 and the revision the node read it at, and served only while
//!   every feed is followed, no node requires credentials, and the table knows the key with
//!   that md5 at a revision no newer than the answer's. A config write through the gateway
//!   drops every cached read before its client hears the answer, and a read fetched before
//!   that write is not stored (the writer reads its own write). Tag, beta and search reads
//!   are never cached. *Tests:* `reads::tests::l7_*`, `tests/configs.rs`
//!   `config_reads_through_the_gateway_are_cached_until_the_config_changes`.
//! - **L8 — gray releases are a node's call.** Which variant a client sees (rule C7) depends on
//!   its address (beta) and its `Vipserver-Tag`, which only nodes can judge. A poll with
//!   `Vipserver-Tag`, or naming a key the table knows to have a beta, is passed to a node with
//!   the client's address asserted (a parked one too, the moment a beta appears); reads of a
//!   key with a beta are never served from the cache. *Tests:* `table::tests::l8_*`,
//!   `tests/configs.rs` `beta_and_tag_variants_through_the_gateway_and_on_a_node`.

pub mod listeners;
pub mod poll;
pub mod reads;
pub mod table;

pub use poll::PollRequest;
pub use reads::ConfigReads;
pub use table::Md5Table;
