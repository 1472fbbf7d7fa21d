//! Traffic records of engines with no shipper thread, through files.
//!
//! An evented engine (an nginx worker) has no thread, so it cannot post to
//! ABS itself; only the process that takes the host role starts a
//! [`Shipper`](super::Shipper). Every other evented engine puts its records
//! into a [`Spool`]: a bounded in-memory queue the request path `try_send`s
//! into (full: dropped and counted, never waited for), which each tick
//! appends, in one write, to the engine's own file
//! `state_dir/traffic/<pid>-<random>.spool` (directory 0700, files 0600:
//! records hold tokens, cookies and API keys in clear, because the uploader
//! obfuscates them with the host's key as the shipper does).
//!
//! One [`Uploader`] per host ships the files: every shipper thread runs one,
//! and the `flock` on `traffic/upload.lock` elects which. It renames a
//! `.spool` file to `.sending`, takes the file's `flock`, reads the whole
//! records, posts them in batches and deletes the file. A writer holds the
//! same `flock` for each write and, under it, checks that its path still
//! names its file; after the rename it does not, so it starts a new file.
//! Hence a record is read only once the write that carried it is whole, and
//! no write lands in a file after the uploader read it: no record is lost or
//! shipped twice, except by a crash (a torn last write of a writer that died
//! is skipped and counted; an uploader that dies between a post and the
//! delete leaves the file to be shipped again). Files of processes that died
//! are `.spool` files like any other and are shipped the same way.
//!
//! Bounds: the queue holds [`SpoolOptions::queue_capacity`] records, what a
//! tick writes at most; a file that would pass [`SpoolOptions::file_max`]
//! bytes is left for the uploader and a new one started, which bounds what
//! the uploader reads at once; the directory holds at most
//! [`SpoolOptions::total_max`] bytes, beyond which records are dropped and
//! counted (no uploader, or ABS down for long).
//!
//! Record format: a 12-byte header (payload length, u32 LE; xxh3-64 of the
//! payload, u64 LE) and a JSON payload. A header whose length runs past the
//! end, or whose checksum does not match, ends what is read of the file.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt as Positional, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use fs4::fs_std::FileExt as Lock;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::election::Election;
use super::shipper::{REASON_WORDS, ShipperStatus, TrafficRecord, VERDICT_WORDS};
use crate::enforcer::Enforcer;
use crate::policy::Switch;
use crate::store::files;

/// The spool directory inside `state_dir`.
pub const DIR: &str = "traffic";
/// Extension of a file a writer appends to (or left by one).
pub const SPOOL_EXT: &str = "spool";
/// Extension of a file the uploader has claimed.
pub const SENDING_EXT: &str = "sending";
/// The lock file (in the spool directory) that elects the uploader.
pub const UPLOAD_LOCK: &str = "upload.lock";

/// Bytes of a record's header.
const HEADER: usize = 12;
/// Largest payload accepted: far above a real record (64 headers of 4 KiB),
/// so a larger length can only be a damaged header.
pub const MAX_RECORD: usize = 4 << 20;
/// How often a writer sums the directory's size for the total bound (in
/// between it adds its own writes).
const TOTAL_EVERY: Duration = Duration::from_secs(1);
/// How long the uploader waits for a writer's write in progress on a file it
/// has just claimed.
const CLAIM_WAIT: Duration = Duration::from_millis(500);

/// Where and how much an engine spools.
#[derive(Clone, Debug)]
pub struct SpoolOptions {
    /// The spool directory (`state_dir/traffic`).
    pub dir: PathBuf,
    /// Records the in-memory queue holds between ticks.
    pub queue_capacity: usize,
    /// Bytes per file before the writer starts a new one (a tick's write is
    /// never split: a file passes this by at most one tick's records).
    pub file_max: u64,
    /// Bytes of every file in the directory together; beyond, records are
    /// dropped and counted.
    pub total_max: u64,
}

impl SpoolOptions {
    /// The options a configuration implies (files in `state_dir/traffic`).
    pub fn from_config(c: &crate::policy::Config) -> SpoolOptions {
        SpoolOptions {
            dir: c.state_dir.join(DIR),
            queue_capacity: 10_000,
            file_max: 4 << 20,
            total_max: 64 << 20,
        }
    }
}

/// The JSON payload of a stored record (written).
#[derive(Serialize)]
struct Out<'a> {
    time_ms: u64,
    client_ip: &'a str,
    client_port: u16,
    method: &'a str,
    uri: &'a str,
    http_version: &'a str,
    host: &'a str,
    api: Option<&'a str>,
    headers: &'a [(String, String)],
    username: Option<&'a str>,
    token: Option<&'a str>,
    cookie: Option<&'a (String, String)>,
    api_key: Option<&'a (String, String)>,
    response_status: Option<u16>,
    verdict: &'a str,
    reason: &'a str,
    would_block: bool,
}

/// The JSON payload of a stored record (read).
#[derive(Deserialize)]
struct In {
    time_ms: u64,
    client_ip: String,
    client_port: u16,
    method: String,
    uri: String,
    http_version: String,
    host: String,
    api: Option<String>,
    headers: Vec<(String, String)>,
    username: Option<String>,
    token: Option<String>,
    cookie: Option<(String, String)>,
    api_key: Option<(String, String)>,
    response_status: Option<u16>,
    verdict: String,
    reason: String,
    would_block: bool,
}

/// The `'static` word of `list` equal to `w`.
fn word(list: &[&'static str], w: &str) -> Option<&'static str> {
    list.iter().copied().find(|k| *k == w)
}

/// Appends `rec`'s framed record to `out`. False (and `out` unchanged) when
/// its payload is larger than [`MAX_RECORD`].
pub fn encode(rec: &TrafficRecord, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    let o = Out {
        time_ms: rec.time_ms,
        client_ip: &rec.client_ip,
        client_port: rec.client_port,
        method: &rec.method,
        uri: &rec.uri,
        http_version: &rec.http_version,
        host: &rec.host,
        api: rec.api.as_deref(),
        headers: &rec.headers,
        username: rec.username.as_deref(),
        token: rec.token.as_deref(),
        cookie: rec.cookie.as_ref(),
        api_key: rec.api_key.as_ref(),
        response_status: rec.response_status,
        verdict: rec.verdict,
        reason: rec.reason,
        would_block: rec.would_block,
    };
    // Serialising strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &o);
    let len = out.len() - start - HEADER;
    if len > MAX_RECORD {
        out.truncate(start);
        return false;
    }
    let sum = xxh3_64(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&sum.to_le_bytes());
    true
}

/// What [`decode`] read from a file's bytes.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The records, each with the offset just past it.
    pub records: Vec<(TrafficRecord, usize)>,
    /// Whole records whose payload could not be read (skipped).
    pub bad: u64,
    /// Offset just past the last whole record.
    pub end: usize,
    /// Bytes follow `end` that are not a whole record: a write torn by a
    /// crash, or damage.
    pub torn: bool,
}

/// Reads the whole records of `buf` (a spool file's bytes) from its start.
pub fn decode(buf: &[u8]) -> Decoded {
    let mut d = Decoded::default();
    let mut at = 0;
    while buf.len() - at >= HEADER {
        let len = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap_or_default()) as usize;
        let sum = u64::from_le_bytes(buf[at + 4..at + HEADER].try_into().unwrap_or_default());
        let body = at + HEADER;
        if len > MAX_RECORD || buf.len() - body < len || xxh3_64(&buf[body..body + len]) != sum {
            break;
        }
        at = body + len;
        match serde_json::from_slice::<In>(&buf[body..at])
            .ok()
            .and_then(|r| {
                Some(TrafficRecord {
                    time_ms: r.time_ms,
                    client_ip: r.client_ip,
                    client_port: r.client_port,
                    method: r.method,
                    uri: r.uri,
                    http_version: r.http_version,
                    host: r.host,
                    api: r.api,
                    headers: r.headers,
                    username: r.username,
                    token: r.token,
                    cookie: r.cookie,
                    api_key: r.api_key,
                    response_status: r.response_status,
                    verdict: word(&VERDICT_WORDS, &r.verdict)?,
                    reason: word(&REASON_WORDS, &r.reason)?,
                    would_block: r.would_block,
                })
            }) {
            Some(rec) => d.records.push((rec, at)),
            None => d.bad += 1,
        }
    }
    d.end = at;
    d.torn = at < buf.len();
    d
}

/// Creates the spool directory (0700; handed to the owner of `state_dir`
/// when root creates it, like the store's files) unless it exists.
fn spool_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    files::create_state_dir(dir)?;
    files::adopt_dir_owner(dir)
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    // Without a random source the time keeps names apart well enough: the
    // pid comes first, so only this process's own files could collide, and
    // the file is created exclusively.
    if getrandom::fill(&mut b).is_err() {
        b.copy_from_slice(&crate::clock::now_ms().to_le_bytes()[..6]);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes of the files in `dir` (0 when it cannot be read).
fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    dropped_full: AtomicU64,
    spooled: AtomicU64,
    dropped_spool: AtomicU64,
}

/// The file an engine appends to.
struct Own {
    file: File,
    path: PathBuf,
}

#[derive(Default)]
struct Writer {
    file: Option<Own>,
    /// Framed records taken from the queue and not written yet (the file
    /// was being claimed by the uploader at the last tick).
    pending: Vec<u8>,
    pending_n: u64,
    /// The directory's size, as last summed plus this engine's writes since.
    total: u64,
    total_at: Option<Instant>,
    last_error: Option<String>,
}

/// An engine's traffic queue and spool file (see the module doc).
pub struct Spool {
    enforcer: Arc<Enforcer>,
    opts: SpoolOptions,
    tx: Sender<TrafficRecord>,
    rx: Receiver<TrafficRecord>,
    counters: Counters,
    writer: Mutex<Writer>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.opts.dir)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// A spool for `enforcer` (whose `enable_abs` gates submits). Creates no
    /// file until there is a record to write.
    pub fn new(enforcer: Arc<Enforcer>, opts: SpoolOptions) -> Spool {
        let (tx, rx) = bounded(opts.queue_capacity.max(1));
        Spool {
            enforcer,
            opts,
            tx,
            rx,
            counters: Counters::default(),
            writer: Mutex::new(Writer::default()),
        }
    }

    /// Queues a record without ever waiting. False when it was not queued
    /// (`enable_abs` off, or the queue full: then it is counted as dropped).
    pub fn submit(&self, rec: TrafficRecord) -> bool {
        if !self.enforcer.switch(Switch::Abs) {
            return false;
        }
        match self.tx.try_send(rec) {
            Ok(()) => {
                self.counters.accepted.fetch_add(1, Relaxed);
                true
            }
            Err(_) => {
                self.counters.dropped_full.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Appends what is queued to this engine's file, in one write, without
    /// waiting: when another tick is flushing, or the uploader is claiming
    /// the file, the records wait for the next call. For the host's tick.
    pub fn flush(&self) {
        match self.writer.try_lock() {
            Ok(mut w) => self.flush_with(&mut w),
            Err(TryLockError::Poisoned(e)) => self.flush_with(&mut e.into_inner()),
            Err(TryLockError::WouldBlock) => {}
        }
    }

    /// Writes everything queued, trying for up to `wait`: for a clean
    /// shutdown. What still cannot be written is dropped and counted.
    pub fn finish(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut w = self.lock();
        loop {
            self.flush_with(&mut w);
            if (w.pending.is_empty() && self.rx.is_empty()) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let left = w.pending_n + self.rx.try_iter().count() as u64;
        self.counters.dropped_spool.fetch_add(left, Relaxed);
        w.pending.clear();
        w.pending_n = 0;
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_pending(&self, w: &mut Writer) {
        self.counters.dropped_spool.fetch_add(w.pending_n, Relaxed);
        w.pending.clear();
        w.pending_n = 0;
    }

    fn flush_with(&self, w: &mut Writer) {
        // Records held over from a tick that could not write count against
        // the queue: at most a queue's worth is in memory, and a tick's
        // write is bounded. The rest stay queued (and new ones are dropped
        // at submit while the queue is full).
        let room = self.opts.queue_capacity.max(1) as u64;
        for rec in self
            .rx
            .try_iter()
            .take(room.saturating_sub(w.pending_n) as usize)
        {
            if encode(&rec, &mut w.pending) {
                w.pending_n += 1;
            } else {
                self.counters.dropped_spool.fetch_add(1, Relaxed);
            }
        }
        if w.pending.is_empty() {
            return;
        }
        if w.total_at.is_none_or(|t| t.elapsed() >= TOTAL_EVERY) {
            w.total = dir_size(&self.opts.dir);
            w.total_at = Some(Instant::now());
        }
        if w.total + w.pending.len() as u64 > self.opts.total_max {
            self.drop_pending(w);
            return;
        }
        match self.write(w) {
            Ok(true) => {
                self.counters.spooled.fetch_add(w.pending_n, Relaxed);
                w.total += w.pending.len() as u64;
                w.pending.clear();
                w.pending_n = 0;
                w.last_error = None;
            }
            Ok(false) => {}
            Err(e) => {
                // The file is in an unknown state: the next write starts a
                // new one. The records are dropped rather than held, since
                // the cause (a full disk) tends to last.
                w.file = None;
                w.last_error = Some(format!("writing the traffic spool: {e}"));
                self.drop_pending(w);
            }
        }
    }

    /// Creates a new spool file.
    fn create(&self) -> io::Result<Own> {
        spool_dir(&self.opts.dir)?;
        let name = format!("{}-{}.{SPOOL_EXT}", std::process::id(), random_suffix());
        let path = self.opts.dir.join(name);
        let file = files::create_new_private(&path)?;
        Ok(Own { file, path })
    }

    /// Appends the pending records to this engine's file under its lock.
    /// Ok(false): not written now (the uploader holds the file's lock).
    fn write(&self, w: &mut Writer) -> io::Result<bool> {
        // Two rounds: the file may have been claimed (or be full), and then
        // a new one is started once.
        for _ in 0..2 {
            if w.file.is_none() {
                w.file = Some(self.create()?);
            }
            let Some(own) = &w.file else { continue };
            if !Lock::try_lock_exclusive(&own.file)? {
                return Ok(false);
            }
            let r = (|| -> io::Result<bool> {
                let m = own.file.metadata()?;
                // Under the lock: is the path still this file? After the
                // uploader renamed it, nothing more may land in it.
                let ours =
                    fs::metadata(&own.path).is_ok_and(|p| p.ino() == m.ino() && p.dev() == m.dev());
                if !ours || (m.len() > 0 && m.len() + w.pending.len() as u64 > self.opts.file_max) {
                    return Ok(false);
                }
                if let Err(e) = own.file.write_all_at(&w.pending, m.len()) {
                    // Cut a torn record off, so the file stays whole records.
                    let _ = own.file.set_len(m.len());
                    return Err(e);
                }
                Ok(true)
            })();
            let _ = Lock::unlock(&own.file);
            match r {
                Ok(true) => return Ok(true),
                // Claimed or full: a full one is left for the uploader.
                Ok(false) => w.file = None,
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// This spool's counters in a shipper's terms: `queued`, `accepted`,
    /// `dropped_full` (queue or spool full, or a write failed), `spooled`.
    pub fn status(&self) -> ShipperStatus {
        let mut st = ShipperStatus {
            enabled: self.enforcer.switch(Switch::Abs),
            ..ShipperStatus::default()
        };
        self.add_to(&mut st);
        st
    }

    /// Adds this spool's counters to a shipper's (an evented engine that
    /// took the host role has both).
    pub fn add_to(&self, st: &mut ShipperStatus) {
        let c = &self.counters;
        st.queued += self.rx.len() as u64;
        st.accepted += c.accepted.load(Relaxed);
        st.dropped_full += c.dropped_full.load(Relaxed) + c.dropped_spool.load(Relaxed);
        st.spooled += c.spooled.load(Relaxed);
        if st.last_error.is_none() {
            if let Ok(w) = self.writer.try_lock() {
                st.last_error = w.last_error.clone();
            }
        }
    }
}

/// What one [`Uploader::scan`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Whether this process held the upload lock.
    pub leader: bool,
    /// Records ABS took.
    pub shipped: u64,
    /// Records skipped: unreadable, or torn by a crash.
    pub bad: u64,
    /// Files shipped whole and removed.
    pub files: u64,
    /// A post failed every try: the rest waits for a later scan.
    pub failed: bool,
}

/// Ships the host's spool files (see the module doc); run by a shipper thread.
#[derive(Debug)]
pub struct Uploader {
    dir: PathBuf,
    election: Election,
    /// Offsets already shipped of claimed files whose post failed, so a
    /// later scan goes on from there.
    resume: HashMap<PathBuf, usize>,
}

impl Uploader {
    /// An uploader for the spool directory `dir`.
    pub fn new(dir: PathBuf) -> Uploader {
        Uploader {
            election: Election::new(dir.join(UPLOAD_LOCK)),
            dir,
            resume: HashMap::new(),
        }
    }

    /// When this process holds the upload lock: claims every spool file and
    /// posts its records, `batch_max` at a time, through `post` (true: ABS
    /// took them), deleting each file once shipped. Stops at the first
    /// failed post; what is left stays for a later scan.
    pub fn scan(
        &mut self,
        batch_max: usize,
        post: &mut dyn FnMut(Vec<TrafficRecord>) -> bool,
    ) -> ScanReport {
        let mut rep = ScanReport::default();
        if !self.dir.is_dir() {
            return rep;
        }
        // Only one process ships: two would claim and send each other's files.
        if !self.election.try_lead().unwrap_or(false) {
            return rep;
        }
        rep.leader = true;
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return rep;
        };
        let mut claimed = Vec::new();
        for e in rd.flatten() {
            let p = e.path();
            match p.extension().and_then(|x| x.to_str()) {
                Some(SENDING_EXT) => claimed.push(p),
                Some(SPOOL_EXT) => {
                    let to = p.with_extension(SENDING_EXT);
                    if fs::rename(&p, &to).is_ok() {
                        claimed.push(to);
                    }
                }
                _ => {}
            }
        }
        claimed.sort();
        self.resume.retain(|p, _| claimed.contains(p));
        for p in claimed {
            if !self.ship_file(&p, batch_max.max(1), post, &mut rep) {
                rep.failed = true;
                break;
            }
        }
        rep
    }

    /// Ships one claimed file. False when a post failed.
    fn ship_file(
        &mut self,
        path: &Path,
        batch_max: usize,
        post: &mut dyn FnMut(Vec<TrafficRecord>) -> bool,
        rep: &mut ScanReport,
    ) -> bool {
        let Ok(mut f) = File::open(path) else {
            return true;
        };
        // A writer that locked the file before it was renamed finishes its
        // one write; no writer writes to it once renamed and unlocked.
        let deadline = Instant::now() + CLAIM_WAIT;
        loop {
            match Lock::try_lock_exclusive(&f) {
                Ok(true) => break,
                Ok(false) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                // Busy for long, or unlockable: try again next scan.
                _ => return true,
            }
        }
        let mut buf = Vec::new();
        let read = f.read_to_end(&mut buf);
        drop(f);
        if read.is_err() {
            return true;
        }
        let start = self.resume.get(path).copied().unwrap_or(0).min(buf.len());
        let d = decode(&buf[start..]);
        if !self.resume.contains_key(path) {
            rep.bad += d.bad + u64::from(d.torn);
        }
        let mut records = d.records.into_iter().peekable();
        while records.peek().is_some() {
            let mut batch = Vec::with_capacity(batch_max);
            let mut end = 0;
            for (r, e) in records.by_ref().take(batch_max) {
                batch.push(r);
                end = e;
            }
            let n = batch.len() as u64;
            if !post(batch) {
                self.resume.entry(path.to_path_buf()).or_insert(start);
                return false;
            }
            rep.shipped += n;
            self.resume.insert(path.to_path_buf(), start + end);
        }
        self.resume.remove(path);
        if fs::remove_file(path).is_ok() {
            rep.files += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> TrafficRecord {
        TrafficRecord {
            time_ms: 1_700_000_000_000 + i,
            client_ip: "10.1.2.3".into(),
            client_port: 5555,
            method: "GET".into(),
            uri: format!("/shop/{i}?apikey=K-SECRET"),
            http_version: "1.1".into(),
            host: "shop.example".into(),
            api: Some("shop".into()),
            headers: vec![("authorization".into(), "Bearer T-SECRET".into())],
            username: Some("bob".into()),
            token: Some("T-SECRET".into()),
            cookie: Some(("JSESSIONID".into(), "C-SECRET".into())),
            api_key: None,
            response_status: Some(201),
            verdict: "block",
            reason: "deny_list",
            would_block: false,
        }
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        let mut plain = rec(1);
        plain.api = None;
        plain.username = None;
        plain.response_status = None;
        for r in [rec(0), plain.clone(), rec(2)] {
            assert!(encode(&r, &mut buf));
        }
        let d = decode(&buf);
        let got: Vec<TrafficRecord> = d.records.iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(got, vec![rec(0), plain, rec(2)]);
        assert_eq!((d.bad, d.end, d.torn), (0, buf.len(), false));
        assert_eq!(d.records[2].1, buf.len());
    }

    #[test]
    fn a_torn_or_damaged_tail_ends_the_read_and_keeps_whole_records() {
        let mut buf = Vec::new();
        assert!(encode(&rec(0), &mut buf));
        let one = buf.len();
        assert!(encode(&rec(1), &mut buf));
        for cut in [one + 1, one + HEADER, buf.len() - 1] {
            let d = decode(&buf[..cut]);
            assert_eq!(d.records.len(), 1, "cut at {cut}");
            assert_eq!((d.end, d.torn), (one, true));
        }
        let mut bad = buf.clone();
        bad[one + HEADER + 3] ^= 0x20;
        let d = decode(&bad);
        assert_eq!((d.records.len(), d.end, d.torn), (1, one, true));
        let mut huge = buf[..one].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&huge).records.len(), 1);
        assert!(decode(&[]).records.is_empty() && !decode(&[]).torn);
    }

    #[test]
    fn an_unknown_word_skips_one_record_only() {
        let mut buf = Vec::new();
        let mut odd = rec(0);
        odd.verdict = "maybe";
        for r in [rec(0), odd, rec(2)] {
            assert!(encode(&r, &mut buf));
        }
        let d = decode(&buf);
        assert_eq!((d.records.len(), d.bad, d.torn), (2, 1, false));
    }

    fn enforcer(dir: &Path) -> Arc<Enforcer> {
        std::fs::create_dir_all(dir.join("api")).unwrap();
        std::fs::write(
            dir.join("ase.conf"),
            format!(
                "enable_abs=true\nstate_dir={}\n",
                dir.join("state").display()
            ),
        )
        .unwrap();
        Arc::new(Enforcer::open(&dir.join("ase.conf")).unwrap())
    }

    fn spool(dir: &Path, file_max: u64, total_max: u64) -> Spool {
        Spool::new(
            enforcer(dir),
            SpoolOptions {
                dir: dir.join("state").join(DIR),
                queue_capacity: 100,
                file_max,
                total_max,
            },
        )
    }

    fn upload_all(dir: &Path) -> (Vec<TrafficRecord>, ScanReport) {
        let mut got = Vec::new();
        let mut u = Uploader::new(dir.join("state").join(DIR));
        let rep = u.scan(7, &mut |b| {
            got.extend(b);
            true
        });
        (got, rep)
    }

    #[test]
    fn written_records_are_uploaded_once_and_files_removed() {
        let d = tempfile::tempdir().unwrap();
        let s = spool(d.path(), 1 << 20, 64 << 20);
        for i in 0..10 {
            assert!(s.submit(rec(i)));
        }
        s.flush();
        for i in 10..20 {
            assert!(s.submit(rec(i)));
        }
        s.flush();
        let st = s.status();
        assert_eq!((st.spooled, st.queued, st.dropped_full), (20, 0, 0));
        let files: Vec<_> = fs::read_dir(d.path().join("state/traffic"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(files.len(), 1, "one file, appended to");
        let (got, rep) = upload_all(d.path());
        assert_eq!(got, (0..20).map(rec).collect::<Vec<_>>());
        assert_eq!((rep.shipped, rep.files, rep.bad), (20, 1, 0));
        // The writer sees its file was claimed and starts another.
        assert!(s.submit(rec(20)));
        s.flush();
        let (got, _) = upload_all(d.path());
        assert_eq!(got, vec![rec(20)]);
        let (got, _) = upload_all(d.path());
        assert!(got.is_empty(), "nothing shipped twice");
    }

    #[test]
    fn a_failed_post_resumes_where_it_stopped() {
        let d = tempfile::tempdir().unwrap();
        let s = spool(d.path(), 1 << 20, 64 << 20);
        for i in 0..20 {
            s.submit(rec(i));
        }
        s.flush();
        let mut u = Uploader::new(d.path().join("state").join(DIR));
        let mut got = Vec::new();
        let mut posts = 0;
        let rep = u.scan(7, &mut |b| {
            posts += 1;
            if posts == 2 {
                return false;
            }
            got.extend(b);
            true
        });
        assert!(rep.failed && rep.shipped == 7, "{rep:?}");
        let rep = u.scan(7, &mut |b| {
            got.extend(b);
            true
        });
        assert_eq!((rep.shipped, rep.files), (13, 1));
        assert_eq!(got, (0..20).map(rec).collect::<Vec<_>>());
    }

    #[test]
    fn bounds_rotate_files_and_drop_beyond_the_total() {
        let d = tempfile::tempdir().unwrap();
        let mut one = Vec::new();
        encode(&rec(0), &mut one);
        let per = one.len() as u64;
        let s = spool(d.path(), per * 3, per * 7 + 1);
        for i in 0..10 {
            assert!(s.submit(rec(i)));
            s.flush();
        }
        let st = s.status();
        assert_eq!((st.spooled, st.dropped_full), (7, 3), "{st:?}");
        let n = fs::read_dir(d.path().join("state/traffic"))
            .unwrap()
            .count();
        assert_eq!(n, 3, "files of at most 3 records");
        let (got, _) = upload_all(d.path());
        assert_eq!(got.len(), 7);
    }

    #[test]
    fn finish_writes_what_is_queued() {
        let d = tempfile::tempdir().unwrap();
        let s = spool(d.path(), 1 << 20, 64 << 20);
        for i in 0..5 {
            s.submit(rec(i));
        }
        s.finish(Duration::from_secs(1));
        assert_eq!(s.status().spooled, 5);
        assert_eq!(upload_all(d.path()).0.len(), 5);
    }
}
