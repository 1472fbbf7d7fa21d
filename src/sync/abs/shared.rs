//! The poller status shared through the store's meta table, so that every
//! process of the host (nginx workers that do not poll, `ase-cli status`)
//! shows the last sync attempt, whichever process made it.
//!
//! The poller that makes an attempt writes its [`AbsStatus`] as JSON under
//! [`META_ABS_STATUS`]; readers parse it. The value never holds a key: the
//! status's error texts never do (see [`AbsStatus::last_error`]).

use serde::{Deserialize, Serialize};

use super::poller::AbsStatus;
use crate::clock::now_ms;
use crate::store::{Store, StoreError};

/// The meta key holding the latest published [`SharedStatus`].
pub const META_ABS_STATUS: &str = "abs_status";

/// A status as one process published it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SharedStatus {
    /// The process that made the attempt.
    pub pid: u32,
    /// When it was published (Unix ms).
    pub published_ms: u64,
    /// Its status.
    pub status: AbsStatus,
}

/// Writes `status` as this process's latest attempt.
pub fn publish(store: &Store, status: &AbsStatus) -> Result<(), StoreError> {
    let s = SharedStatus {
        pid: std::process::id(),
        published_ms: now_ms(),
        status: status.clone(),
    };
    // Serialising plain strings and numbers cannot fail.
    let text = serde_json::to_string(&s).unwrap_or_default();
    store.set_meta(META_ABS_STATUS, &text)
}

/// The latest published status; `None` when nothing was published yet (or
/// the value cannot be read, as after a downgrade: status only).
pub fn load(store: &Store) -> Result<Option<SharedStatus>, StoreError> {
    Ok(store
        .meta(META_ABS_STATUS)?
        .and_then(|t| serde_json::from_str(&t).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_status_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(load(&store).unwrap(), None);
        let st = AbsStatus {
            last_attempt_ms: 5,
            last_error: Some("ABS answered 500".into()),
            consecutive_failures: 2,
            entries: 7,
            ..AbsStatus::default()
        };
        publish(&store, &st).unwrap();
        let got = load(&store).unwrap().unwrap();
        assert_eq!(got.status, st);
        assert_eq!(got.pid, std::process::id());
        store.set_meta(META_ABS_STATUS, "not json").unwrap();
        assert_eq!(load(&store).unwrap(), None, "unreadable is absent");
    }
}
