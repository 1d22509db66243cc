//! The newest Raft log entries, kept in memory so the reads that follow an append (the state
//! machine applying them, the leader replicating them) skip SQLite and JSON decoding.
//!
//! Invariants, kept by the log store calling it on every change to the log:
//! - the entries held are contiguous, and the last one is the log's last entry (appends always
//!   extend the end; a truncate cuts the same tail here; an append that does not follow on,
//!   e.g. after a snapshot install, starts the tail afresh);
//! - a read is answered only when the tail holds the whole range; anything older is read from
//!   SQLite, so the tail is never the only copy and may drop its oldest entries at any time
//!   (it keeps at most [`MAX_ENTRIES`] entries and about [`MAX_BYTES`] of content).

use std::collections::VecDeque;

use openraft::EntryPayload;

use super::types::Entry;

/// Most entries kept.
pub const MAX_ENTRIES: usize = 1024;

/// Most content bytes kept (by [`crate::naming::persistent::Command::weight`]).
pub const MAX_BYTES: usize = 8 * 1024 * 1024;

/// The in-memory tail of the log.
#[derive(Default)]
pub struct Tail {
    entries: VecDeque<Entry>,
    bytes: usize,
}

fn weight(e: &Entry) -> usize {
    match &e.payload {
        EntryPayload::Normal(cmd) => cmd.weight() + 64,
        _ => 64,
    }
}

impl Tail {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    fn next_index(&self) -> Option<u64> {
        self.entries.back().map(|e| e.log_id.index + 1)
    }

    /// Records entries just appended to the log.
    pub fn append(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else { return };
        if self.next_index() != Some(first.log_id.index) {
            self.entries.clear();
            self.bytes = 0;
        }
        for e in new {
            self.bytes += weight(e);
            self.entries.push_back(e.clone());
        }
        while self.entries.len() > MAX_ENTRIES || (self.bytes > MAX_BYTES && self.entries.len() > 1)
        {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= weight(&old);
            }
        }
    }

    /// The log lost every entry from `index` on.
    pub fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= index) {
            if let Some(old) = self.entries.pop_back() {
                self.bytes -= weight(&old);
            }
        }
    }

    /// The log lost every entry up to and including `index`.
    pub fn purge(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.log_id.index <= index)
        {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= weight(&old);
            }
        }
    }

    /// Entries `first..=last` (`last` may run past the end: up to the last entry), if the tail
    /// holds all of them.
    pub fn get(&self, first: u64, last: u64) -> Option<Vec<Entry>> {
        let (lo, next) = (self.first_index()?, self.next_index()?);
        if first < lo || (last >= next && last != u64::MAX) {
            return None;
        }
        if first > last || first >= next {
            return Some(Vec::new());
        }
        let from = usize::try_from(first - lo).ok()?;
        let to = usize::try_from(last.min(next - 1) - lo).ok()?;
        Some(self.entries.range(from..=to).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn answers_only_ranges_it_holds_whole() {
        let mut t = Tail::default();
        assert_eq!(indexes(t.get(1, 3)), None, "empty: ask SQLite");
        t.append(&[entry(5), entry(6), entry(7)]);
        assert_eq!(indexes(t.get(5, 7)), Some(vec![5, 6, 7]));
        assert_eq!(
            indexes(t.get(6, u64::MAX)),
            Some(vec![6, 7]),
            "open end: to the last"
        );
        assert_eq!(indexes(t.get(4, 6)), None, "starts before the tail");
        assert_eq!(
            indexes(t.get(6, 9)),
            None,
            "a bounded end past the log is not guessed"
        );
        assert_eq!(
            indexes(t.get(8, u64::MAX)),
            Some(vec![]),
            "nothing after the last"
        );
    }

    #[test]
    fn follows_truncate_purge_and_gaps() {
        let mut t = Tail::default();
        t.append(&[entry(1), entry(2), entry(3), entry(4)]);
        t.truncate(3);
        assert_eq!(indexes(t.get(1, u64::MAX)), Some(vec![1, 2]));
        t.append(&[entry(3)]);
        t.purge(1);
        assert_eq!(indexes(t.get(2, 3)), Some(vec![2, 3]));
        assert_eq!(indexes(t.get(1, 3)), None, "purged entries are not served");
        t.append(&[entry(10)]);
        assert_eq!(
            indexes(t.get(10, 10)),
            Some(vec![10]),
            "a gap starts afresh"
        );
        assert_eq!(indexes(t.get(3, 3)), None);
    }

    #[test]
    fn keeps_at_most_max_entries() {
        let mut t = Tail::default();
        let all: Vec<Entry> = (0..MAX_ENTRIES as u64 + 10).map(entry).collect();
        t.append(&all);
        assert_eq!(indexes(t.get(9, 9)), None, "oldest dropped");
        assert_eq!(indexes(t.get(10, 10)), Some(vec![10]));
    }
}
