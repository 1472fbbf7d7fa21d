//! The list rows: what an entry is, and adding, removing, listing and
//! counting them one by one. Bulk writes and the full load are in `bulk`.

use rusqlite::{OptionalExtension, Transaction, params};

use super::log::{Change, log};
use super::{Store, StoreError, ms, now_ms};
use crate::policy::ident::{IdKind, Identifier, IpNet, Key, KeyRef};
use crate::policy::lists::Source;

/// Which list an entry is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum List {
    /// The deny list (ASE: blacklist).
    Deny = 0,
    /// The allow list (ASE: whitelist).
    Allow = 1,
}

impl List {
    pub(super) fn from_i64(v: i64) -> Option<List> {
        match v {
            0 => Some(List::Deny),
            1 => Some(List::Allow),
            _ => None,
        }
    }
}

/// An entry to add, with what the store keeps beside the identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    /// The identifier.
    pub id: Identifier,
    /// Expiry in Unix ms; 0 = never.
    pub expiry: u64,
    /// The API it was detected on, if known.
    pub api: String,
    /// The attack code (ABS attack type, or the real-time source word).
    pub attack_code: String,
}

impl NewEntry {
    /// An entry with only an identifier and an expiry.
    pub fn new(id: Identifier, expiry: u64) -> NewEntry {
        NewEntry {
            id,
            expiry,
            api: String::new(),
            attack_code: String::new(),
        }
    }
}

/// An entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    /// Which list.
    pub list: List,
    /// The identifier.
    pub id: Identifier,
    /// The deny source (`Manual` for allow entries).
    pub source: Source,
    /// When it was first added, Unix ms.
    pub added: u64,
    /// Expiry in Unix ms; 0 = never.
    pub expiry: u64,
    /// The API it was detected on, or empty.
    pub api: String,
    /// The attack code, or empty.
    pub attack_code: String,
}

/// Entry counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Unexpired deny rows per [`Source`] (indexed by its number).
    pub deny: [u64; 6],
    /// Unexpired allow rows.
    pub allow: u64,
}

pub(super) fn source_from(v: i64) -> Option<Source> {
    u32::try_from(v).ok().and_then(Source::from_u32)
}

pub(super) fn kind_from(v: i64) -> Option<IdKind> {
    u32::try_from(v).ok().and_then(IdKind::from_u32)
}

pub(super) fn name_key(id: &Identifier) -> std::borrow::Cow<'_, str> {
    // API key names compare case-insensitively (as HTTP header names do).
    if id.kind == IdKind::ApiKey {
        std::borrow::Cow::Owned(id.name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(&id.name)
    }
}

/// The list key of a stored row, built without an intermediate
/// [`Identifier`] but checked as one: a row another writer made with an
/// empty or too long value is skipped, as `Identifier::new` would refuse it.
pub(super) fn row_key(kind: IdKind, name: &str, value: &str) -> Option<Key> {
    Identifier::check(kind, name, value).ok()?;
    if kind == IdKind::Ip {
        IpNet::parse(value).ok().map(Key::ip)
    } else {
        Some(Key::new(KeyRef::new(
            kind,
            name.as_bytes(),
            value.as_bytes(),
        )))
    }
}

impl Store {
    /// Adds one entry; returns whether the identifier was not on `list` before
    /// (under any source) and the change's sequence number.
    pub fn add(&self, list: List, e: &NewEntry, source: Source) -> Result<(bool, u64), StoreError> {
        let now = now_ms();
        self.write(|tx| {
            let existed = exists(tx, list, &e.id, now)?;
            upsert(tx, list, e, source, now)?;
            let seq = log(
                tx,
                &Change::Add {
                    list,
                    id: e.id.clone(),
                    source,
                    expiry: e.expiry,
                },
            )?;
            Ok((!existed, seq))
        })
    }

    /// Records real-time detections (identifiers, source) in one transaction.
    /// Nothing is written when `enable_ase_detected_attack` is stored as off:
    /// a detection made just before another process turned it off must not
    /// bring deleted entries back. Returns the number of identifiers written.
    pub fn record_detections(
        &self,
        batch: &[(Vec<Identifier>, Source)],
    ) -> Result<usize, StoreError> {
        let now = now_ms();
        self.write(|tx| {
            let off: Option<bool> = tx
                .query_row(
                    "SELECT on_ = 0 FROM switches WHERE name = 'ase_detected_attack'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if off == Some(true) {
                return Ok(0);
            }
            let mut n = 0;
            for (ids, source) in batch {
                for id in ids {
                    let e = NewEntry {
                        id: id.clone(),
                        expiry: 0,
                        api: String::new(),
                        attack_code: attack_code(*source).to_string(),
                    };
                    upsert(tx, List::Deny, &e, *source, now)?;
                    log(
                        tx,
                        &Change::Add {
                            list: List::Deny,
                            id: id.clone(),
                            source: *source,
                            expiry: 0,
                        },
                    )?;
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    /// Takes `id` off the sources in `mask` of `list`. Returns the sources it
    /// was removed from (0: it was not listed; nothing is logged then).
    pub fn remove(&self, list: List, id: &Identifier, mask: u8) -> Result<(u8, u64), StoreError> {
        self.write(|tx| {
            let mut st = tx.prepare_cached(
                "DELETE FROM entries WHERE list = ?1 AND kind = ?2 AND name_key = ?3 \
                 AND value = ?4 AND ((1 << source) & ?5) != 0 RETURNING source",
            )?;
            let rows = st.query_map(
                params![
                    list as i64,
                    id.kind as i64,
                    name_key(id),
                    id.value,
                    mask as i64
                ],
                |r| r.get::<_, i64>(0),
            )?;
            let mut removed = 0u8;
            for s in rows {
                if let Some(s) = source_from(s?) {
                    removed |= s.bit();
                }
            }
            if removed == 0 {
                return Ok((0, 0));
            }
            let seq = log(
                tx,
                &Change::Remove {
                    list,
                    id: id.clone(),
                    mask,
                },
            )?;
            Ok((removed, seq))
        })
    }

    /// Removes every entry of `list` with a source in `mask`; returns how many
    /// distinct identifiers lost a source.
    pub fn clear(&self, list: List, mask: u8) -> Result<usize, StoreError> {
        self.write(|tx| clear_in(tx, list, mask))
    }

    /// Deletes entries that expired before `now` (they stopped matching at
    /// their expiry already; this only reclaims space). Not logged.
    pub fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM entries WHERE expiry != 0 AND expiry <= ?1",
                params![ms(now)],
            )
        })
    }

    /// Entries of `list` with a source in `mask`, unexpired at `now`, in the
    /// order they were first added.
    pub fn entries(&self, list: List, mask: u8, now: u64) -> Result<Vec<StoredEntry>, StoreError> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT list, kind, name, value, source, added, expiry, api, attack_code \
                 FROM entries WHERE list = ?1 AND ((1 << source) & ?2) != 0 \
                 AND (expiry = 0 OR expiry > ?3) ORDER BY id",
            )?;
            let rows = st.query_map(params![list as i64, mask as i64, ms(now)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                ))
            })?;
            let mut v = Vec::new();
            for row in rows {
                let (l, k, name, value, s, added, expiry, api, attack_code) = row?;
                let (Some(list), Some(kind), Some(source)) =
                    (List::from_i64(l), kind_from(k), source_from(s))
                else {
                    continue;
                };
                let Ok(id) = Identifier::new(kind, &name, &value) else {
                    continue;
                };
                v.push(StoredEntry {
                    list,
                    id,
                    source,
                    added: added as u64,
                    expiry: expiry as u64,
                    api,
                    attack_code,
                });
            }
            Ok(v)
        })
    }

    /// Unexpired entries per source.
    pub fn counts(&self, now: u64) -> Result<Counts, StoreError> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT list, source, count(*) FROM entries \
                 WHERE expiry = 0 OR expiry > ?1 GROUP BY list, source",
            )?;
            let mut c = Counts::default();
            let rows = st.query_map(params![ms(now)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (l, s, n) = row?;
                match (List::from_i64(l), source_from(s)) {
                    (Some(List::Deny), Some(s)) => c.deny[s as usize] += n as u64,
                    (Some(List::Allow), _) => c.allow += n as u64,
                    _ => {}
                }
            }
            Ok(c)
        })
    }

    /// Deny entries of one source with their expiries (for reloading a source).
    pub fn source_entries(&self, source: Source) -> Result<Vec<(Identifier, u64)>, StoreError> {
        Ok(self
            .entries(List::Deny, source.bit(), now_ms())?
            .into_iter()
            .map(|e| (e.id, e.expiry))
            .collect())
    }
}

/// The attack code recorded for a real-time source (as ABS reports them).
pub fn attack_code(s: Source) -> &'static str {
    match s {
        Source::Decoy => "decoy",
        Source::InvalidProtocol => "protocol",
        Source::InvalidMethod => "method",
        Source::InvalidContentType => "content_type",
        Source::Manual => "manual",
        Source::Abs => "abs",
    }
}

pub(super) fn exists(
    tx: &Transaction<'_>,
    list: List,
    id: &Identifier,
    now: u64,
) -> rusqlite::Result<bool> {
    let mut st = tx.prepare_cached(
        "SELECT 1 FROM entries WHERE list = ?1 AND kind = ?2 AND name_key = ?3 AND value = ?4 \
         AND (expiry = 0 OR expiry > ?5) LIMIT 1",
    )?;
    st.exists(params![
        list as i64,
        id.kind as i64,
        name_key(id),
        id.value,
        ms(now)
    ])
}

pub(super) fn upsert(
    tx: &Transaction<'_>,
    list: List,
    e: &NewEntry,
    source: Source,
    now: u64,
) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO entries (list, kind, name, name_key, value, source, added, expiry, api, attack_code) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (list, kind, name_key, value, source) DO UPDATE SET \
         expiry = excluded.expiry, api = excluded.api, attack_code = excluded.attack_code",
    )?;
    st.execute(params![
        list as i64,
        e.id.kind as i64,
        e.id.name,
        name_key(&e.id),
        e.id.value,
        source as i64,
        ms(now),
        ms(e.expiry),
        e.api,
        e.attack_code
    ])?;
    Ok(())
}

pub(super) fn clear_in(tx: &Transaction<'_>, list: List, mask: u8) -> rusqlite::Result<usize> {
    // Count identifiers, not rows: an IP listed by two sources is one entry.
    let n: i64 = tx.query_row(
        "SELECT count(*) FROM (SELECT DISTINCT kind, name_key, value FROM entries \
         WHERE list = ?1 AND ((1 << source) & ?2) != 0)",
        params![list as i64, mask as i64],
        |r| r.get(0),
    )?;
    tx.execute(
        "DELETE FROM entries WHERE list = ?1 AND ((1 << source) & ?2) != 0",
        params![list as i64, mask as i64],
    )?;
    log(tx, &Change::Clear { list, mask })?;
    Ok(n as usize)
}
