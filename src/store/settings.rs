//! Switches, per-API `enable_blocking` overrides and the meta table: the
//! settings every process shares beside the lists.

use rusqlite::{OptionalExtension, Transaction, params};

use super::entries::{List, clear_in};
use super::log::{Change, log};
use super::{Store, StoreError};
use crate::policy::lists::Source;

/// The meta key the ABS poller writes the time of its last successful sync to.
pub const META_ABS_LAST_SYNC: &str = "abs_last_sync";

/// Meta key: the digest of the ABS list last written to the store
/// ([`crate::sync::abs::attacklist::digest`]); an identical list fetched
/// again is not written again.
pub const META_ABS_DIGEST: &str = "abs_list_digest";

impl Store {
    /// Sets a switch by its CLI word. Turning `ase_detected_attack` off also
    /// deletes every real-time deny entry, as ASE does.
    pub fn set_switch(&self, name: &str, on: bool) -> Result<u64, StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO switches (name, on_) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET on_ = excluded.on_",
                params![name, on],
            )?;
            let seq = log(
                tx,
                &Change::Switch {
                    name: name.to_string(),
                    on,
                },
            )?;
            if name == "ase_detected_attack" && !on {
                clear_in(tx, List::Deny, Source::REALTIME)?;
            }
            Ok(seq)
        })
    }

    /// Stores the `enable_blocking` override of an API.
    pub fn set_api_blocking(&self, api: &str, on: bool) -> Result<u64, StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO api_blocking (api, on_) VALUES (?1, ?2) \
                 ON CONFLICT (api) DO UPDATE SET on_ = excluded.on_",
                params![api, on],
            )?;
            log(
                tx,
                &Change::ApiBlocking {
                    api: api.to_string(),
                    on,
                },
            )
        })
    }

    /// Stored switches (word, on).
    pub fn switches(&self) -> Result<Vec<(String, bool)>, StoreError> {
        self.read(|tx| pairs(tx, "SELECT name, on_ FROM switches ORDER BY name"))
    }

    /// Stored `enable_blocking` overrides (API, on).
    pub fn api_blocking(&self) -> Result<Vec<(String, bool)>, StoreError> {
        self.read(|tx| pairs(tx, "SELECT api, on_ FROM api_blocking ORDER BY api"))
    }

    /// A value from the meta table.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.read(|tx| {
            tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }

    /// Sets a value in the meta table (not logged: no engine state depends on it).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(|_| ())
        })
    }
}

pub(super) fn pairs(tx: &Transaction<'_>, sql: &str) -> rusqlite::Result<Vec<(String, bool)>> {
    let mut st = tx.prepare_cached(sql)?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ident::{IdKind, Identifier};

    fn ip(s: &str) -> Identifier {
        Identifier::new(IdKind::Ip, "", s).unwrap()
    }

    #[test]
    fn detections_are_dropped_once_switched_off() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let b = vec![(vec![ip("5.5.5.5")], Source::Decoy)];
        assert_eq!(s.record_detections(&b).unwrap(), 1);
        s.set_switch("ase_detected_attack", false).unwrap();
        assert_eq!(
            s.counts(0).unwrap().deny[Source::Decoy as usize],
            0,
            "off deletes them"
        );
        assert_eq!(s.record_detections(&b).unwrap(), 0);
        assert_eq!(s.counts(0).unwrap().deny[Source::Decoy as usize], 0);
    }
}
