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

#[test]
fn first_polls_land_on_the_wall_clock_grid_plus_the_phase() {
    let now = Instant::now();
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    // The wall clock reads hh:mm:10.250 at `now` (1,699,999,980 s is a whole minute).
    let wall = ms(1_699_999_990_250);
    assert_eq!(first_due(now, wall, s(1), ms(0)), now + ms(750));
    assert_eq!(first_due(now, wall, s(1), ms(300)), now + ms(50));
    // Exactly on its slot: polled now, not an interval later.
    assert_eq!(first_due(now, wall, s(1), ms(250)), now);
    assert_eq!(first_due(now, wall, s(1), ms(200)), now + ms(950));
    // A minute device at :10.25 with phase 5 s waits for hh:mm+1:05.
    assert_eq!(first_due(now, wall, s(60), s(5)), now + ms(54_750));
}

proptest! {
    /// Whatever the clock, interval and phase, the first poll is within one interval and on
    /// the grid: wall + wait is the phase modulo the interval.
    #[test]
    fn first_due_is_within_an_interval_and_on_the_grid(
        wall_ms in 0u64..4_000_000_000_000,
        interval_ms in 1u64..3_600_000,
        phase_frac in 0.0f64..1.0,
    ) {
        let now = Instant::now();
        let interval = Duration::from_millis(interval_ms);
        let phase = interval.mul_f64(phase_frac);
        let due = first_due(now, Duration::from_millis(wall_ms), interval, phase);
        let wait = due - now;
        prop_assert!(wait < interval);
        let at = Duration::from_millis(wall_ms) + wait;
        prop_assert_eq!(at.as_nanos() % interval.as_nanos(), phase.as_nanos() % interval.as_nanos());
    }
}
