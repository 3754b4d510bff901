//! The ready queue: READY tasks ordered by priority class, then age (submission order).
//!
//! Entries are never removed from the middle: a task that leaves READY (cancelled, or
//! its job failed) stays in the heap and is skipped when popped (lazy deletion), which keeps
//! every operation O(log n).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::model::{JobId, Priority};

/// One queued task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyItem {
    pub priority: Priority,
    /// Monotonic enqueue number: lower is older.
    pub seq: u64,
    pub job_id: JobId,
    pub task_index: u32,
}

impl Ord for ReadyItem {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap pops the greatest: higher priority first, then the older (lower seq).
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ReadyItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// See the module docs.
#[derive(Default, Debug)]
pub struct ReadyQueue {
    heap: BinaryHeap<ReadyItem>,
    next_seq: u64,
}

impl ReadyQueue {
    pub fn push(&mut self, priority: Priority, job_id: JobId, task_index: u32) {
        self.next_seq += 1;
        self.heap.push(ReadyItem {
            priority,
            seq: self.next_seq,
            job_id,
            task_index,
        });
    }

    /// Pops the best entry for which `still_ready` holds, dropping stale ones on the way.
    pub fn pop(&mut self, mut still_ready: impl FnMut(&ReadyItem) -> bool) -> Option<ReadyItem> {
        while let Some(item) = self.heap.pop() {
            if still_ready(&item) {
                return Some(item);
            }
        }
        None
    }

    /// Entries in the heap, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_is_dispatched_first_then_older_first() {
        let mut q = ReadyQueue::default();
        q.push(Priority::Normal, "a".into(), 0);
        q.push(Priority::Low, "b".into(), 0);
        q.push(Priority::High, "c".into(), 0);
        q.push(Priority::Normal, "d".into(), 0);
        let order: Vec<_> = std::iter::from_fn(|| q.pop(|_| true).map(|i| i.job_id)).collect();
        assert_eq!(order, ["c", "a", "d", "b"], "priority class, then age");
    }

    #[test]
    fn stale_entries_are_skipped() {
        let mut q = ReadyQueue::default();
        q.push(Priority::Normal, "gone".into(), 0);
        q.push(Priority::Normal, "live".into(), 0);
        let item = q.pop(|i| i.job_id != "gone").expect("live entry");
        assert_eq!(item.job_id, "live");
        assert!(q.is_empty(), "the stale entry was dropped");
    }
}
