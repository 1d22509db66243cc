//! Read turns: when a server (a registry node, or the gateway in front of the nodes) has more
//! requests than it can serve, client reads wait their turn and beats do not (Issue 14,
//! graceful overload). Both tiers serve clients directly, so the rule lives here, once.
//!
//! A request's cost is mostly reading and parsing it, so an order imposed after parsing comes
//! too late: by then the work is done. Tokio polls ready connections in turn, so an overloaded
//! server spends its time on whichever connections have something to say, five thousand list
//! pollers before the few connections that carry beats. A server decides, before a
//! connection's bytes are read, whether that read may go ahead now.
//!
//! - **G3 — reads wait their turn, beats never do.** A server hands out [`ReadTurns`]: at most
//!   `per_round` reads of a connection per scheduler round. A connection takes a turn before
//!   each read of its socket, once the socket has something to read. While turns are left it
//!   reads at once: that is every read of a server that keeps up, at the cost of one atomic
//!   operation. Once a round's turns are gone, the connection peeks at its bytes. If they open
//!   a client read ([`is_read`]: a `GET` of the Nacos naming or config API other than health
//!   and metrics, [`is_client_read`]), it queues for a turn; anything else is read at once:
//!   beats, registrations, deregistrations, config publishes and listener long-polls,
//!   internal peer and gateway traffic (the gateway's beat batches among them), health and
//!   metrics, and the rest of a request already begun. A queued read keeps its bytes in the
//!   socket and costs nothing until its turn. The node applies it in its listener
//!   (`nacre_registry::listener`) before each read of a socket. The gateway applies it to each
//!   request of a client connection once its first bytes are read (`nacre_gateway::edge::
//!   turn_to_wait`, then [`ReadTurns::wait`]): they are in hand then, and nothing else of the
//!   request is done until its turn.
//! - **Pushes.** A node's UDP push is a read the node starts itself: the push task takes a
//!   turn with [`ReadTurns::take`], by the same crowd rule and queued behind the reads already
//!   waiting, before each render and for every few datagrams (first sends or resends) of a
//!   render already made (`nacre_registry::push::hub::DATAGRAMS_PER_TURN`). Beats thus go
//!   before pushes as they go before lists. A deferred push loses nothing: it carries the
//!   service as rendered at its turn, and a change made meanwhile schedules another push.
//! - **Rounds.** The [`ReadTurns::run`] task tops the turns up to `per_round`, queued reads
//!   first and in the order they queued, then yields, and tops up again only once every turn of
//!   the round has been used: the reads it let go have been polled. Tokio runs a task that
//!   yields only after its I/O driver has been polled again, so the beats (and the accepts of
//!   new connections) that became ready meanwhile are queued ahead of the next round's reads,
//!   and the run queue never holds more than a round of admitted reads. A turn granted to a
//!   read that is not polled within [`MAX_WAIT_YIELDS`] yields does not hold the next round
//!   back. When a round leaves turns unused, demand is below a round's worth and the task
//!   sleeps until a read finds none. Reads thus get the time beats leave, and a beat waits for
//!   a round's reads instead of for every connection. A round is one runtime's: the gateway,
//!   whose threads each run a runtime of their own, keeps turns per thread; a node's
//!   work-stealing runtime shares one set of turns between its workers (an idle worker steals
//!   from a busy one, and its yields come back sooner, so rounds there are shorter than one
//!   worker's queue; measured on two workers, beats still went first).
//! - **A crowd.** Turns are taken only while more than `crowd` client connections are open
//!   (`read_turns_crowd`, 256 by default on both tiers), as counted by the server when it
//!   makes its turns ([`OpenCount`]: a node's client connection budget, the gateway's
//!   connection gauge). With fewer, a beat waits behind at most one request per open
//!   connection, a few milliseconds, and queueing reads would cost more than it spares:
//!   measured on a node
//!   serving 64 closed-loop list connections, turns cost 28–33 % of its lists per second
//!   (`docs/benchmarks.md`).
//! - **Round size.** Measured on two cores at twice a CPU-limited node's capacity, 16 turns a
//!   round answered beats at p99 60–75 ms against 2.6 s with no gate; 32 let beats wait up to
//!   0.6 s and 64 up to 2.6 s (`docs/benchmarks.md`), so the default is 16 on both tiers
//!   (`read_turns_per_round`). 0 turns the gate off.
//!
//! *Tests:* `tests::g3_*` here, `listener::tests::g3_*` and `push::hub::tests::g3_*` in the
//! registry, the gateway's
//! `edge::tests::g3_*`; `tests/overload.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;

/// How many yields a round waits for the reads it let go to be polled before the next round
/// comes anyway (a read granted a turn is normally polled within one).
pub const MAX_WAIT_YIELDS: u32 = 8;

/// How many bytes of a connection's input [`is_read`] looks at: a request line up to the
/// path of the longest health or metrics URL, with room to spare.
pub const PEEK_BYTES: usize = 128;

/// Called for each read that queues for a turn (a server counts them in its metrics).
pub type OnWait = Box<dyn Fn() + Send + Sync>;

/// How many client connections a server has open now: the crowd rule's count.
pub type OpenCount = Box<dyn Fn() -> usize + Send + Sync>;

/// The turns of rule G3, shared by every connection of a server and its round task.
pub struct ReadTurns {
    per_round: usize,
    /// Open client connections up to which every read goes ahead.
    crowd: usize,
    /// How many are open now.
    open: OpenCount,
    /// Turns left this round. Queued reads wait on it in order; a top-up serves them first.
    turns: Arc<Semaphore>,
    /// Raised by a read that found no turn left: the round task must run.
    wanted: Notify,
    /// Counts each read that queues for a turn.
    on_wait: OnWait,
    /// Turns used since the start; with the turns handed out, what a round still owes.
    used: AtomicU64,
}

impl ReadTurns {
    /// Turns for `per_round` reads per scheduler round once more than `crowd` client
    /// connections are `open`, calling `on_wait` for each read that queues; `None` when 0
    /// turns the gate off.
    pub fn new(
        per_round: usize,
        crowd: usize,
        open: OpenCount,
        on_wait: OnWait,
    ) -> Option<Arc<Self>> {
        (per_round > 0).then(|| {
            Arc::new(Self {
                per_round,
                crowd,
                open,
                turns: Arc::new(Semaphore::new(per_round)),
                wanted: Notify::new(),
                on_wait,
                used: AtomicU64::new(0),
            })
        })
    }

    /// Whether a read goes ahead now: the open connections are no crowd, a turn is left this
    /// round (it is taken), or the rounds have ended (the server is stopping, and no read is
    /// left waiting for a round that will not come).
    pub fn go_ahead(&self) -> bool {
        (self.open)() <= self.crowd || self.try_take()
    }

    /// Takes a turn if one is left this round; true once the rounds have ended.
    fn try_take(&self) -> bool {
        match self.turns.try_acquire() {
            Ok(turn) => {
                turn.forget();
                self.count_use();
                true
            }
            Err(TryAcquireError::Closed) => true,
            Err(TryAcquireError::NoPermits) => false,
        }
    }

    /// Uses the turn a queued read was granted through [`ReadTurns::queue`].
    pub fn use_queued_turn(&self, turn: OwnedSemaphorePermit) {
        turn.forget();
        self.count_use();
    }

    fn count_use(&self) {
        self.used.fetch_add(1, Ordering::Relaxed);
    }

    /// The semaphore reads queue on for a turn once [`ReadTurns::go_ahead`] said no, in the
    /// order they call [`ReadTurns::enqueue`]. Closed once the rounds have ended.
    pub fn queue(&self) -> Arc<Semaphore> {
        self.turns.clone()
    }

    /// A read that found no turn left is about to queue: counts the wait and asks for a round.
    pub fn enqueue(&self) {
        (self.on_wait)();
        self.wanted.notify_one();
    }

    /// Queues a read that found no turn left ([`ReadTurns::enqueue`]) and waits for its turn.
    pub async fn wait(&self) {
        self.enqueue();
        self.queued_turn().await;
    }

    /// Waits for a turn for work the server starts itself (a node's UDP push), as a read
    /// would: at once if [`ReadTurns::go_ahead`] says so, else queued behind the reads already
    /// waiting, calling `on_wait` as it queues (its caller counts it; the turns' own
    /// `on_wait` counts the reads of connections).
    pub async fn take(&self, on_wait: impl FnOnce()) {
        if self.go_ahead() {
            return;
        }
        on_wait();
        self.wanted.notify_one();
        self.queued_turn().await;
    }

    /// The turn a queued read waits for; none once the rounds have ended (the queue closes),
    /// and the read goes ahead.
    async fn queued_turn(&self) {
        if let Ok(turn) = self.turns.clone().acquire_owned().await {
            self.use_queued_turn(turn);
        }
    }

    /// The round task of rule G3 until `stop`. When it ends (stopped or dropped) the turns
    /// close and every read goes ahead at once, so a draining server is not left with reads no
    /// round will serve.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let _open = OpenWhileRunning(self.turns.clone());
        // Every turn handed out since the start, the initial round's included.
        let mut handed = self.per_round as u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wanted.notified() => {}
            }
            // The first top-up serves the read that asked for it; rounds then follow one
            // another while reads use them up.
            handed += self.top_up();
            let mut waited = 0;
            loop {
                tokio::task::yield_now().await;
                if stop.is_cancelled() {
                    return;
                }
                let left = self.turns.available_permits() as u64;
                // Turns granted to queued reads that have not been polled yet.
                let owed = handed.saturating_sub(self.used.load(Ordering::Relaxed) + left);
                match after_yield(left, owed, waited) {
                    Next::Sleep => {
                        handed += self.top_up();
                        break;
                    }
                    Next::Wait => waited += 1,
                    Next::Round => {
                        waited = 0;
                        handed += self.top_up();
                    }
                }
            }
        }
    }

    /// Back to `per_round` turns, queued reads served first; returns how many were added.
    fn top_up(&self) -> u64 {
        let add = self
            .per_round
            .saturating_sub(self.turns.available_permits());
        self.turns.add_permits(add);
        add as u64
    }
}

/// What the round task does after a yield.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Top up and sleep: demand is below a round.
    Sleep,
    /// Yield again: reads granted turns have not all been polled.
    Wait,
    /// Top up for the next round.
    Round,
}

/// The round rule: `left` turns unused, `owed` turns granted but not yet used, `waited` yields
/// already spent waiting for them.
fn after_yield(left: u64, owed: u64, waited: u32) -> Next {
    if left > 0 {
        Next::Sleep
    } else if owed > 0 && waited < MAX_WAIT_YIELDS {
        Next::Wait
    } else {
        Next::Round
    }
}

/// Closes the turns when the round task ends: a closed queue lets every read through.
struct OpenWhileRunning(Arc<Semaphore>);

impl Drop for OpenWhileRunning {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl std::fmt::Debug for ReadTurns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTurns")
            .field("per_round", &self.per_round)
            .field("left", &self.turns.available_permits())
            .finish()
    }
}

/// Whether a request is a client read: a `GET` of the Nacos naming or config API, other than
/// the health and metrics endpoints. Rule G3 queues these for turns; a node's read shedding
/// (rule G2 in `nacre_registry::overload`) may turn them away.
pub fn is_client_read(method: &str, path: &str) -> bool {
    method == "GET"
        && (path.starts_with("/nacos/v1/ns/") || path.starts_with("/nacos/v1/cs/"))
        && !path.ends_with("/metrics")
        && !path.contains("/health/")
}

/// Whether `head`, the first bytes of a connection's unread input, opens a client read rule G3
/// queues: the request line of a `GET` that [`is_client_read`] calls a read. A head too short
/// to tell, or anything else, is not.
pub fn is_read(head: &[u8]) -> bool {
    let Some(rest) = head.strip_prefix(b"GET ") else {
        return false;
    };
    // The path ends at its query, at the space before the version, or (cut short by the peek)
    // at the end of what was peeked. A request line that has not all arrived is judged on
    // what has: a read cut before its path goes ahead (its rest reads as the continuation of
    // a request), a health or metrics path cut short waits a round like a read.
    let end = rest
        .iter()
        .position(|&b| b == b'?' || b == b' ')
        .unwrap_or(rest.len());
    match std::str::from_utf8(&rest[..end]) {
        Ok(path) => is_client_read("GET", path),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn g3_only_the_heads_of_client_reads_queue() {
        for head in [
            &b"GET /nacos/v1/ns/instance/list?serviceName=a HTTP/1.1\r\n"[..],
            b"GET /nacos/v1/cs/configs?dataId=a&group=b HTTP/1.1\r\nHost: x\r\n",
            b"GET /nacos/v1/ns/service/list HTTP/1.1\r\n",
            b"GET /nacos/v1/ns/catalog/services",
        ] {
            assert!(is_read(head), "{}", String::from_utf8_lossy(head));
        }
        for head in [
            &b"PUT /nacos/v1/ns/instance/beat?serviceName=a HTTP/1.1\r\n"[..],
            b"POST /nacos/v1/ns/instance HTTP/1.1\r\n",
            b"POST /nacos/v1/cs/configs/listener HTTP/1.1\r\n",
            b"POST /nacre/internal/beats HTTP/1.1\r\n",
            b"GET /nacos/v1/ns/operator/metrics HTTP/1.1\r\n",
            b"GET /nacos/v1/ns/health/server HTTP/1.1\r\n",
            b"GET /metrics HTTP/1.1\r\n",
            b"GET /nacre/internal/changes?from=1 HTTP/1.1\r\n",
            b"GE",
            b"",
            b"serviceName=a&ip=1.2.3.4&port=80",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /nacos/v1/ns/\xff\xfe HTTP/1.1\r\n",
        ] {
            assert!(!is_read(head), "{}", String::from_utf8_lossy(head));
        }
    }

    fn counted(per_round: usize) -> (Option<Arc<ReadTurns>>, Arc<AtomicU64>) {
        let waited = Arc::new(AtomicU64::new(0));
        let w = waited.clone();
        let turns = ReadTurns::new(
            per_round,
            0,
            Box::new(|| 1),
            Box::new(move || {
                w.fetch_add(1, Ordering::Relaxed);
            }),
        );
        (turns, waited)
    }

    fn turns(per_round: usize) -> Option<Arc<ReadTurns>> {
        counted(per_round).0
    }

    #[test]
    fn g3_only_client_reads_queue() {
        for path in [
            "/nacos/v1/ns/instance/list",
            "/nacos/v1/ns/service/list",
            "/nacos/v1/ns/instance",
            "/nacos/v1/ns/catalog/services",
            "/nacos/v1/cs/configs",
            "/nacos/v1/cs/history",
        ] {
            assert!(is_client_read("GET", path), "{path}");
        }
        for (method, path) in [
            ("PUT", "/nacos/v1/ns/instance/beat"),
            ("POST", "/nacos/v1/ns/instance"),
            ("DELETE", "/nacos/v1/ns/instance"),
            ("PUT", "/nacos/v1/ns/instance"),
            ("POST", "/nacos/v1/cs/configs"),
            ("POST", "/nacos/v1/cs/configs/listener"),
            ("GET", "/nacos/v1/ns/operator/metrics"),
            ("GET", "/nacos/v1/ns/health/server"),
            ("GET", "/nacos/v1/console/health/readiness"),
            ("GET", "/metrics"),
            ("GET", "/nacre/internal/changes"),
            ("GET", "/nacre/v1/cluster"),
            ("GET", "/nacos/serverlist"),
        ] {
            assert!(!is_client_read(method, path), "{method} {path}");
        }
    }

    #[test]
    fn g3_no_turn_is_taken_while_the_connections_are_no_crowd() {
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(4));
        let count = open.clone();
        let turns = ReadTurns::new(
            1,
            4,
            Box::new(move || count.load(Ordering::Relaxed)),
            Box::new(|| {}),
        )
        .expect("on");
        for _ in 0..10 {
            assert!(turns.go_ahead(), "4 connections are no crowd");
        }
        open.store(5, Ordering::Relaxed);
        assert!(turns.go_ahead(), "the round's one turn");
        assert!(!turns.go_ahead(), "a crowd past its turns waits");
        open.store(3, Ordering::Relaxed);
        assert!(turns.go_ahead(), "fewer connections again: no wait");
    }

    #[test]
    fn g3_a_zero_share_turns_the_gate_off() {
        assert!(turns(0).is_none());
        let turns = turns(2).expect("on");
        assert!(turns.go_ahead() && turns.go_ahead());
        assert!(!turns.go_ahead(), "a round has two turns");
    }

    #[test]
    fn g3_a_round_comes_once_its_reads_have_used_their_turns() {
        assert_eq!(
            after_yield(3, 0, 0),
            Next::Sleep,
            "turns left: demand is low"
        );
        assert_eq!(after_yield(1, 5, 0), Next::Sleep);
        assert_eq!(
            after_yield(0, 0, 0),
            Next::Round,
            "all used: the next round"
        );
        assert_eq!(
            after_yield(0, 2, 0),
            Next::Wait,
            "granted reads not polled yet"
        );
        assert_eq!(after_yield(0, 2, MAX_WAIT_YIELDS - 1), Next::Wait);
        assert_eq!(
            after_yield(0, 2, MAX_WAIT_YIELDS),
            Next::Round,
            "a read never polled does not hold the rounds back"
        );
    }

    #[tokio::test]
    async fn g3_rounds_serve_queued_reads_in_order_and_stop_when_demand_falls() {
        let (turns, waited) = counted(2);
        let turns = turns.expect("on");
        let stop = CancellationToken::new();
        let rounds = tokio::spawn(turns.clone().run(stop.clone()));
        assert!(turns.go_ahead() && turns.go_ahead() && !turns.go_ahead());
        // Five reads queue in order and each asks for a round.
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for i in 0..5 {
            turns.enqueue();
            let (queue, order, t) = (turns.queue(), order.clone(), turns.clone());
            waiting.push(tokio::spawn(async move {
                let turn = queue.acquire_owned().await.expect("open");
                t.use_queued_turn(turn);
                order.lock().expect("order").push(i);
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(waited.load(Ordering::Relaxed), 5);
        for w in waiting {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("every queued read gets its turn")
                .expect("task");
        }
        assert_eq!(*order.lock().expect("order"), vec![0, 1, 2, 3, 4]);
        // Once demand is below a round, the task tops up and goes to sleep with turns left.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(turns.turns.available_permits(), 2);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), rounds)
            .await
            .expect("the round task stops")
            .expect("task");
        // With no rounds to come, every read goes ahead at once, and none is left queued.
        for _ in 0..5 {
            assert!(turns.go_ahead(), "a read after the rounds ended waited");
        }
        let late = turns.queue().acquire_owned().await;
        assert!(late.is_err(), "the queue is closed once the rounds end");
    }

    #[tokio::test]
    async fn g3_work_the_server_starts_queues_behind_waiting_reads() {
        let (turns, waited) = counted(1);
        let turns = turns.expect("on");
        assert!(turns.go_ahead());
        // A connection's read queues first, then a push.
        turns.enqueue();
        let read = tokio::spawn({
            let (queue, t) = (turns.queue(), turns.clone());
            async move { t.use_queued_turn(queue.acquire_owned().await.expect("open")) }
        });
        tokio::task::yield_now().await;
        let pushed = Arc::new(AtomicU64::new(0));
        let push = tokio::spawn({
            let (t, pushed) = (turns.clone(), pushed.clone());
            async move {
                t.take(|| {
                    pushed.fetch_add(1, Ordering::Relaxed);
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(pushed.load(Ordering::Relaxed), 1, "the push queued");
        assert_eq!(waited.load(Ordering::Relaxed), 1, "a push is not a read");
        // A round of one turn serves the read; only the next serves the push.
        turns.top_up();
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("the read's turn")
            .expect("task");
        tokio::task::yield_now().await;
        assert!(!push.is_finished(), "the push waits for the next round");
        turns.top_up();
        tokio::time::timeout(Duration::from_secs(5), push)
            .await
            .expect("the push's turn")
            .expect("task");
        // Once the rounds have ended, it goes ahead at once and is not counted.
        turns.turns.close();
        turns.take(|| panic!("no wait once closed")).await;
    }
}
