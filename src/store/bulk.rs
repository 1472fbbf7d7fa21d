//! Writes and reads of many entries at once: imports, replacing a whole ABS
//! list, and the full load an engine makes at start and when it falls behind
//! the log.

use rusqlite::params;

use super::entries::{List, NewEntry, exists, kind_from, row_key, source_from, upsert};
use super::log::{Change, last_seq, log};
use super::settings::pairs;
use super::{Store, StoreError, ms, now_ms};
use crate::policy::ident::Key;
use crate::policy::lists::{ALLOW, IdMap, Meta, Source, with_bit};

/// Bulk adds larger than this are logged as one "reload" instead of one
/// change per entry, so a million-entry import does not flood the log.
pub const LOG_EACH_MAX: usize = 1_000;

/// What a full load read besides the lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The log position the load reflects.
    pub seq: u64,
    /// Stored switches (word, on); switches never set keep their config value.
    pub switches: Vec<(String, bool)>,
    /// Stored `enable_blocking` overrides (API, on).
    pub api_blocking: Vec<(String, bool)>,
    /// Stored rows that no longer parse (skipped).
    pub skipped: u64,
}

impl Store {
    /// For a bulk write, a page cache big enough to hold the indexes being
    /// built, so SQLite does not spill half-built pages to the WAL and write
    /// them again; restored to the default when the guard drops (engines keep
    /// their connections, and their memory, for a long time).
    fn bulk_cache(&self, n: usize) -> Option<BulkCache<'_>> {
        (n > 10_000).then(|| {
            // KiB: about 200 bytes of table and index per entry.
            // At most 64 MiB: a host-role process that took in a large ABS
            // list keeps what malloc does not give back.
            let kib = (n / 5).clamp(16_384, 64 * 1024);
            let _ = self.conn().pragma_update(None, "cache_size", -(kib as i64));
            BulkCache(self)
        })
    }

    /// Adds many entries in one transaction; `progress` is called with the
    /// number done so far every few thousand entries. Returns how many were new.
    pub fn add_many(
        &self,
        list: List,
        entries: &[NewEntry],
        source: Source,
        progress: &mut dyn FnMut(usize),
    ) -> Result<usize, StoreError> {
        let now = now_ms();
        let _big = self.bulk_cache(entries.len());
        self.write(|tx| {
            let mut new = 0;
            for (i, e) in entries.iter().enumerate() {
                if !exists(tx, list, &e.id, now)? {
                    new += 1;
                }
                upsert(tx, list, e, source, now)?;
                if entries.len() <= LOG_EACH_MAX {
                    log(
                        tx,
                        &Change::Add {
                            list,
                            id: e.id.clone(),
                            source,
                            expiry: e.expiry,
                        },
                    )?;
                }
                if i % 4096 == 4095 {
                    progress(i + 1);
                }
            }
            if entries.len() > LOG_EACH_MAX {
                log(tx, &Change::Reload)?;
            }
            progress(entries.len());
            Ok(new)
        })
    }

    /// Replaces every deny entry of `source` (an ABS list fetched whole).
    pub fn replace_source(&self, source: Source, entries: &[NewEntry]) -> Result<u64, StoreError> {
        self.replace_source_with(source, entries, None)
    }

    /// [`Store::replace_source`] of the ABS list with the digest of what was
    /// fetched, recorded in the same transaction (an identical list fetched
    /// later is then not written again).
    pub fn replace_abs_list(&self, entries: &[NewEntry], digest: &str) -> Result<u64, StoreError> {
        self.replace_source_with(Source::Abs, entries, Some(digest))
    }

    fn replace_source_with(
        &self,
        source: Source,
        entries: &[NewEntry],
        digest: Option<&str>,
    ) -> Result<u64, StoreError> {
        let now = now_ms();
        let _big = self.bulk_cache(entries.len());
        self.write(|tx| {
            tx.execute(
                "DELETE FROM entries WHERE list = 0 AND source = ?1",
                params![source as i64],
            )?;
            for e in entries {
                upsert(tx, List::Deny, e, source, now)?;
            }
            // Whoever replaced the list sets the digest of what it wrote;
            // a stale one must never make an identical-looking list skip.
            tx.execute(
                "DELETE FROM meta WHERE key = ?1",
                params![super::settings::META_ABS_DIGEST],
            )?;
            if let Some(d) = digest {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                    params![super::settings::META_ABS_DIGEST, d],
                )?;
            }
            log(tx, &Change::ReloadSource(source))
        })
    }

    /// Loads every unexpired entry into one new map holding both lists, built
    /// aside in one consistent snapshot, in insertion order.
    pub fn load(&self) -> Result<(IdMap, Loaded), StoreError> {
        let now = now_ms();
        self.read(|tx| {
            let mut loaded = Loaded {
                seq: last_seq(tx)?,
                switches: pairs(tx, "SELECT name, on_ FROM switches ORDER BY name")?,
                api_blocking: pairs(tx, "SELECT api, on_ FROM api_blocking ORDER BY api")?,
                skipped: 0,
            };
            let (nd, na): (i64, i64) = tx.query_row(
                "SELECT count(*) FILTER (WHERE list = 0), count(*) FILTER (WHERE list = 1) \
                 FROM entries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let mut lists = IdMap::with_capacity((nd + na) as usize);
            let mut st = tx.prepare(
                "SELECT list, kind, name, value, source, expiry FROM entries \
                 WHERE expiry = 0 OR expiry > ?1 ORDER BY id",
            )?;
            let mut rows = st.query(params![ms(now)])?;
            while let Some(r) = rows.next()? {
                let list = List::from_i64(r.get(0)?);
                let kind = kind_from(r.get(1)?);
                let source = source_from(r.get(4)?);
                let expiry: i64 = r.get(5)?;
                let key = match kind {
                    Some(k) => {
                        let name = r.get_ref(2)?.as_str()?;
                        let value = r.get_ref(3)?.as_str()?;
                        row_key(k, name, value)
                    }
                    None => None,
                };
                match (list, key, source) {
                    (Some(List::Deny), Some(key), Some(s)) => {
                        lists.add_unshared(key, s, expiry as u64);
                    }
                    (Some(List::Allow), Some(key), Some(_)) => {
                        lists.add_allow_unshared(key, expiry as u64);
                    }
                    _ => loaded.skipped += 1,
                }
            }
            Ok((lists, loaded))
        })
    }
}

impl Store {
    /// Sets how long a statement waits for another connection's lock
    /// before it fails with "database is locked" (an event-loop host waits
    /// for none and tries again on its next tick).
    pub fn set_busy_timeout(&self, d: std::time::Duration) -> Result<(), StoreError> {
        self.conn().busy_timeout(d).map_err(|e| self.err(e))
    }

    /// The stored switches and per-API `enable_blocking` overrides.
    pub fn load_settings(&self) -> Result<Loaded, StoreError> {
        self.read(|tx| {
            Ok(Loaded {
                seq: last_seq(tx)?,
                switches: pairs(tx, "SELECT name, on_ FROM switches ORDER BY name")?,
                api_blocking: pairs(tx, "SELECT api, on_ FROM api_blocking ORDER BY api")?,
                skipped: 0,
            })
        })
    }

    /// Calls `start` with the log position the entries reflect, then `f`
    /// with every unexpired entry, merged per identifier (one [`Meta`] with
    /// all its sources and the allow list), read in one transaction; returns
    /// the log position and how many rows were skipped as unreadable. For a
    /// snapshot build: `Meta::seq` and `Meta::changed` are 0.
    pub fn for_each_merged<S>(
        &self,
        start: impl FnOnce(u64) -> S,
        mut f: impl FnMut(&mut S, Key, Meta),
    ) -> Result<(S, u64, u64), StoreError> {
        let now = now_ms();
        self.read(|tx| {
            let seq = last_seq(tx)?;
            let mut state = start(seq);
            let mut skipped = 0;
            // Sorted by identifier so that one identifier's rows (a source
            // each, and the allow list) are adjacent and merge in one pass.
            let mut st = tx.prepare(
                "SELECT list, kind, name, value, source, expiry FROM entries \
                 WHERE expiry = 0 OR expiry > ?1 ORDER BY kind, name_key, value",
            )?;
            let mut rows = st.query(params![ms(now)])?;
            let mut cur: Option<(Key, Meta)> = None;
            while let Some(r) = rows.next()? {
                let list = List::from_i64(r.get(0)?);
                let kind = kind_from(r.get(1)?);
                let source = source_from(r.get(4)?);
                let expiry = r.get::<_, i64>(5)? as u64;
                let key = match kind {
                    Some(k) => row_key(k, r.get_ref(2)?.as_str()?, r.get_ref(3)?.as_str()?),
                    None => None,
                };
                let bit = match (list, source) {
                    (Some(List::Deny), Some(s)) => s.bit(),
                    (Some(List::Allow), Some(_)) => ALLOW,
                    _ => 0,
                };
                let Some(key) = key.filter(|_| bit != 0) else {
                    skipped += 1;
                    continue;
                };
                match &mut cur {
                    Some((k, m)) if *k == key => *m = with_bit(*m, bit, expiry),
                    _ => {
                        if let Some((k, m)) = cur.take() {
                            f(&mut state, k, m);
                        }
                        cur = Some((key, with_bit(Meta::default(), bit, expiry)));
                    }
                }
            }
            if let Some((k, m)) = cur {
                f(&mut state, k, m);
            }
            Ok((state, seq, skipped))
        })
    }
}

/// Restores the default page cache size when dropped.
struct BulkCache<'a>(&'a Store);

impl Drop for BulkCache<'_> {
    fn drop(&mut self) {
        let _ = self.0.conn().pragma_update(None, "cache_size", -2000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ident::{IdKind, Identifier, KeyRef};

    /// A row no `Identifier` could be made from (written by another tool,
    /// or by hand) is skipped on load, not listed: the request path does
    /// not probe values longer than `MAX_FIELD`, so such an entry could
    /// never match.
    #[test]
    fn load_skips_rows_an_identifier_would_refuse() {
        use crate::policy::ident::MAX_FIELD;
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let longest = "t".repeat(MAX_FIELD);
        let tok = Identifier::new(IdKind::Token, "", &longest).unwrap();
        s.add(List::Deny, &NewEntry::new(tok, 0), Source::Manual)
            .unwrap();
        let too_long = format!("{longest}t");
        s.write(|tx| {
            tx.execute(
                "INSERT INTO entries (list, kind, name, name_key, value, source, added, expiry) \
                 SELECT list, kind, name, name_key, ?1, source, added, expiry FROM entries",
                params![too_long],
            )?;
            tx.execute(
                "INSERT INTO entries (list, kind, name, name_key, value, source, added, expiry) \
                 SELECT list, kind, name, name_key, '', source, added, expiry FROM entries LIMIT 1",
                [],
            )
        })
        .unwrap();
        let (lists, loaded) = s.load().unwrap();
        assert_eq!(loaded.skipped, 2, "the too long and the empty value");
        assert_eq!(lists.deny_len(), 1);
        assert!(lists.get(&KeyRef::token(longest.as_bytes())).is_some());
    }
}
