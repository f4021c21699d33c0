use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

proptest! {
    /// The schedule pops in the order a min-heap of (due, seq) would, whatever the pushes.
    #[test]
    fn schedule_pops_like_a_heap(ops in proptest::collection::vec((0u64..50, any::<bool>()), 1..300)) {
        let t0 = Instant::now();
        let mut schedule = Schedule::with_capacity(4);
        let mut heap = BinaryHeap::new();
        for (seq, (offset_ms, pop)) in ops.into_iter().enumerate() {
            let seq = seq as u64;
            if pop {
                let want = heap.pop().map(|Reverse((due, _, idx))| (due, idx));
                prop_assert_eq!(schedule.pop(), want);
            } else {
                let due = t0 + Duration::from_millis(offset_ms);
                schedule.push(due, seq, seq as usize);
                heap.push(Reverse((due, seq, seq as usize)));
            }
        }
        while let Some(Reverse((due, _, idx))) = heap.pop() {
            prop_assert_eq!(schedule.pop(), Some((due, idx)));
        }
        prop_assert_eq!(schedule.pop(), None);
    }
}
