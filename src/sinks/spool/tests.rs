#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

fn settings(dir: &Path) -> SpoolSettings {
    SpoolSettings {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 30,
        segment_bytes: 4096,
        when_full: WhenFull::DropOldest,
        fsync: Fsync::EveryBatch,
    }
}

/// One line of line protocol, different for every `i`.
fn line(i: usize) -> String {
    format!("m,device=d{i} v={i} {i}\n")
}

/// A batch body as text, for comparing with lines.
fn text(body: &[u8]) -> String {
    String::from_utf8(body.to_vec()).unwrap()
}

fn batch(i: usize) -> Arc<Batch> {
    Arc::new(Batch {
        body: line(i).into_bytes(),
        points: 1,
    })
}

/// Journals one reading per `i`, as the batcher does while a batch fills.
fn journal_lines(spool: &Spool, range: std::ops::Range<usize>) {
    for i in range {
        spool.journal(line(i).as_bytes(), 1);
    }
}

async fn drain(spool: &Arc<Spool>) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((b, id)) = spool.front().await {
        out.push(text(&b.body));
        spool.ack(id).await;
    }
    out
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn replays_unacked_batches_in_order_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new();
    let (spool, rec) = Spool::open(settings(dir.path()), &reg).unwrap();
    assert_eq!(rec, Recovered::default());
    for i in 0..300 {
        spool.push(batch(i)).await.unwrap();
    }
    assert!(segments(dir.path()).len() > 1, "segment_bytes rotates");
    // The store took the first 100.
    for _ in 0..100 {
        let (_, id) = spool.front().await.unwrap();
        spool.ack(id).await;
    }
    drop(spool);
    let reg = Registry::new();
    let (spool, rec) = Spool::open(settings(dir.path()), &reg).unwrap();
    assert_eq!(rec.batches, 200);
    assert_eq!(rec.points, 200);
    assert_eq!(rec.torn, 0);
    spool.push(batch(300)).await.unwrap();
    let got = drain(&spool).await;
    let want: Vec<String> = (100..=300).map(|i| text(&batch(i).body)).collect();
    assert_eq!(got, want);
    assert_eq!(spool.pending_points(), 0);
    // Only the open segment is left once everything is acknowledged.
    assert_eq!(segments(dir.path()).len(), 1);
}

#[tokio::test]
async fn torn_last_record_is_truncated_counted_and_the_rest_replayed() {
    for seed in 0..20u64 {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new();
        let (spool, _) = Spool::open(settings(dir.path()), &reg).unwrap();
        let n = 30;
        for i in 0..n {
            spool.push(batch(i)).await.unwrap();
        }
        drop(spool);
        let segs = segments(dir.path());
        let last = segs.last().unwrap();
        let scan = scan_segment(&fs::read(last).unwrap());
        let last_rec = *scan.records.last().unwrap();
        // Cut at a random byte inside the last record (header or payload), before the end
        // mark that follows it.
        let cut = last_rec.offset + 1 + (seed * 7919) % (last_rec.end() - last_rec.offset - 1);
        OpenOptions::new()
            .write(true)
            .open(last)
            .unwrap()
            .set_len(cut)
            .unwrap();

        let reg = Registry::new();
        let (spool, rec) = Spool::open(settings(dir.path()), &reg).unwrap();
        assert_eq!(rec.torn, 1, "seed {seed}");
        assert_eq!(reg.counter_total("gridwatch_spool_torn_records_total"), 1);
        assert_eq!(fs::metadata(last).unwrap().len(), last_rec.offset);
        let got = drain(&spool).await;
        let want: Vec<String> = (0..n - 1).map(|i| text(&batch(i).body)).collect();
        assert_eq!(got, want, "seed {seed}");
    }
}

#[tokio::test]
async fn damage_in_an_old_segment_does_not_block_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new();
    let (spool, _) = Spool::open(settings(dir.path()), &reg).unwrap();
    for i in 0..300 {
        spool.push(batch(i)).await.unwrap();
    }
    drop(spool);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    // Flip a payload byte in the middle of the first segment.
    let mut data = fs::read(&segs[0]).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x55;
    fs::write(&segs[0], &data).unwrap();
    let reg = Registry::new();
    let (spool, rec) = Spool::open(settings(dir.path()), &reg).unwrap();
    assert_eq!(rec.torn, 1);
    let got = drain(&spool).await;
    // Everything after the damaged segment is there, in order, and nothing is garbage.
    let last_300: Vec<String> = (0..300).map(|i| text(&batch(i).body)).collect();
    assert!(got.len() < 300 && got.len() > 200, "{}", got.len());
    let first = last_300.iter().position(|b| *b == got[0]).unwrap();
    assert_eq!(first, 0);
    assert!(got.iter().all(|b| last_300.contains(b)));
    assert_eq!(got.last(), last_300.last());
}

#[tokio::test]
async fn drop_oldest_counts_what_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new();
    let s = SpoolSettings {
        max_bytes: 8192,
        ..settings(dir.path())
    };
    let (spool, _) = Spool::open(s, &reg).unwrap();
    for i in 0..500 {
        spool.push(batch(i)).await.unwrap();
    }
    assert!(spool.disk_bytes() <= 8192);
    let dropped = reg.counter_total("gridwatch_spool_dropped_points_total");
    assert!(dropped > 0);
    let got = drain(&spool).await;
    assert_eq!(got.len() as u64 + dropped, 500);
    assert_eq!(got.last().unwrap(), &text(&batch(499).body));
}

#[tokio::test]
async fn block_sources_waits_for_space() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new();
    let s = SpoolSettings {
        max_bytes: 8192,
        when_full: WhenFull::BlockSources,
        ..settings(dir.path())
    };
    let (spool, _) = Spool::open(s, &reg).unwrap();
    let mut i = 0;
    while !spool.is_full_for((RECORD_HEADER + batch(i).body.len()) as u64) {
        spool.push(batch(i)).await.unwrap();
        i += 1;
    }
    let pushed = i;
    let blocked = {
        let spool = Arc::clone(&spool);
        tokio::spawn(async move { spool.push(batch(pushed)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !blocked.is_finished(),
        "push must wait while the spool is full"
    );
    assert_eq!(reg.counter_total("gridwatch_spool_full_waits_total"), 1);
    let got = drain(&spool).await;
    blocked.await.unwrap().unwrap();
    let rest = drain(&spool).await;
    assert_eq!(got.len() + rest.len(), pushed + 1);
    assert_eq!(reg.counter_total("gridwatch_spool_dropped_points_total"), 0);
}

#[tokio::test]
async fn interval_fsync_still_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new();
    let s = SpoolSettings {
        fsync: Fsync::Interval(Duration::from_millis(50)),
        ..settings(dir.path())
    };
    let (spool, _) = Spool::open(s.clone(), &reg).unwrap();
    for i in 0..10 {
        spool.push(batch(i)).await.unwrap();
    }
    spool.close();
    drop(spool);
    let (spool, rec) = Spool::open(s, &Registry::new()).unwrap();
    assert_eq!(rec.batches, 10);
    assert_eq!(drain(&spool).await.len(), 10);
}

proptest! {
    #[test]
    fn scan_never_panics_and_keeps_a_reencodable_prefix(data in prop::collection::vec(any::<u8>(), 0..512)) {
        crate::fuzzing::spool_segment(&data);
        let mut with_magic = SEGMENT_MAGIC.to_vec();
        with_magic.extend_from_slice(&data);
        crate::fuzzing::spool_segment(&with_magic);
    }

    #[test]
    fn any_truncation_keeps_exactly_the_whole_records(
        bodies in prop::collection::vec("[a-z0-9 =,\n]{0,40}", 1..8),
        cut_frac in 0.0f64..1.0,
    ) {
        let mut data = SEGMENT_MAGIC.to_vec();
        let mut ends = vec![data.len()];
        for (i, b) in bodies.iter().enumerate() {
            encode_record(&mut data, i as u32, b.as_bytes());
            ends.push(data.len());
        }
        let cut = ((data.len() as f64) * cut_frac) as usize;
        let scan = scan_segment(&data[..cut]);
        let whole = ends.iter().filter(|&&e| e <= cut).count().saturating_sub(1);
        if cut >= SEGMENT_MAGIC.len() {
            prop_assert_eq!(scan.records.len(), whole);
            prop_assert_eq!(scan.valid_len as usize, ends[whole]);
        } else {
            prop_assert!(scan.records.is_empty());
        }
        crate::fuzzing::spool_segment(&data[..cut]);
    }
}

#[tokio::test]
async fn the_open_batch_survives_a_killed_process_through_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new();
    let (spool, _) = Spool::open(settings(dir.path()), &reg).unwrap();
    // Two sealed batches, then three readings of the batch being filled.
    spool.push(batch(0)).await.unwrap();
    spool.push(batch(1)).await.unwrap();
    journal_lines(&spool, 2..5);
    // Killed: no push, no close. (Dropping the handle writes nothing more.)
    drop(spool);
    let reg = Registry::new();
    let (spool, rec) = Spool::open(settings(dir.path()), &reg).unwrap();
    assert_eq!(rec.batches, 3, "two sealed batches and the journal's");
    assert_eq!(rec.points, 5);
    assert_eq!(rec.torn, 0);
    let got = drain(&spool).await;
    let want = vec![
        line(0),
        line(1),
        format!("{}{}{}", line(2), line(3), line(4)),
    ];
    assert_eq!(got, want, "the journal's readings come last, in order");

    // Sealing empties the journal: nothing is recovered twice.
    spool.journal(line(5).as_bytes(), 1);
    spool
        .push(Arc::new(Batch {
            body: line(5).into_bytes(),
            points: 1,
        }))
        .await
        .unwrap();
    drop(spool);
    let (spool, rec) = Spool::open(settings(dir.path()), &Registry::new()).unwrap();
    assert_eq!(rec.points, 1, "only the sealed, unacknowledged batch");
    assert_eq!(drain(&spool).await, vec![line(5)]);
}

#[tokio::test]
async fn a_torn_journal_tail_is_cut_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(settings(dir.path()), &Registry::new()).unwrap();
    journal_lines(&spool, 0..3);
    drop(spool);
    // The last write was torn: 5 bytes short.
    let path = dir.path().join(JOURNAL_FILE);
    let len = fs::metadata(&path).unwrap().len();
    truncate(&path, len - 5).unwrap();
    let reg = Registry::new();
    let (spool, rec) = Spool::open(settings(dir.path()), &reg).unwrap();
    assert_eq!((rec.batches, rec.points, rec.torn), (1, 2, 1));
    assert_eq!(drain(&spool).await, vec![format!("{}{}", line(0), line(1))]);
    assert!(
        reg.render()
            .contains("gridwatch_spool_torn_records_total 1")
    );
}

#[tokio::test]
async fn batches_read_back_from_disk_reuse_delivered_buffers_and_damage_is_still_caught() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new();
    let (spool, _) = Spool::open(
        SpoolSettings {
            segment_bytes: 64 << 20,
            ..settings(dir.path())
        },
        &reg,
    )
    .unwrap();
    // 1 MiB batches: more than RECENT_BYTES of them, so the oldest come from the disk.
    let big = |i: usize| {
        let line = format!("m,device=d{i} v={i} {i}\n");
        Arc::new(Batch {
            body: line.repeat((1 << 20) / line.len()).into_bytes(),
            points: (1 << 20) / line.len(),
        })
    };
    // Four more than the memory keeps: the first four (the damaged third among them) are
    // read back from the file.
    let n = RECENT_BYTES / (1 << 20) + 4;
    for i in 0..n {
        spool.push(big(i)).await.unwrap();
    }
    // Damage the payload of the third record after the spool has indexed it.
    let seg = segments(dir.path()).pop().unwrap();
    let third = spool.lock().segments[0].records[2];
    let mut bytes = fs::read(&seg).unwrap();
    let at = (third.offset as usize) + RECORD_HEADER + 100;
    bytes[at] ^= 0x20;
    fs::write(&seg, &bytes).unwrap();

    let mut got = Vec::new();
    let mut reused = 0;
    while let Some((b, id)) = spool.front().await {
        got.push(text(&b.body));
        spool.ack(id).await;
        spool.recycle(b);
        // The delivered body comes back as the next buffer, capacity and all.
        let buf = spool.take_buffer(16);
        if buf.capacity() >= 1 << 19 {
            reused += 1;
        }
        spool.recycle(Arc::new(Batch {
            body: buf,
            points: 0,
        }));
    }
    let want: Vec<String> = (0..n)
        .filter(|i| *i != 2)
        .map(|i| text(&big(i).body))
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "bodies read back differ from what was pushed");
    assert!(
        reused >= n - 2,
        "{reused} of {} reads reused a buffer",
        got.len()
    );
    assert_eq!(
        spool.metrics.io_errors.get(),
        1,
        "the damaged record was skipped"
    );
    // Only the four past the memory window came from the file (the damaged one counts).
    assert_eq!(spool.metrics.read_back.get(), 4);
}

#[tokio::test]
async fn records_of_a_longer_sealed_batch_left_in_the_journal_are_not_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(settings(dir.path()), &Registry::new()).unwrap();
    // Something pending (the store is behind), so the next batch goes to a segment and
    // its journal is emptied for the one after it.
    spool.push(batch(100)).await.unwrap();
    // A batch of five readings, journaled, then sealed.
    let sealed = journal_and_seal(&spool, 0..5).await;
    // The next batch overwrites the journal from the start: two readings, then killed.
    journal_lines(&spool, 5..7);
    let path = dir.path().join(JOURNAL_FILE);
    let journal_len = fs::metadata(&path).unwrap().len();
    drop(spool);
    let one = (JOURNAL_RECORD_HEADER + line(0).len()) as u64;
    assert_eq!(
        journal_len,
        JOURNAL_HEADER as u64 + 5 * one,
        "overwritten in place, not appended"
    );
    let reg = Registry::new();
    let (spool, rec) = Spool::open(settings(dir.path()), &reg).unwrap();
    assert_eq!((rec.batches, rec.points, rec.torn), (3, 8, 0));
    assert_eq!(
        drain(&spool).await,
        vec![line(100), sealed, format!("{}{}", line(5), line(6))],
        "the sealed batch once, then only the current generation's readings"
    );
}

#[tokio::test]
async fn a_damaged_record_of_the_current_generation_is_counted_before_older_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(settings(dir.path()), &Registry::new()).unwrap();
    journal_lines(&spool, 0..4);
    spool.push(batch(9)).await.unwrap();
    journal_lines(&spool, 4..6);
    drop(spool);
    // A flipped bit in the second record of the current generation (older records follow).
    let path = dir.path().join(JOURNAL_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let second = JOURNAL_HEADER + JOURNAL_RECORD_HEADER + line(4).len();
    bytes[second + JOURNAL_RECORD_HEADER + 3] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let (spool, rec) = Spool::open(settings(dir.path()), &Registry::new()).unwrap();
    assert_eq!((rec.batches, rec.points, rec.torn), (2, 2, 1));
    assert_eq!(drain(&spool).await, vec![line(9), line(4)]);
}

#[tokio::test]
async fn a_journal_in_the_segment_format_of_older_versions_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = SEGMENT_MAGIC.to_vec();
    encode_record(&mut old, 1, line(0).as_bytes());
    encode_record(&mut old, 1, line(1).as_bytes());
    fs::write(dir.path().join(JOURNAL_FILE), &old).unwrap();
    let (spool, rec) = Spool::open(settings(dir.path()), &Registry::new()).unwrap();
    assert_eq!((rec.batches, rec.points, rec.torn), (1, 2, 0));
    assert_eq!(drain(&spool).await, vec![format!("{}{}", line(0), line(1))]);
    // Replaced by a journal in the current format.
    let now = fs::read(dir.path().join(JOURNAL_FILE)).unwrap();
    assert!(now.starts_with(JOURNAL_MAGIC));
}

/// The inode of every file in `dir` whose name ends in `suffix`.
fn inodes(dir: &Path, suffix: &str) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt as _;
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .map(|e| e.metadata().unwrap().ino())
        .collect()
}

/// Batches of one size, so the old records of a reused file line up exactly with where new
/// ones end: only the end mark tells them apart.
fn sized(i: usize) -> Arc<Batch> {
    Arc::new(Batch {
        body: format!("m,device=d{i:04} v={i:04} {i:04}\n").into_bytes(),
        points: 1,
    })
}

/// Fills four segments and more, delivers everything, then spools `again` batches: enough
/// to fill the open segment and start one in a kept file, not enough to fill that. Returns
/// the inodes of the kept files.
async fn deliver_then_spool(dir: &Path, again: std::ops::Range<usize>) -> Vec<u64> {
    let (spool, _) = Spool::open(settings(dir), &Registry::new()).unwrap();
    for i in 0..400 {
        spool.push(sized(i)).await.unwrap();
    }
    assert!(segments(dir).len() >= 4);
    assert_eq!(drain(&spool).await.len(), 400);
    let kept = inodes(dir, FREE_SUFFIX);
    assert_eq!(kept.len(), FREE_SEGMENTS, "emptied files kept for reuse");
    for i in again {
        spool.push(sized(i)).await.unwrap();
    }
    kept
}

#[tokio::test]
async fn emptied_segment_files_are_reused_and_their_old_batches_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let kept = deliver_then_spool(dir.path(), 1000..1150).await;
    let last = segments(dir.path()).pop().unwrap();
    {
        use std::os::unix::fs::MetadataExt as _;
        assert!(
            kept.contains(&fs::metadata(&last).unwrap().ino()),
            "written into a kept file"
        );
    }
    let data = fs::read(&last).unwrap();
    let scan = scan_segment(&data);
    assert!(
        data.len() as u64 > scan.valid_len + RECORD_HEADER as u64,
        "older records follow the new ones"
    );
    let reg = Registry::new();
    let (spool, rec) = Spool::open(settings(dir.path()), &reg).unwrap();
    assert_eq!((rec.batches, rec.torn), (150, 0), "{rec:?}");
    assert_eq!(reg.counter_total("gridwatch_spool_torn_records_total"), 0);
    let want: Vec<String> = (1000..1150).map(|i| text(&sized(i).body)).collect();
    assert_eq!(drain(&spool).await, want);
}

#[tokio::test]
async fn a_torn_record_in_a_reused_file_is_counted_and_older_records_stay_out() {
    let dir = tempfile::tempdir().unwrap();
    deliver_then_spool(dir.path(), 1000..1150).await;
    let last = segments(dir.path()).pop().unwrap();
    let mut data = fs::read(&last).unwrap();
    let r = *scan_segment(&data).records.last().unwrap();
    // A flipped byte in the newest record's payload.
    data[(r.offset + RECORD_HEADER as u64) as usize] ^= 0x20;
    fs::write(&last, &data).unwrap();
    let (spool, rec) = Spool::open(settings(dir.path()), &Registry::new()).unwrap();
    assert_eq!((rec.batches, rec.torn), (149, 1));
    let want: Vec<String> = (1000..1149).map(|i| text(&sized(i).body)).collect();
    assert_eq!(drain(&spool).await, want);
}

#[test]
fn an_end_mark_ends_a_segment_without_damage() {
    let mut data = SEGMENT_MAGIC.to_vec();
    encode_record(&mut data, 1, line(0).as_bytes());
    let end = data.len() as u64;
    data.extend_from_slice(&END_MARK);
    // What an older segment left behind the mark: an intact record.
    encode_record(&mut data, 1, line(1).as_bytes());
    let scan = scan_segment(&data);
    assert_eq!(
        (scan.records.len(), scan.valid_len, scan.damage),
        (1, end, None)
    );
    // A mark cut short by a killed write ends it too.
    let scan = scan_segment(&data[..end as usize + 5]);
    assert_eq!((scan.records.len(), scan.damage), (1, None));
    // Anything else there is damage.
    data[end as usize] = 1;
    assert!(scan_segment(&data).damage.is_some());
}

#[tokio::test]
async fn kept_files_of_a_previous_run_are_reused_and_new_ids_pass_theirs() {
    let dir = tempfile::tempdir().unwrap();
    // What a run that delivered everything leaves: kept files, one of them holding the
    // records of segment 8, and no segment.
    fs::write(dir.path().join(format!("{:020}{FREE_SUFFIX}", 7)), b"junk").unwrap();
    let mut old = SEGMENT_MAGIC.to_vec();
    encode_record(&mut old, 1, line(1).as_bytes());
    fs::write(dir.path().join(format!("{:020}{FREE_SUFFIX}", 8)), &old).unwrap();
    let (spool, rec) = Spool::open(settings(dir.path()), &Registry::new()).unwrap();
    assert_eq!(rec, Recovered::default(), "kept files hold no data");
    spool.push(batch(100)).await.unwrap();
    let first = segments(dir.path());
    assert_eq!(first.len(), 1);
    assert!(
        first[0].ends_with(format!("{:020}.seg", 9)),
        "new ids start past the kept files': {first:?}"
    );
    assert_eq!(
        inodes(dir.path(), FREE_SUFFIX).len(),
        1,
        "one kept file reused"
    );
    drop(spool);
    let (spool, rec) = Spool::open(settings(dir.path()), &Registry::new()).unwrap();
    assert_eq!((rec.batches, rec.torn), (1, 0));
    assert_eq!(drain(&spool).await, vec![line(100)]);
}

#[test]
fn a_kept_buffer_is_reused_only_with_room_for_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new();
    let (spool, _) = Spool::open(settings(dir.path()), &reg).unwrap();
    let kept = |cap: usize| {
        Arc::new(Batch {
            body: Vec::with_capacity(cap),
            points: 0,
        })
    };
    // Room enough: the kept buffer itself comes back, emptied.
    spool.recycle(kept(4096));
    let buf = spool.take_buffer(4000);
    assert!(buf.is_empty());
    assert_eq!(buf.capacity(), 4096);
    // Too small: not grown (a copy of stale bytes) but replaced by a new one with 1/8 spare.
    spool.recycle(Arc::new(Batch {
        body: buf,
        points: 0,
    }));
    let bigger = spool.take_buffer(8000);
    assert!(bigger.is_empty());
    assert!(bigger.capacity() >= 9000, "{}", bigger.capacity());
    // The small one was dropped, not kept: the pool is empty now.
    assert!(spool.take_buffer(10).capacity() < 4096);
}

fn interval_settings(dir: &Path) -> SpoolSettings {
    SpoolSettings {
        fsync: Fsync::Interval(Duration::from_secs(1)),
        ..settings(dir)
    }
}

/// Journals `range` as one batch and seals it.
async fn journal_and_seal(spool: &Arc<Spool>, range: std::ops::Range<usize>) -> String {
    journal_lines(spool, range.clone());
    let body: String = range.clone().map(line).collect();
    spool
        .push(Arc::new(Batch {
            body: body.clone().into_bytes(),
            points: range.len(),
        }))
        .await
        .unwrap();
    body
}

fn segment_records(dir: &Path) -> usize {
    segments(dir)
        .iter()
        .map(|p| scan_segment(&fs::read(p).unwrap()).records.len())
        .sum()
}

#[tokio::test]
async fn a_batch_sealed_with_nothing_pending_stays_in_its_journal_and_its_file_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(interval_settings(dir.path()), &Registry::new()).unwrap();
    let first = journal_and_seal(&spool, 0..5).await;
    assert_eq!(segment_records(dir.path()), 0, "not copied into a segment");
    assert!(dir.path().join(HELD_FILE).exists());
    assert_eq!((spool.pending_batches(), spool.pending_points()), (1, 5));
    let held_inode = inodes(dir.path(), "held.journal");
    let (b, id) = spool.front().await.unwrap();
    assert_eq!(text(&b.body), first);
    spool.ack(id).await;
    assert_eq!((spool.pending_batches(), spool.pending_points()), (0, 0));
    assert!(!dir.path().join(HELD_FILE).exists());
    assert_eq!(inodes(dir.path(), "spare.journal"), held_inode);
    // The next batch journals into the open file; the one after that reuses the spare.
    let second = journal_and_seal(&spool, 5..7).await;
    let (b, id) = spool.front().await.unwrap();
    assert_eq!(text(&b.body), second);
    spool.ack(id).await;
    journal_lines(&spool, 7..8);
    assert_eq!(inodes(dir.path(), "open.journal"), held_inode);
    drop(spool);
    // Killed: the reused file still holds five records of the first batch after the new
    // one; only the current generation's comes back, and nothing counts as damage.
    let (spool, rec) = Spool::open(interval_settings(dir.path()), &Registry::new()).unwrap();
    assert_eq!((rec.batches, rec.points, rec.torn), (1, 1, 0));
    assert_eq!(drain(&spool).await, vec![line(7)]);
}

#[tokio::test]
async fn a_held_batch_is_replayed_before_the_segments_after_a_kill() {
    held_then_segments_then_open(settings).await;
    held_then_segments_then_open(interval_settings).await;
}

async fn held_then_segments_then_open(settings: fn(&Path) -> SpoolSettings) {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(settings(dir.path()), &Registry::new()).unwrap();
    // The store is down: the first batch is held, the next two go to a segment behind it.
    let held = journal_and_seal(&spool, 0..3).await;
    let seg_a = journal_and_seal(&spool, 3..4).await;
    let seg_b = journal_and_seal(&spool, 4..6).await;
    assert_eq!(segment_records(dir.path()), 2);
    journal_lines(&spool, 6..8);
    drop(spool);
    let reg = Registry::new();
    let (spool, rec) = Spool::open(settings(dir.path()), &reg).unwrap();
    assert_eq!((rec.batches, rec.points, rec.torn), (4, 8, 0));
    assert_eq!(
        drain(&spool).await,
        vec![held, seg_a, seg_b, format!("{}{}", line(6), line(7))],
        "oldest first: the held batch, the segment's, then the open journal's"
    );
    // Everything delivered: a restart finds nothing.
    drop(spool);
    let (spool, rec) = Spool::open(settings(dir.path()), &Registry::new()).unwrap();
    assert_eq!(rec.batches, 0);
    assert!(spool.front().await.is_none());
}

#[tokio::test]
async fn a_batch_whose_journal_write_failed_goes_to_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(interval_settings(dir.path()), &Registry::new()).unwrap();
    journal_lines(&spool, 0..3);
    // As after a failed write: the journal does not hold the whole batch.
    spool.lock_journal().lost = true;
    let body: String = (0..3).map(line).collect();
    spool
        .push(Arc::new(Batch {
            body: body.clone().into_bytes(),
            points: 3,
        }))
        .await
        .unwrap();
    assert_eq!(segment_records(dir.path()), 1);
    assert!(!dir.path().join(HELD_FILE).exists());
    drop(spool);
    let (spool, rec) = Spool::open(interval_settings(dir.path()), &Registry::new()).unwrap();
    assert_eq!(rec.batches, 1);
    assert_eq!(drain(&spool).await, vec![body]);
}
