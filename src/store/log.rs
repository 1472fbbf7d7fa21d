//! The change log: every write appends what it changed, in order, so an
//! engine that follows the log (docs/design.md, "Threads and processes")
//! reaches the state a full reload would give.

use rusqlite::{OptionalExtension, Transaction, params};

use super::entries::{List, kind_from, source_from};
use super::{Store, StoreError, ms, now_ms};
use crate::policy::ident::Identifier;
use crate::policy::lists::Source;

/// Changes kept in the log. A process that falls further behind reloads the
/// whole store instead of replaying.
pub const LOG_KEEP: i64 = 20_000;

/// One change from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An identifier was added under a source (allow entries: `Manual`).
    Add {
        /// Which list.
        list: List,
        /// The identifier.
        id: Identifier,
        /// The source.
        source: Source,
        /// Expiry in Unix ms, 0 = never.
        expiry: u64,
    },
    /// An identifier was taken off the sources in `mask`.
    Remove {
        /// Which list.
        list: List,
        /// The identifier.
        id: Identifier,
        /// Source mask.
        mask: u8,
    },
    /// Every entry of the sources in `mask` was removed.
    Clear {
        /// Which list.
        list: List,
        /// Source mask.
        mask: u8,
    },
    /// A switch was set (by its CLI word: `firewall`, `abs`, ...).
    Switch {
        /// The switch word.
        name: String,
        /// On or off.
        on: bool,
    },
    /// `enable_blocking` of an API was set.
    ApiBlocking {
        /// The API name.
        api: String,
        /// On or off.
        on: bool,
    },
    /// Every deny entry of this source was replaced: reload that source.
    ReloadSource(Source),
    /// Too much changed to log: reload everything.
    Reload,
}

const OP_ADD: i64 = 1;
const OP_REMOVE: i64 = 2;
const OP_CLEAR: i64 = 3;
const OP_SWITCH: i64 = 4;
const OP_API: i64 = 5;
const OP_RELOAD_SOURCE: i64 = 6;
const OP_RELOAD: i64 = 7;

/// What a watcher gets when it asks for changes.
#[derive(Debug)]
pub enum Changes {
    /// The changes after the given sequence number, in order (possibly none).
    Next(Vec<(u64, Change)>),
    /// The log no longer holds the changes right after the given sequence
    /// number: reload everything.
    Behind,
}

impl Store {
    /// The sequence number of the newest change (0 when none was ever made).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        self.read(last_seq)
    }

    /// The newest change position and the number of changes after `seq`,
    /// and whether any of them replaced lists in bulk (an ABS list, a large
    /// import): what the snapshot builder decides on.
    pub fn pending_since(&self, seq: u64) -> Result<(u64, u64, bool), StoreError> {
        self.read(|tx| {
            let last = last_seq(tx)?;
            let bulk: bool = tx.query_row(
                "SELECT count(*) > 0 FROM changes WHERE seq > ?1 AND op IN (?2, ?3)",
                params![ms(seq), OP_RELOAD_SOURCE, OP_RELOAD],
                |r| r.get(0),
            )?;
            Ok((last, last.saturating_sub(seq), bulk))
        })
    }

    /// Changes after `seq`, at most `limit`, or [`Changes::Behind`] when the
    /// log was trimmed past `seq`.
    pub fn changes_since(&self, seq: u64, limit: usize) -> Result<Changes, StoreError> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT seq, op, list, kind, name, value, source, num FROM changes \
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = st.query_map(params![ms(seq), limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?;
            let mut v = Vec::new();
            for row in rows {
                let (s, op, l, k, name, value, src, num) = row?;
                let s = s as u64;
                if v.is_empty() && s != seq + 1 {
                    // Sequence numbers are contiguous (AUTOINCREMENT, and a
                    // rolled-back insert does not consume one): a gap means
                    // the entries in between were trimmed.
                    return Ok(Changes::Behind);
                }
                // A row this build cannot read forces a reload rather than
                // being silently skipped.
                let Some(c) = decode(op, l, k, name, value, src, num) else {
                    return Ok(Changes::Behind);
                };
                v.push((s, c));
            }
            Ok(Changes::Next(v))
        })
    }
}

pub(super) fn last_seq(tx: &Transaction<'_>) -> rusqlite::Result<u64> {
    let s: Option<i64> = tx
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'changes'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(s.unwrap_or(0) as u64)
}

/// Appends a change and trims the log to [`LOG_KEEP`] entries.
pub(super) fn log(tx: &Transaction<'_>, c: &Change) -> rusqlite::Result<u64> {
    let (op, list, kind, name, value, source, num): (i64, i64, i64, &str, &str, i64, i64) = match c
    {
        Change::Add {
            list,
            id,
            source,
            expiry,
        } => (
            OP_ADD,
            *list as i64,
            id.kind as i64,
            &id.name,
            &id.value,
            *source as i64,
            ms(*expiry),
        ),
        Change::Remove { list, id, mask } => (
            OP_REMOVE,
            *list as i64,
            id.kind as i64,
            &id.name,
            &id.value,
            *mask as i64,
            0,
        ),
        Change::Clear { list, mask } => (OP_CLEAR, *list as i64, 0, "", "", *mask as i64, 0),
        Change::Switch { name, on } => (OP_SWITCH, 0, 0, name, "", 0, *on as i64),
        Change::ApiBlocking { api, on } => (OP_API, 0, 0, api, "", 0, *on as i64),
        Change::ReloadSource(s) => (OP_RELOAD_SOURCE, 0, 0, "", "", *s as i64, 0),
        Change::Reload => (OP_RELOAD, 0, 0, "", "", 0, 0),
    };
    let mut st = tx.prepare_cached(
        "INSERT INTO changes (op, list, kind, name, value, source, num, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    st.execute(params![
        op,
        list,
        kind,
        name,
        value,
        source,
        num,
        ms(now_ms())
    ])?;
    let seq = tx.last_insert_rowid();
    let mut trim = tx.prepare_cached("DELETE FROM changes WHERE seq <= ?1")?;
    trim.execute([seq - LOG_KEEP])?;
    Ok(seq as u64)
}

fn decode(
    op: i64,
    l: i64,
    k: i64,
    name: String,
    value: String,
    src: i64,
    num: i64,
) -> Option<Change> {
    let id = || kind_from(k).and_then(|k| Identifier::new(k, &name, &value).ok());
    Some(match op {
        OP_ADD => Change::Add {
            list: List::from_i64(l)?,
            id: id()?,
            source: source_from(src)?,
            expiry: num as u64,
        },
        OP_REMOVE => Change::Remove {
            list: List::from_i64(l)?,
            id: id()?,
            mask: src as u8,
        },
        OP_CLEAR => Change::Clear {
            list: List::from_i64(l)?,
            mask: src as u8,
        },
        OP_SWITCH => Change::Switch { name, on: num != 0 },
        OP_API => Change::ApiBlocking {
            api: name,
            on: num != 0,
        },
        OP_RELOAD_SOURCE => Change::ReloadSource(source_from(src)?),
        OP_RELOAD => Change::Reload,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ident::IdKind;
    use crate::store::{Counts, NewEntry};

    fn ip(s: &str) -> Identifier {
        Identifier::new(IdKind::Ip, "", s).unwrap()
    }

    #[test]
    fn log_replays_what_tables_hold() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let (new, seq1) = s
            .add(List::Deny, &NewEntry::new(ip("1.1.1.1"), 0), Source::Manual)
            .unwrap();
        assert!(new);
        let (new, _) = s
            .add(List::Deny, &NewEntry::new(ip("1.1.1.1"), 0), Source::Decoy)
            .unwrap();
        assert!(!new, "already listed under another source");
        let key = Identifier::new(IdKind::ApiKey, "X-API-KEY", "k").unwrap();
        s.add(List::Allow, &NewEntry::new(key, 0), Source::Manual)
            .unwrap();
        let lower = Identifier::new(IdKind::ApiKey, "x-api-key", "k").unwrap();
        assert_eq!(
            s.remove(List::Allow, &lower, Source::ANY).unwrap().0,
            1,
            "api_key names ignore case"
        );
        assert_eq!(s.remove(List::Allow, &lower, Source::ANY).unwrap().0, 0);
        let Changes::Next(c) = s.changes_since(seq1 - 1, 100).unwrap() else {
            panic!("behind")
        };
        assert_eq!(c.len(), 4);
        assert!(matches!(
            &c[3].1,
            Change::Remove {
                list: List::Allow,
                ..
            }
        ));
        assert_eq!(s.clear(List::Deny, Source::ANY).unwrap(), 1);
        assert_eq!(s.counts(0).unwrap(), Counts::default());
    }

    #[test]
    fn trimmed_log_says_behind() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let v: Vec<NewEntry> = (0..10)
            .map(|i| NewEntry::new(ip(&format!("10.0.0.{i}")), 0))
            .collect();
        s.add_many(List::Deny, &v, Source::Manual, &mut |_| {})
            .unwrap();
        s.write(|tx| tx.execute("DELETE FROM changes WHERE seq <= 5", []))
            .unwrap();
        assert!(matches!(s.changes_since(2, 10).unwrap(), Changes::Behind));
        assert!(matches!(s.changes_since(5, 10).unwrap(), Changes::Next(v) if v.len() == 5));
        assert_eq!(s.last_seq().unwrap(), 10);
    }
}
