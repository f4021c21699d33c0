//! The disk-backed store-and-forward queue between the batcher and the writer.
//!
//! Data enters as a sealed line-protocol [`Batch`] from the batcher ([`Spool::push`]) and is
//! appended as one record to the newest segment file under `data_dir/spool/`. The writer
//! takes the oldest unacknowledged record ([`Spool::front`]), sends it, and only after the
//! store answered 2xx calls [`Spool::ack`]; a segment file is deleted once every record in
//! it is acknowledged. On start-up ([`Spool::open`]) every segment left behind is scanned and
//! its unacknowledged records are replayed first, oldest first, then live batches follow.
//!
//! Segment file `NNNNNNNNNNNNNNNNNNNN.seg` (id, zero-padded so names sort in order):
//!
//! ```text
//! "GWSPOOL1"                                   8-byte magic
//! repeated: len u32 LE | crc u32 LE | points u32 LE | payload (len bytes)
//! ```
//!
//! `crc` is CRC-32 (IEEE) over `len`, `points` and the payload, so a torn write (the process
//! or the machine died half-way through an append) or a flipped bit is detected. Recovery
//! truncates the segment at the last good record and counts it
//! (`gridwatch_spool_torn_records_total`); later segments are replayed normally, so one bad
//! tail never blocks the rest and is never sent as garbage.
//!
//! Every append also writes an *end mark* (12 zero bytes, which no record header is) after
//! its record, and the next record overwrites it. That lets a segment live in a file longer
//! than its data: the files of delivered segments are kept (up to two, named `*.free`) and
//! reused for the next segments, overwritten in place, because writing into pages the page
//! cache already holds is several times cheaper than appending to a new file (a fresh page
//! per 4 KiB). A reused file is emptied (magic, end mark) before it is renamed to its new
//! segment name, so a crash never shows its old, delivered records as a segment's. After a
//! power cut the end mark may not have reached the disk while its record did; then older
//! records that follow may be sent again — the at-least-once case of the index below.
//!
//! The *journal* file `open.journal` holds the batch the batcher is still filling: every
//! chunk of readings is written to it as its own record the moment it is encoded
//! ([`Spool::journal`]), without fsync — a killed process leaves it in the OS page cache, so
//! `kill -9` loses nothing that was encoded. When the batch is sealed and appended to a
//! segment, the journal is emptied. At start-up a non-empty journal becomes the newest
//! batch (after the segments' records, which are older).
//!
//! ```text
//! "GWJRNL02" | generation u64 LE               16-byte header
//! repeated: len u32 | crc u32 | points u32 | generation u64 | payload
//! ```
//!
//! Emptying the journal starts a new *generation* (the header is rewritten) and the next
//! batch overwrites the file from the start, so records of an older generation may follow
//! the current ones: they are the end of the journal, not damage. `crc` covers the
//! generation, `len`, `points` and the payload. Overwriting pages the file already has is
//! several times cheaper than truncating it and appending again (ext4 allocated blocks
//! for every appended page, about 15 µs per 75 KB write against 3 µs in place). A journal
//! left by an older version (segment format, magic `GWSPOOL1`) is still read.
//!
//! A batch sealed while nothing else is pending (the store keeps up: the usual case) is not
//! copied into a segment at all: its journal file is renamed to `held.journal` and the next
//! batch journals into a fresh `open.journal` (the previous held file, renamed back from
//! `spare.journal` after its header was rewritten to the new generation). The writer takes
//! the held batch first, and its acknowledgement renames the file to `spare.journal`. Being
//! sealed only when nothing is pending, a held batch is always the oldest one: recovery
//! replays it before the segments (and deletes a spare). Generations grow across both files
//! and across restarts (the first one is past every header found), so a reused file's old
//! records always read as its end. With [`Fsync::EveryBatch`] the held file is fsynced
//! before its rename and the directory after it. After a power cut a reused file's new
//! header may be missing while its rename is not: its delivered batch is then replayed as
//! the open one — at-least-once again, like a segment's lost end mark.
//!
//! Against a power cut the journal is as good as the last fsync of the [`Fsync::Interval`]
//! syncer (or nothing with [`Fsync::EveryBatch`], which fsyncs sealed batches, not single
//! readings): a power cut can lose the open batch, a process kill cannot.
//!
//! The *index* file `ack` holds the position of the oldest unacknowledged record
//! (segment id, byte offset, CRC-32 of both). It is rewritten (write, rename) after every
//! acknowledgement, without fsync: after a power cut it may lag behind or be unreadable,
//! and then batches already delivered are sent again. Delivery is at-least-once: if the daemon dies between the store's
//! 2xx and the index update, that one batch is sent again (InfluxDB overwrites a point with
//! the same series and timestamp, so it does not show twice there).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::WhenFull;
use crate::metrics::{Counter, Gauge, Histogram, Registry};

use super::queue::Batch;

/// The first bytes of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"GWSPOOL1";
/// Bytes of a record header: length, CRC, point count.
pub const RECORD_HEADER: usize = 12;
/// Largest payload a record may claim; anything bigger is corruption, not data (a batch
/// of 5000 points is about 1 MiB).
pub const MAX_RECORD: u32 = 256 << 20;
const INDEX_FILE: &str = "ack";
const JOURNAL_FILE: &str = "open.journal";
/// A sealed batch that stayed in the journal file it was written to (see [`Held`]).
const HELD_FILE: &str = "held.journal";
/// A delivered held batch's journal file, kept to be the next open journal.
const SPARE_FILE: &str = "spare.journal";
/// [`RecordId::segment`] of the held batch (its `offset` is the batch's journal generation).
const HELD_SEGMENT: u64 = u64::MAX;
/// The first bytes of the journal (see the module docs).
pub const JOURNAL_MAGIC: &[u8; 8] = b"GWJRNL02";
/// Bytes of the journal's header: magic and generation.
const JOURNAL_HEADER: usize = 16;
/// Bytes of a journal record's header: length, CRC, point count, generation.
const JOURNAL_RECORD_HEADER: usize = 20;
/// Bytes of recently appended batches the spool keeps in memory for the writer. At 10,000
/// devices × 50 values a store on the same two cores falls behind by tens of 1.4 MB
/// batches while it registers new series and then works the backlog off over a minute;
/// with 4 MiB kept, those batches were read back from the file they had just been written
/// to (2.6 % of the daemon's CPU in a profile). 16 MiB serves a lag of ~11 batches from
/// memory for 16 MB of RSS; a store that is down still only costs disk.
const RECENT_BYTES: usize = 16 << 20;
/// Bodies of delivered batches kept for the next batch read back or sealed.
const POOL_BUFFERS: usize = 2;
/// Written after the last record of a segment: where its data ends in a file that is longer
/// (a recycled one). No record header is all zeros (its CRC covers the length and count).
const END_MARK: [u8; RECORD_HEADER] = [0; RECORD_HEADER];
/// Emptied segment files kept for reuse ([`FREE_SUFFIX`]). Appending to a new file costs
/// the page cache a fresh page for every 4 KiB, which made appends 6× dearer than
/// overwriting the pages of a file written seconds before (320 against 52 µs per 1.5 MB on
/// the bench VM) and the segment append 12 % of the daemon's CPU at 10,000 devices.
const FREE_SEGMENTS: usize = 2;
/// Name suffix of an emptied segment file waiting to be reused (never read as data).
const FREE_SUFFIX: &str = ".free";

/// What can go wrong with the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A blocking task died (a panic in a file operation).
    #[error("spool task failed: {0}")]
    Task(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// When appended records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// `fsync` after every appended batch and every index update: a batch handed to
    /// [`Spool::push`] survives a power cut once `push` returned.
    EveryBatch,
    /// `fsync` at most this often ([`run_syncer`]): a batch survives a killed process once
    /// `push` returned, a power cut once the next sync ran.
    Interval(Duration),
}

/// How the spool is set up.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// Directory of the segment files (`data_dir/spool`).
    pub dir: PathBuf,
    /// Most bytes of segment files on disk.
    pub max_bytes: u64,
    /// A segment is closed and a new one started beyond this size.
    pub segment_bytes: u64,
    /// What [`Spool::push`] does when `max_bytes` would be exceeded.
    pub when_full: WhenFull,
    /// Durability policy.
    pub fsync: Fsync,
}

/// Where one record is: the segment id and the byte offset of its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordId {
    /// Segment id.
    pub segment: u64,
    /// Offset of the record header in the segment file.
    pub offset: u64,
}

/// One record found by [`scan_segment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// Offset of the record header.
    pub offset: u64,
    /// Payload length.
    pub len: u32,
    /// Points in the batch.
    pub points: u32,
}

impl RecordMeta {
    fn end(&self) -> u64 {
        self.offset + RECORD_HEADER as u64 + u64::from(self.len)
    }
}

/// Why a segment scan stopped before the end of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The file does not start with [`SEGMENT_MAGIC`].
    BadMagic,
    /// The data ends inside a record header.
    TornHeader,
    /// A header claims more than [`MAX_RECORD`] bytes.
    Oversized,
    /// The data ends inside a record payload.
    TornPayload,
    /// The CRC does not match.
    Checksum,
}

/// What [`scan_segment`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Good records, in file order.
    pub records: Vec<RecordMeta>,
    /// Bytes up to the end of the last good record (the length to truncate to).
    pub valid_len: u64,
    /// Why the scan stopped early, if it did.
    pub damage: Option<Damage>,
}

/// Reads the records of a segment image: every good record up to the first damaged one.
/// Never panics, whatever the bytes (this is the fuzz target `spool_segment`).
pub fn scan_segment(data: &[u8]) -> Scan {
    let mut records = Vec::new();
    if data.len() < SEGMENT_MAGIC.len() || &data[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        return Scan {
            records,
            valid_len: 0,
            damage: (!data.is_empty()).then_some(Damage::BadMagic),
        };
    }
    let mut pos = SEGMENT_MAGIC.len();
    let damage = loop {
        let rest = &data[pos..];
        // The end mark (or what a cut-short write left of it) ends the data; a recycled
        // file's older bytes may follow.
        if rest.iter().take(RECORD_HEADER).all(|&b| b == 0) {
            break None;
        }
        match decode_record(rest) {
            Ok((meta, _payload)) => {
                records.push(RecordMeta {
                    offset: pos as u64,
                    ..meta
                });
                pos += RECORD_HEADER + meta.len as usize;
            }
            Err(d) => break Some(d),
        }
    };
    Scan {
        records,
        valid_len: pos as u64,
        damage,
    }
}

/// Decodes the record at the start of `data`: its meta (offset 0) and payload.
pub fn decode_record(data: &[u8]) -> Result<(RecordMeta, &[u8]), Damage> {
    let Some(header) = data.get(..RECORD_HEADER) else {
        return Err(Damage::TornHeader);
    };
    let (len, crc, points) = header_words(header);
    if len > MAX_RECORD {
        return Err(Damage::Oversized);
    }
    let Some(payload) = data.get(RECORD_HEADER..RECORD_HEADER + len as usize) else {
        return Err(Damage::TornPayload);
    };
    if record_crc(len, points, payload) != crc {
        return Err(Damage::Checksum);
    }
    Ok((
        RecordMeta {
            offset: 0,
            len,
            points,
        },
        payload,
    ))
}

/// A record header's length, CRC and point count.
fn header_words(header: &[u8]) -> (u32, u32, u32) {
    let word = |i: usize| {
        header
            .get(i..i + 4)
            .and_then(|w| <[u8; 4]>::try_from(w).ok())
            .map_or(0, u32::from_le_bytes)
    };
    (word(0), word(4), word(8))
}

fn record_crc(len: u32, points: u32, payload: &[u8]) -> u32 {
    crc_after(&[], len, points, payload)
}

/// CRC-32 over `prefix` (a journal record's generation), `len`, `points` and the payload.
fn crc_after(prefix: &[u8], len: u32, points: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(prefix);
    h.update(&len.to_le_bytes());
    h.update(&points.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// A record's header and the part of `payload` it covers.
fn record_parts(points: u32, payload: &[u8]) -> ([u8; RECORD_HEADER], &[u8]) {
    record_parts_after(&[], points, payload)
}

/// [`record_parts`] with `crc_prefix` covered by the CRC ahead of the header's words.
fn record_parts_after<'a>(
    crc_prefix: &[u8],
    points: u32,
    payload: &'a [u8],
) -> ([u8; RECORD_HEADER], &'a [u8]) {
    // A batch is far below 4 GiB; the cap keeps a bogus one from wrapping the length.
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .min(MAX_RECORD);
    let payload = &payload[..len as usize];
    let mut header = [0u8; RECORD_HEADER];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&crc_after(crc_prefix, len, points, payload).to_le_bytes());
    header[8..12].copy_from_slice(&points.to_le_bytes());
    (header, payload)
}

/// Encodes one record (header and payload) onto `out`.
pub fn encode_record(out: &mut Vec<u8>, points: u32, payload: &[u8]) {
    let (header, payload) = record_parts(points, payload);
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// Writes a header and a payload with as few `writev` calls as the OS allows, without
/// first copying the payload behind its header.
fn write_all_vectored(f: &mut File, header: &[u8], payload: &[u8]) -> std::io::Result<()> {
    let mut parts = [
        std::io::IoSlice::new(header),
        std::io::IoSlice::new(payload),
    ];
    let mut rest = &mut parts[..];
    while !rest.is_empty() {
        match f.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

struct Segment {
    id: u64,
    /// File length on disk.
    bytes: u64,
    /// Records not yet acknowledged, oldest first.
    records: VecDeque<RecordMeta>,
}

struct Inner {
    segments: VecDeque<Segment>,
    /// Emptied segment files kept for reuse.
    free: Vec<PathBuf>,
    /// The segment being appended to: its id and open file (the last of `segments`).
    open: Option<(u64, File)>,
    next_id: u64,
    disk_bytes: u64,
    pending_points: u64,
    pending_batches: u64,
    /// Data written since the last fsync.
    dirty: bool,
    /// The oldest pending batch when it was sealed with nothing else pending (see [`Held`]).
    held: Option<Held>,
}

/// A sealed batch kept in its journal file (renamed to [`HELD_FILE`]) instead of being
/// copied into a segment.
///
/// When the store keeps up, the spool is empty whenever a batch is sealed, and the writer
/// sends it at once. Copying it into a segment wrote every byte to disk a second time,
/// long after it was encoded (a cold 2 MB copy into the page cache: 5.6 % of the daemon's
/// CPU at 10,000 devices, `perf`). The journal already holds exactly the batch, so it is
/// renamed and the next batch journals into another file. A held batch exists only while
/// nothing else is pending when it is sealed, so it is always the oldest pending batch:
/// the writer takes it first and recovery replays it before the segments. With
/// [`Fsync::EveryBatch`] the file is fsynced, and the directory after the rename.
struct Held {
    batch: Arc<Batch>,
    /// Its journal generation: identifies it in [`RecordId::offset`].
    generation: u64,
    /// The file, for the syncer's fsync.
    file: Option<File>,
    /// Bytes counted in [`Inner::disk_bytes`].
    bytes: u64,
    /// Fsynced since it was held.
    synced: bool,
}

struct SpoolMetrics {
    torn: Counter,
    dropped: Counter,
    blocked: Counter,
    recovered: Counter,
    io_errors: Counter,
    read_back: Counter,
    pending_points: Gauge,
    pending_bytes: Gauge,
    pending_batches: Gauge,
    append_seconds: Histogram,
}

/// The open batch's journal (see the module docs).
#[derive(Default)]
struct Journal {
    file: Option<File>,
    /// Generation of the records being written; records of older ones are stale.
    generation: u64,
    /// Records of this generation were written: something to empty when the batch is sealed.
    used: bool,
    /// A write failed: logged once, retried with every reading.
    failing: bool,
    /// A write of this generation failed: the file does not hold the whole batch.
    lost: bool,
    /// Payload bytes and points written in this generation: a batch is held in the file
    /// only if they are exactly its own.
    bytes: usize,
    points: usize,
}

impl Journal {
    /// Nothing written yet in `generation` (the file's header says it).
    fn start(&mut self, generation: u64) {
        self.generation = generation;
        self.used = false;
        self.lost = false;
        self.bytes = 0;
        self.points = 0;
    }
}

/// The disk queue. Shared by the batcher (push) and the writer (front/ack).
pub struct Spool {
    settings: SpoolSettings,
    inner: Mutex<Inner>,
    journal: Mutex<Journal>,
    /// The batches appended last (up to [`RECENT_BYTES`]), still in memory: normally the
    /// writer sends them next, and they need not be read back from the disk they were just
    /// written to. Oldest first.
    recent: Mutex<VecDeque<(RecordId, Arc<Batch>)>>,
    /// Bodies of batches the store accepted ([`Spool::recycle`]), reused for the next read
    /// back ([`Spool::front`]) or sealed batch ([`Spool::take_buffer`]). While the store
    /// lags, every batch is read back from disk: a fresh megabyte buffer each time, on
    /// whichever blocking thread does the read, left the allocator holding tens of MB.
    pool: Mutex<Vec<Vec<u8>>>,
    /// Wakes the writer when a batch arrived or the spool closed.
    arrived: Notify,
    /// Wakes a blocked pusher when space was freed.
    space: Notify,
    closed: AtomicBool,
    metrics: SpoolMetrics,
}

/// Recovery figures of [`Spool::open`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Segments with unsent data.
    pub segments: usize,
    /// Unsent batches.
    pub batches: u64,
    /// Unsent points.
    pub points: u64,
    /// Records found damaged and truncated away.
    pub torn: u64,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn free_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{FREE_SUFFIX}"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
}

impl Spool {
    /// Opens (creating if needed) the spool in `settings.dir` and recovers what a previous
    /// run left: acknowledged segments are deleted, damaged tails truncated (and counted),
    /// unacknowledged records queued for replay in their original order.
    pub fn open(
        settings: SpoolSettings,
        registry: &Registry,
    ) -> Result<(Arc<Spool>, Recovered), SpoolError> {
        let dir = settings.dir.clone();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let metrics = SpoolMetrics {
            torn: registry.counter(
                "gridwatch_spool_torn_records_total",
                "Damaged spool records (torn writes, bad checksums) truncated at start-up.",
                &[],
            ),
            dropped: registry.counter(
                "gridwatch_spool_dropped_points_total",
                "Points dropped from the spool because it was full (when_full = drop_oldest).",
                &[],
            ),
            blocked: registry.counter(
                "gridwatch_spool_full_waits_total",
                "Times the batcher waited for space (when_full = block_sources).",
                &[],
            ),
            recovered: registry.counter(
                "gridwatch_spool_recovered_points_total",
                "Unsent points found in the spool at start-up and queued for replay.",
                &[],
            ),
            read_back: registry.counter(
                "gridwatch_spool_read_back_batches_total",
                "Batches the writer read back from a segment file because they were no longer in memory (the store lagged or the daemon restarted).",
                &[],
            ),
            io_errors: registry.counter(
                "gridwatch_spool_io_errors_total",
                "Failed spool file operations.",
                &[],
            ),
            append_seconds: registry.histogram(
                "gridwatch_spool_append_seconds",
                "Time to append a sealed batch to the spool (write, fsync with every_batch); the batcher waits for it.",
                &[],
            ),
            pending_points: registry.gauge(
                "gridwatch_spool_pending_points",
                "Points in the spool not yet accepted by the store.",
                &[],
            ),
            pending_bytes: registry.gauge(
                "gridwatch_spool_bytes",
                "Bytes of spool files holding unsent batches (segments, a held journal).",
                &[],
            ),
            pending_batches: registry.gauge(
                "gridwatch_spool_pending_batches",
                "Batches in the spool not yet accepted by the store.",
                &[],
            ),
        };
        let index = read_index(&dir);
        let names: Vec<String> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let mut ids: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        ids.sort_unstable();
        // Emptied segment files of the last run: kept for reuse, up to FREE_SEGMENTS. New
        // ids start past theirs too, so a retired segment's `.free` name is always new.
        let mut free = Vec::new();
        let mut last_free = None;
        for name in names.iter().filter(|n| n.ends_with(FREE_SUFFIX)) {
            let id = name
                .strip_suffix(FREE_SUFFIX)
                .and_then(|n| n.parse::<u64>().ok());
            last_free = last_free.max(id);
            let path = dir.join(name);
            if free.len() < FREE_SEGMENTS {
                free.push(path);
            } else {
                remove(&path);
            }
        }
        let mut rec = Recovered::default();
        let mut inner = Inner {
            segments: VecDeque::new(),
            free,
            open: None,
            next_id: ids.last().copied().max(last_free).map_or(1, |l| l + 1),
            disk_bytes: 0,
            pending_points: 0,
            pending_batches: 0,
            dirty: false,
            held: None,
        };
        if let Some((seg, _)) = index {
            inner.next_id = inner.next_id.max(seg + 1);
        }
        for id in ids {
            let path = segment_path(&dir, id);
            if index.is_some_and(|(seg, _)| id < seg) {
                remove(&path);
                continue;
            }
            let data = fs::read(&path).map_err(io_err(&path))?;
            let scan = scan_segment(&data);
            if let Some(damage) = scan.damage {
                rec.torn += 1;
                metrics.torn.inc();
                tracing::warn!(segment = %path.display(), offset = scan.valid_len, damaged_bytes = data.len() as u64 - scan.valid_len, ?damage, good_records = scan.records.len(), "spool segment damaged; truncated at the last good record");
                truncate(&path, scan.valid_len).map_err(io_err(&path))?;
            }
            let skip_before = match index {
                Some((seg, off)) if seg == id => off,
                _ => 0,
            };
            let records: VecDeque<RecordMeta> = scan
                .records
                .into_iter()
                .filter(|r| r.offset >= skip_before)
                .collect();
            if records.is_empty() {
                remove(&path);
                continue;
            }
            rec.segments += 1;
            rec.batches += records.len() as u64;
            rec.points += records.iter().map(|r| u64::from(r.points)).sum::<u64>();
            inner.disk_bytes += scan.valid_len;
            inner.segments.push_back(Segment {
                id,
                bytes: scan.valid_len,
                records,
            });
        }
        inner.pending_batches = rec.batches;
        inner.pending_points = rec.points;
        metrics.recovered.add(rec.points);
        if rec.points > 0 || rec.torn > 0 {
            tracing::info!(
                segments = rec.segments,
                batches = rec.batches,
                points = rec.points,
                torn_records = rec.torn,
                "spool recovered unsent telemetry; replaying it first"
            );
        }
        let journal_path = dir.join(JOURNAL_FILE);
        let left = read_if_present(&journal_path)?;
        let held_path = dir.join(HELD_FILE);
        let held_data = read_if_present(&held_path)?;
        // The next journal generation is past every one on disk, so that the stale records
        // of a reused file are never taken for the current batch's.
        let first_generation = [&left, &held_data]
            .into_iter()
            .flatten()
            .filter_map(|d| journal_generation(d))
            .max()
            .unwrap_or(0)
            + 1;
        remove(&dir.join(SPARE_FILE));
        if let Some(data) = held_data {
            let (batch, torn) = journal_batch(&data);
            if torn {
                rec.torn += 1;
                metrics.torn.inc();
                tracing::warn!(file = %held_path.display(), "a sealed batch's journal ends in a torn record; kept the good ones");
            }
            if batch.points > 0 {
                let points = batch.points as u64;
                rec.batches += 1;
                rec.points += points;
                metrics.recovered.add(points);
                inner.pending_batches += 1;
                inner.pending_points += points;
                inner.disk_bytes += data.len() as u64;
                inner.held = Some(Held {
                    batch: Arc::new(batch),
                    generation: journal_generation(&data).unwrap_or(0),
                    file: None,
                    bytes: data.len() as u64,
                    synced: true,
                });
                tracing::info!(
                    points,
                    "spool recovered a sealed batch of the previous run from its journal; replaying it first"
                );
            } else {
                remove(&held_path);
            }
        }
        let spool = Arc::new(Spool {
            settings,
            inner: Mutex::new(inner),
            journal: Mutex::new(Journal::default()),
            recent: Mutex::new(VecDeque::new()),
            pool: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            space: Notify::new(),
            closed: AtomicBool::new(false),
            metrics,
        });
        spool.update_gauges(&spool.lock());
        if let Some(data) = left {
            let (batch, torn) = journal_batch(&data);
            if torn {
                rec.torn += 1;
                spool.metrics.torn.inc();
                tracing::warn!(file = %journal_path.display(), "the open batch's journal ends in a torn record; kept the good ones");
            }
            if batch.points > 0 {
                let batch = Arc::new(batch);
                spool.append(&batch)?;
                rec.batches += 1;
                rec.points += batch.points as u64;
                spool.metrics.recovered.add(batch.points as u64);
                tracing::info!(
                    points = batch.points,
                    "spool recovered the open batch of the previous run from its journal"
                );
            }
        }
        spool.open_journal(first_generation)?;
        Ok((spool, rec))
    }

    /// Creates an empty journal (header only) of `generation`, replacing whatever was there.
    fn open_journal(&self, generation: u64) -> Result<(), SpoolError> {
        let file = self
            .fresh_journal(generation)
            .map_err(io_err(&self.settings.dir.join(JOURNAL_FILE)))?;
        let mut j = self.lock_journal();
        j.file = Some(file);
        j.start(generation);
        Ok(())
    }

    /// An empty buffer for a batch of about `len` bytes: a delivered batch's, if one is kept
    /// with room for `len`, else a new one with 1/8 to spare.
    pub fn take_buffer(&self, len: usize) -> Vec<u8> {
        let kept = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match kept {
            Some(mut buf) if buf.capacity() >= len => {
                buf.clear();
                buf
            }
            // Growing a kept buffer would copy all its old bytes (`realloc` does not know
            // they are stale) into pages that then fault in anew; a new buffer only does
            // the latter.
            _ => Vec::with_capacity(super::batch_capacity(len)),
        }
    }

    /// Keeps the body of a delivered batch for reuse, if nothing else holds the batch.
    pub fn recycle(&self, batch: Arc<Batch>) {
        if let Ok(batch) = Arc::try_unwrap(batch) {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOL_BUFFERS {
                pool.push(batch.body);
            }
        }
    }

    fn lock_recent(&self) -> MutexGuard<'_, VecDeque<(RecordId, Arc<Batch>)>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `lines` (encoded line protocol, `points` lines) of the batch being filled, so
    /// that a killed process does not lose them: one `write` into the page cache, no fsync.
    /// Call in order; the next [`push`](Self::push) seals everything journaled so far.
    pub fn journal(&self, lines: &[u8], points: u32) {
        let mut j = self.lock_journal();
        let Journal {
            file,
            generation,
            used,
            failing,
            lost,
            bytes,
            points: journaled,
        } = &mut *j;
        let Some(f) = file.as_mut() else { return };
        let (header, payload) = journal_record_parts(*generation, points, lines);
        match write_all_vectored(f, &header, payload) {
            Ok(()) => {
                *used = true;
                *failing = false;
                *bytes += payload.len();
                *journaled += points as usize;
            }
            Err(e) => {
                self.metrics.io_errors.inc();
                if !*failing {
                    tracing::error!(error = %e, "cannot write the spool journal; the open batch is only in memory");
                }
                *failing = true;
                *lost = true;
            }
        }
    }

    /// Empties the journal after its readings were sealed into a segment record: a new
    /// generation in the header, and the next record written over the first.
    fn clear_journal(&self) {
        let mut j = self.lock_journal();
        if !j.used {
            return;
        }
        let next = j.generation + 1;
        let Some(f) = j.file.as_mut() else { return };
        let emptied = f
            .write_all_at(&journal_header(next), 0)
            .and_then(|()| f.seek(SeekFrom::Start(JOURNAL_HEADER as u64)));
        if let Err(e) = emptied {
            self.metrics.io_errors.inc();
            tracing::warn!(error = %e, "cannot empty the spool journal (its batch may be sent twice after a crash)");
            return;
        }
        j.start(next);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_gauges(&self, inner: &Inner) {
        self.metrics.pending_points.set(inner.pending_points as f64);
        self.metrics
            .pending_batches
            .set(inner.pending_batches as f64);
        self.metrics.pending_bytes.set(inner.disk_bytes as f64);
    }

    /// Appends a batch. Durability: with [`Fsync::EveryBatch`] the batch is on disk
    /// (fsynced) when this returns `Ok`; with [`Fsync::Interval`] it is in the OS page cache
    /// (safe from a killed process, not from a power cut until the next sync).
    ///
    /// When the spool is full, `drop_oldest` deletes the oldest segment (counted in
    /// `gridwatch_spool_dropped_points_total`), `block_sources` waits until the writer freed
    /// space — which stops the batcher, then the pipeline, then polling.
    pub async fn push(self: &Arc<Self>, batch: Arc<Batch>) -> Result<(), SpoolError> {
        let need = (RECORD_HEADER + batch.body.len()) as u64;
        if self.settings.when_full == WhenFull::BlockSources {
            let mut logged = false;
            while self.is_full_for(need) {
                if !logged {
                    self.metrics.blocked.inc();
                    tracing::warn!(
                        max_bytes = self.settings.max_bytes,
                        "spool full; holding back new telemetry until the store catches up"
                    );
                    logged = true;
                }
                // The sleep covers a wake-up that raced with the check.
                tokio::select! {
                    _ = self.space.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
        let this = Arc::clone(self);
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || this.append(&batch))
            .await
            .map_err(|e| SpoolError::Task(e.to_string()))?;
        self.metrics
            .append_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            self.metrics.io_errors.inc();
            tracing::error!(error = %e, "spool append failed");
        }
        self.arrived.notify_one();
        result
    }

    /// Whether appending `need` bytes would pass `max_bytes` while something could be freed.
    fn is_full_for(&self, need: u64) -> bool {
        let inner = self.lock();
        inner.pending_batches > 0 && inner.disk_bytes + need > self.settings.max_bytes
    }

    fn append(&self, batch: &Arc<Batch>) -> Result<(), SpoolError> {
        let points = u32::try_from(batch.points).unwrap_or(u32::MAX);
        let mut inner = self.lock();
        if self.hold(&mut inner, batch) {
            return Ok(());
        }
        let (header, payload) = record_parts(points, &batch.body);
        let need = (header.len() + payload.len()) as u64;
        if self.settings.when_full == WhenFull::DropOldest {
            while inner.disk_bytes + need > self.settings.max_bytes && !inner.segments.is_empty() {
                self.drop_oldest(&mut inner);
            }
        }
        let rotate = match &inner.open {
            Some((id, _)) => inner
                .segments
                .back()
                .is_none_or(|s| s.id != *id || s.bytes >= self.settings.segment_bytes),
            None => true,
        };
        if rotate {
            self.close_open(&mut inner)?;
            let id = inner.next_id;
            inner.next_id += 1;
            let file = self.new_segment_file(&mut inner, id)?;
            inner.open = Some((id, file));
            inner.disk_bytes += SEGMENT_MAGIC.len() as u64;
            inner.segments.push_back(Segment {
                id,
                bytes: SEGMENT_MAGIC.len() as u64,
                records: VecDeque::new(),
            });
        }
        let written = {
            let Inner { open, segments, .. } = &mut *inner;
            let (Some((id, file)), Some(seg)) = (open.as_mut(), segments.back()) else {
                return Err(SpoolError::Task("no open segment".into()));
            };
            let path = segment_path(&self.settings.dir, *id);
            // At the record's place, not the file's end: a recycled file is longer.
            let at = seg.bytes;
            let data_end = at + (header.len() + payload.len()) as u64;
            let wrote = file
                .write_all_at(&header, at)
                .and_then(|()| file.write_all_at(payload, at + header.len() as u64))
                .and_then(|()| file.write_all_at(&END_MARK, data_end));
            match wrote {
                Ok(()) => {
                    if self.settings.fsync == Fsync::EveryBatch
                        && let Err(e) = file.sync_data()
                    {
                        // The bytes are written; failing the push would append them twice.
                        self.metrics.io_errors.inc();
                        tracing::error!(file = %path.display(), error = %e, "spool fsync failed");
                    }
                    Ok(seg.bytes)
                }
                Err(e) => Err(SpoolError::Io { path, source: e }),
            }
        };
        let offset = match written {
            Ok(offset) => offset,
            Err(e) => {
                // A partial append leaves a torn record in the middle of the segment: start a
                // fresh segment for the next batch (recovery truncates this one).
                inner.open = None;
                return Err(e);
            }
        };
        let Some(seg) = inner.segments.back_mut() else {
            return Err(SpoolError::Task("no open segment".into()));
        };
        seg.bytes += need;
        seg.records.push_back(RecordMeta {
            offset,
            len: (need as usize - RECORD_HEADER) as u32,
            points,
        });
        let rid = RecordId {
            segment: seg.id,
            offset,
        };
        {
            let mut recent = self.lock_recent();
            recent.push_back((rid, Arc::clone(batch)));
            let mut bytes: usize = recent.iter().map(|(_, b)| b.body.len()).sum();
            // The newest stays even if it alone is over the budget.
            while bytes > RECENT_BYTES && recent.len() > 1 {
                if let Some((_, old)) = recent.pop_front() {
                    bytes -= old.body.len();
                }
            }
        }
        inner.disk_bytes += need;
        inner.pending_points += u64::from(points);
        inner.pending_batches += 1;
        inner.dirty = self.settings.fsync != Fsync::EveryBatch;
        self.update_gauges(&inner);
        drop(inner);
        // Only now that the batch is in its segment (fsynced with every_batch) may the
        // journal forget it; a crash in between sends it twice, never zero times.
        self.clear_journal();
        Ok(())
    }

    /// Keeps `batch` in the journal that holds it (see [`Held`]) when nothing else is
    /// pending; false when it must go to a segment instead.
    fn hold(&self, inner: &mut Inner, batch: &Arc<Batch>) -> bool {
        if inner.pending_batches > 0 || inner.held.is_some() {
            return false;
        }
        let mut j = self.lock_journal();
        if !j.used || j.lost || j.bytes != batch.body.len() || j.points != batch.points {
            return false;
        }
        let Some(f) = j.file.as_ref() else {
            return false;
        };
        let every_batch = self.settings.fsync == Fsync::EveryBatch;
        let dir = &self.settings.dir;
        // every_batch: the data is on disk before the name says "sealed", and the name is
        // before this returns. Until then a power cut leaves it the open journal, which
        // recovery replays all the same.
        let kept = (if every_batch { f.sync_data() } else { Ok(()) })
            .and_then(|()| fs::rename(dir.join(JOURNAL_FILE), dir.join(HELD_FILE)));
        if let Err(e) = kept {
            self.metrics.io_errors.inc();
            tracing::warn!(error = %e, "cannot keep a sealed batch in its journal; copying it into a segment");
            return false;
        }
        if every_batch {
            sync_dir(dir);
        }
        let file = j.file.take();
        let bytes = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(batch.body.len() as u64, |m| m.len());
        let generation = j.generation;
        let next = generation + 1;
        match self.fresh_journal(next) {
            Ok(f) => j.file = Some(f),
            Err(e) => {
                self.metrics.io_errors.inc();
                tracing::error!(error = %e, "cannot start a new spool journal; open batches are only in memory");
            }
        }
        j.start(next);
        drop(j);
        inner.held = Some(Held {
            batch: Arc::clone(batch),
            generation,
            file,
            bytes,
            synced: every_batch,
        });
        inner.disk_bytes += bytes;
        inner.pending_points += batch.points as u64;
        inner.pending_batches += 1;
        self.update_gauges(inner);
        true
    }

    /// The next open journal, empty at `generation`: the spare file when there is one (its
    /// pages are in the page cache; its records, of older generations, read as the end),
    /// else a new file.
    fn fresh_journal(&self, generation: u64) -> std::io::Result<File> {
        let dir = &self.settings.dir;
        let (spare, open) = (dir.join(SPARE_FILE), dir.join(JOURNAL_FILE));
        let header = journal_header(generation);
        if let Ok(mut f) = OpenOptions::new().write(true).open(&spare) {
            // Emptied first, renamed after: a crash in between leaves a spare, which
            // start-up deletes, never a journal showing a delivered batch's records.
            let reused = f
                .write_all_at(&header, 0)
                .and_then(|()| fs::rename(&spare, &open))
                .and_then(|()| f.seek(SeekFrom::Start(JOURNAL_HEADER as u64)));
            if reused.is_ok() {
                return Ok(f);
            }
            remove(&spare);
        }
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&open)?;
        f.write_all(&header)?;
        Ok(f)
    }

    /// The store took the held batch of `generation`: its file becomes the spare.
    fn release_held(&self, generation: u64) {
        let mut inner = self.lock();
        let Some(held) = inner.held.take_if(|h| h.generation == generation) else {
            return;
        };
        inner.pending_batches -= 1;
        inner.pending_points -= held.batch.points as u64;
        inner.disk_bytes -= held.bytes;
        self.update_gauges(&inner);
        drop(held.file);
        // Under the lock: a batch held meanwhile would be renamed onto this very name.
        let dir = &self.settings.dir;
        if let Err(e) = fs::rename(dir.join(HELD_FILE), dir.join(SPARE_FILE)) {
            tracing::warn!(error = %e, "cannot keep a delivered batch's journal for reuse; deleting it");
            remove(&dir.join(HELD_FILE));
        }
        drop(inner);
        self.space.notify_waiters();
    }

    /// The file of new segment `id`, holding the magic and an end mark: an emptied segment's
    /// file when one is kept (its pages are still in the page cache), else a new one.
    fn new_segment_file(&self, inner: &mut Inner, id: u64) -> Result<File, SpoolError> {
        let dir = &self.settings.dir;
        let path = segment_path(dir, id);
        let every_batch = self.settings.fsync == Fsync::EveryBatch;
        let mut head = [0u8; SEGMENT_MAGIC.len() + RECORD_HEADER];
        head[..SEGMENT_MAGIC.len()].copy_from_slice(SEGMENT_MAGIC);
        while let Some(free) = inner.free.pop() {
            // Emptied first, renamed after: a crash in between leaves a `.free` file, never
            // a segment holding batches that were already delivered.
            let reused = OpenOptions::new()
                .write(true)
                .open(&free)
                .and_then(|f| {
                    f.write_all_at(&head, 0)?;
                    if every_batch {
                        f.sync_data()?;
                    }
                    Ok(f)
                })
                .and_then(|f| fs::rename(&free, &path).map(|()| f));
            match reused {
                Ok(f) => {
                    if every_batch {
                        sync_dir(dir);
                    }
                    return Ok(f);
                }
                Err(e) => {
                    tracing::warn!(file = %free.display(), error = %e, "cannot reuse an emptied spool segment; deleting it");
                    remove(&free);
                }
            }
        }
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all_at(&head, 0).map_err(io_err(&path))?;
        if every_batch {
            // The new directory entry must survive too, not only the file's bytes.
            sync_dir(dir);
        }
        Ok(file)
    }

    /// Deletes the file of a segment whose batches were all delivered, or keeps it under
    /// a [`FREE_SUFFIX`] name for the next segment (up to [`FREE_SEGMENTS`] files).
    fn retire(&self, inner: &mut Inner, id: u64) {
        let path = segment_path(&self.settings.dir, id);
        if inner.free.len() < FREE_SEGMENTS {
            let free = free_path(&self.settings.dir, id);
            match fs::rename(&path, &free) {
                Ok(()) => {
                    inner.free.push(free);
                    return;
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot keep an emptied spool segment for reuse");
                }
            }
        }
        remove(&path);
    }

    fn close_open(&self, inner: &mut Inner) -> Result<(), SpoolError> {
        if let Some((id, file)) = inner.open.take() {
            file.sync_data()
                .map_err(io_err(&segment_path(&self.settings.dir, id)))?;
        }
        Ok(())
    }

    fn drop_oldest(&self, inner: &mut Inner) {
        let Some(seg) = inner.segments.pop_front() else {
            return;
        };
        if inner.open.as_ref().is_some_and(|(id, _)| *id == seg.id) {
            inner.open = None;
        }
        let points: u64 = seg.records.iter().map(|r| u64::from(r.points)).sum();
        inner.pending_points -= points;
        inner.pending_batches -= seg.records.len() as u64;
        inner.disk_bytes -= seg.bytes;
        remove(&segment_path(&self.settings.dir, seg.id));
        self.metrics.dropped.add(points);
        tracing::error!(
            segment = seg.id,
            points,
            batches = seg.records.len(),
            max_bytes = self.settings.max_bytes,
            "spool full, dropped the oldest segment"
        );
        self.update_gauges(inner);
    }

    /// The oldest unacknowledged batch, read back from disk, or `None` when the spool is
    /// empty. A record that cannot be read back (deleted or damaged file) is logged,
    /// counted and skipped so that it never blocks the rest.
    pub async fn front(self: &Arc<Self>) -> Option<(Arc<Batch>, RecordId)> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.front_blocking())
            .await
            .ok()
            .flatten()
    }

    fn front_blocking(&self) -> Option<(Arc<Batch>, RecordId)> {
        if let Some(h) = &self.lock().held {
            let id = RecordId {
                segment: HELD_SEGMENT,
                offset: h.generation,
            };
            return Some((Arc::clone(&h.batch), id));
        }
        loop {
            let (id, meta) = {
                let inner = self.lock();
                let seg = inner.segments.iter().find(|s| !s.records.is_empty())?;
                (seg.id, *seg.records.front()?)
            };
            let rid = RecordId {
                segment: id,
                offset: meta.offset,
            };
            if let Some((_, batch)) = self.lock_recent().iter().find(|(r, _)| *r == rid) {
                return Some((Arc::clone(batch), rid));
            }
            self.metrics.read_back.inc();
            match self.read_record(id, meta) {
                Ok(batch) => return Some((Arc::new(batch), rid)),
                Err(e) => {
                    self.metrics.io_errors.inc();
                    tracing::error!(segment = id, offset = meta.offset, error = %e, points = meta.points, "cannot read a spooled batch back; skipping it");
                    self.ack_blocking(rid);
                }
            }
        }
    }

    fn read_record(&self, id: u64, meta: RecordMeta) -> Result<Batch, String> {
        let path = segment_path(&self.settings.dir, id);
        let mut file = File::open(&path).map_err(|e| e.to_string())?;
        file.seek(SeekFrom::Start(meta.offset))
            .map_err(|e| e.to_string())?;
        let mut header = [0u8; RECORD_HEADER];
        file.read_exact(&mut header).map_err(|e| e.to_string())?;
        let (len, crc, points) = header_words(&header);
        if len != meta.len {
            return Err(format!(
                "record header says {len} bytes where the index has {}",
                meta.len
            ));
        }
        // Straight into a reused buffer: no zeroing, no header to cut off afterwards.
        let mut buf = self.take_buffer(len as usize);
        (&mut file)
            .take(u64::from(len))
            .read_to_end(&mut buf)
            .map_err(|e| e.to_string())?;
        if buf.len() != len as usize {
            return Err(format!("{:?}", Damage::TornPayload));
        }
        if record_crc(len, points, &buf) != crc {
            return Err(format!("{:?}", Damage::Checksum));
        }
        // The CRC matched, so this only fails on a record some bug wrote: the store would
        // refuse the batch anyway, and the error names the segment.
        std::str::from_utf8(&buf).map_err(|e| e.to_string())?;
        Ok(Batch {
            body: buf,
            points: points as usize,
        })
    }

    /// Marks the batch `id` (from [`front`](Self::front)) as accepted by the store: it will
    /// not be sent again, also not after a restart (after a power cut it may be: the index
    /// is not fsynced).
    pub async fn ack(self: &Arc<Self>, id: RecordId) {
        let this = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || this.ack_blocking(id)).await;
    }

    fn ack_blocking(&self, id: RecordId) {
        if id.segment == HELD_SEGMENT {
            self.release_held(id.offset);
            return;
        }
        self.lock_recent().retain(|(r, _)| *r != id);
        let mut inner = self.lock();
        let Some(pos) = inner.segments.iter().position(|s| s.id == id.segment) else {
            // Dropped by drop_oldest while in flight.
            return;
        };
        let seg = &mut inner.segments[pos];
        if seg.records.front().map(|r| r.offset) != Some(id.offset) {
            return;
        }
        let Some(meta) = seg.records.pop_front() else {
            return;
        };
        let finished = seg.records.is_empty();
        let is_open = inner.open.as_ref().is_some_and(|(o, _)| *o == id.segment);
        inner.pending_points -= u64::from(meta.points);
        inner.pending_batches -= 1;
        if finished
            && !is_open
            && let Some(seg) = inner.segments.remove(pos)
        {
            inner.disk_bytes -= seg.bytes;
            self.retire(&mut inner, seg.id);
        }
        let next = inner
            .segments
            .iter()
            .find_map(|s| s.records.front().map(|r| (s.id, r.offset)))
            .unwrap_or((id.segment, meta.end()));
        self.update_gauges(&inner);
        drop(inner);
        // Not fsynced, whatever the fsync mode: a lost index update only means batches sent
        // twice after a power cut (delivery is at-least-once anyway, and the store keeps
        // one point per series and timestamp), and two fsyncs per acknowledgement made the
        // writer, which waits for them, slower than the batches arrived.
        if let Err(e) = write_index(&self.settings.dir, next) {
            self.metrics.io_errors.inc();
            tracing::warn!(error = %e, "cannot update the spool index (batches may be sent twice after a restart)");
        }
        self.space.notify_waiters();
    }

    /// Waits until a batch was pushed or the spool was closed.
    pub async fn wait(&self) {
        self.arrived.notified().await;
    }

    /// No more batches will be pushed: forces the open segment to disk.
    pub fn close(&self) {
        self.lock().dirty = true;
        self.sync();
        self.closed.store(true, Ordering::Release);
        self.arrived.notify_one();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Forces appended data to disk (the [`Fsync::Interval`] tick, and at close).
    pub fn sync(&self) {
        if let Some(f) = self.lock_journal().file.as_ref()
            && let Err(e) = f.sync_data()
        {
            self.metrics.io_errors.inc();
            tracing::error!(error = %e, "spool journal fsync failed");
        }
        let mut inner = self.lock();
        if let Some(h) = inner.held.as_mut()
            && !h.synced
        {
            match h.file.as_ref().map(File::sync_data) {
                Some(Err(e)) => {
                    self.metrics.io_errors.inc();
                    tracing::error!(error = %e, "spool fsync of a held batch failed");
                }
                _ => h.synced = true,
            }
        }
        if !inner.dirty {
            return;
        }
        if let Some((id, file)) = &inner.open
            && let Err(e) = file.sync_data()
        {
            self.metrics.io_errors.inc();
            tracing::error!(segment = *id, error = %e, "spool fsync failed");
            return;
        }
        inner.dirty = false;
    }

    /// Points waiting for the store.
    pub fn pending_points(&self) -> u64 {
        self.lock().pending_points
    }

    /// Batches waiting for the store.
    pub fn pending_batches(&self) -> u64 {
        self.lock().pending_batches
    }

    /// Bytes of spool files holding unsent batches (segments, a held journal).
    pub fn disk_bytes(&self) -> u64 {
        self.lock().disk_bytes
    }

    /// The configured cap.
    pub fn max_bytes(&self) -> u64 {
        self.settings.max_bytes
    }

    /// The fsync policy.
    pub fn fsync(&self) -> Fsync {
        self.settings.fsync
    }

    /// Whether the spool is at its cap (above 95 % of `max_bytes`).
    pub fn is_full(&self) -> bool {
        let inner = self.lock();
        inner.disk_bytes.saturating_mul(100) >= self.settings.max_bytes.saturating_mul(95)
    }
}

/// Forces the spool to disk every `interval` until `cancel` fires ([`Fsync::Interval`]).
pub async fn run_syncer(spool: Arc<Spool>, interval: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {
                let s = Arc::clone(&spool);
                let _ = tokio::task::spawn_blocking(move || s.sync()).await;
            }
        }
    }
    spool.sync();
}

fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), error = %e, "cannot delete spool segment");
    }
}

/// The file's bytes, or `None` when it does not exist.
fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>, SpoolError> {
    match fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SpoolError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// The generation in a journal's header (`None` for anything else).
fn journal_generation(data: &[u8]) -> Option<u64> {
    let h = data.get(..JOURNAL_HEADER)?;
    if !h.starts_with(JOURNAL_MAGIC) {
        return None;
    }
    Some(u64::from_le_bytes(h[8..].try_into().ok()?))
}

fn truncate(path: &Path, len: u64) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn read_index(dir: &Path) -> Option<(u64, u64)> {
    let data = fs::read(dir.join(INDEX_FILE)).ok()?;
    let bytes: [u8; 20] = data.get(..20)?.try_into().ok()?;
    let seg = u64::from_le_bytes(bytes[0..8].try_into().ok()?);
    let off = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    let crc = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
    if crc32fast::hash(&bytes[..16]) != crc {
        tracing::warn!(
            "spool index damaged; replaying every segment (some batches may be sent twice)"
        );
        return None;
    }
    Some((seg, off))
}

/// Durability: with `fsync`, returns after the new index is on disk (file and rename).
fn write_index(dir: &Path, (seg, off): (u64, u64)) -> std::io::Result<()> {
    let mut bytes = [0u8; 20];
    bytes[0..8].copy_from_slice(&seg.to_le_bytes());
    bytes[8..16].copy_from_slice(&off.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("ack.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
    }
    fs::rename(&tmp, dir.join(INDEX_FILE))?;
    Ok(())
}

#[cfg(test)]
mod tests;

/// The journal's header for `generation`.
fn journal_header(generation: u64) -> [u8; JOURNAL_HEADER] {
    let mut h = [0u8; JOURNAL_HEADER];
    h[..8].copy_from_slice(JOURNAL_MAGIC);
    h[8..].copy_from_slice(&generation.to_le_bytes());
    h
}

/// A journal record's header (a segment record's, its CRC also covering the generation,
/// then the generation) and the part of `payload` it covers.
fn journal_record_parts(
    generation: u64,
    points: u32,
    payload: &[u8],
) -> ([u8; JOURNAL_RECORD_HEADER], &[u8]) {
    let gen_bytes = generation.to_le_bytes();
    let (words, payload) = record_parts_after(&gen_bytes, points, payload);
    let mut h = [0u8; JOURNAL_RECORD_HEADER];
    h[..RECORD_HEADER].copy_from_slice(&words);
    h[RECORD_HEADER..].copy_from_slice(&gen_bytes);
    (h, payload)
}

/// Encodes one journal record of `generation` onto `out` (tests and the fuzz target).
pub fn encode_journal_record(out: &mut Vec<u8>, generation: u64, points: u32, payload: &[u8]) {
    let (header, payload) = journal_record_parts(generation, points, payload);
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// The open batch a journal holds: its records of the header's generation, in order, up to
/// the first that is not one. Returns the batch and whether the journal ended in damage (a
/// torn write, a flipped bit) rather than at its end (end of file, or an intact record of an
/// older generation left from a longer batch). Never panics, whatever the bytes (fuzz target
/// `spool_journal`).
pub fn journal_batch(data: &[u8]) -> (Batch, bool) {
    if data.starts_with(SEGMENT_MAGIC) {
        return legacy_journal_batch(data);
    }
    let mut body = Vec::new();
    let mut points = 0usize;
    let generation = match data.get(..JOURNAL_HEADER) {
        Some(h) if h.starts_with(JOURNAL_MAGIC) => {
            u64::from_le_bytes(h[8..].try_into().unwrap_or_default())
        }
        _ => return (Batch { body, points }, !data.is_empty()),
    };
    let mut at = JOURNAL_HEADER;
    loop {
        let Some(h) = data.get(at..at + JOURNAL_RECORD_HEADER) else {
            // The end, or a header cut short by a torn write.
            return (Batch { body, points }, at != data.len());
        };
        let (len, crc, n) = header_words(h);
        let gen_bytes = &h[RECORD_HEADER..];
        let record_gen = u64::from_le_bytes(gen_bytes.try_into().unwrap_or_default());
        let start = at + JOURNAL_RECORD_HEADER;
        let intact = len <= MAX_RECORD
            && data
                .get(start..start + len as usize)
                .is_some_and(|p| crc_after(gen_bytes, len, n, p) == crc);
        if !intact {
            return (Batch { body, points }, true);
        }
        if record_gen != generation {
            // Left over from an older, longer batch: already sealed into a segment.
            return (Batch { body, points }, record_gen > generation);
        }
        let payload = &data[start..start + len as usize];
        if std::str::from_utf8(payload).is_err() {
            return (Batch { body, points }, true);
        }
        body.extend_from_slice(payload);
        points += n as usize;
        at = start + len as usize;
    }
}

/// [`journal_batch`] for a journal in the segment format (written before generations).
fn legacy_journal_batch(data: &[u8]) -> (Batch, bool) {
    let scan = scan_segment(data);
    let mut body = Vec::new();
    let mut points = 0usize;
    for r in &scan.records {
        let start = r.offset as usize;
        let Some(rec) = data.get(start..start + RECORD_HEADER + r.len as usize) else {
            continue;
        };
        if let Ok((meta, payload)) = decode_record(rec)
            && std::str::from_utf8(payload).is_ok()
        {
            body.extend_from_slice(payload);
            points += meta.points as usize;
        }
    }
    (Batch { body, points }, scan.damage.is_some())
}
