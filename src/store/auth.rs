//! The admin credential: PBKDF2-HMAC-SHA256 with a random 16-byte salt.
//!
//! The round count is stored with each hash so it can be raised later without
//! invalidating existing credentials.

use rusqlite::{OptionalExtension, Transaction, params};

use super::{Store, StoreError, StoreErrorKind};

/// The default credential, as ASE ships it.
pub const DEFAULT_USER: &str = "admin";

/// The hash of the default password, computed once here rather than by
/// each new store: every process starting on a fresh host races to create
/// the store, and each would spend a full hash on a credential the next
/// `update_password` replaces. A fixed salt hides nothing here, as the
/// default password is public; every password set later gets a fresh salt.
pub(crate) fn default_hash() -> Hashed {
    const SALT: [u8; 16] = [
        0x2a, 0xcc, 0x71, 0x50, 0x22, 0xa9, 0xc9, 0x27, 0x01, 0x0c, 0x09, 0xd1, 0x3d, 0x38, 0x0d,
        0xea,
    ];
    const HASH: [u8; 32] = [
        0xbc, 0x95, 0x35, 0x19, 0xa1, 0x66, 0x10, 0x31, 0x64, 0xe8, 0x67, 0xfa, 0x99, 0xe2, 0xe2,
        0xd6, 0x4d, 0x4d, 0xea, 0x89, 0xee, 0x55, 0x6d, 0x43, 0x4e, 0x21, 0x4a, 0xd5, 0xc7, 0x22,
        0x99, 0x1f,
    ];
    Hashed {
        salt: SALT.to_vec(),
        rounds: ROUNDS,
        hash: HASH.to_vec(),
    }
}

/// Rounds for new hashes (OWASP 2023 for PBKDF2-SHA256); about 60 ms per check: slow
/// enough to make guessing from a stolen store costly, fast enough for a CLI.
pub const ROUNDS: u32 = 600_000;

/// A salted, iterated hash of a password.
pub(crate) struct Hashed {
    pub salt: Vec<u8>,
    pub rounds: u32,
    pub hash: Vec<u8>,
}

/// Hashes `password` with a fresh random salt.
pub(crate) fn hash_new(password: &str) -> Result<Hashed, String> {
    let mut salt = vec![0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no random source for the salt: {e}"))?;
    let hash = derive(password, &salt, ROUNDS);
    Ok(Hashed {
        salt,
        rounds: ROUNDS,
        hash,
    })
}

pub(crate) fn derive(password: &str, salt: &[u8], rounds: u32) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    // The non-generic entry point is compiled (optimised) inside the pbkdf2
    // crate; the generic one would be instantiated here, unoptimised in debug
    // builds, making every CLI call in the tests ten times slower.
    let params = pbkdf2::Params::new(rounds.max(pbkdf2::Params::MIN_ROUNDS))
        .unwrap_or(pbkdf2::Params::RECOMMENDED);
    pbkdf2::pbkdf2_hmac_with_params(
        password.as_bytes(),
        salt,
        pbkdf2::Algorithm::Pbkdf2Sha256,
        params,
        &mut out,
    );
    out
}

/// Compares without an early exit, so timing does not reveal the matching prefix.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Store {
    /// Whether `user` / `password` is the stored credential.
    pub fn verify_password(&self, user: &str, password: &str) -> Result<bool, StoreError> {
        let row: Option<(Vec<u8>, i64, Vec<u8>)> = self.read(|tx| {
            tx.query_row(
                "SELECT salt, rounds, hash FROM users WHERE name = ?1",
                [user],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
        })?;
        Ok(match row {
            Some((salt, rounds, hash)) => {
                let rounds = u32::try_from(rounds).unwrap_or(ROUNDS);
                same(&derive(password, &salt, rounds), &hash)
            }
            None => {
                // Same work for an unknown user, so timing does not tell users apart.
                let _ = derive(password, b"0123456789abcdef", ROUNDS);
                false
            }
        })
    }

    /// Sets the password of `user` (created if absent).
    pub fn set_password(&self, user: &str, password: &str) -> Result<(), StoreError> {
        let h = hash_new(password).map_err(|m| StoreError::new(StoreErrorKind::Other, m))?;
        self.write(|tx| set_user(tx, user, &h))
    }
}

pub(crate) fn set_user(tx: &Transaction<'_>, user: &str, h: &Hashed) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO users (name, salt, rounds, hash) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO UPDATE SET salt = excluded.salt, rounds = excluded.rounds, \
         hash = excluded.hash",
        params![user, h.salt, h.rounds, h.hash],
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_default_and_update() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        assert!(s.verify_password("admin", "admin").unwrap());
        assert!(!s.verify_password("admin", "x").unwrap());
        assert!(!s.verify_password("root", "admin").unwrap());
        s.set_password("admin", "n3w").unwrap();
        let s2 = Store::open(d.path()).unwrap();
        assert!(s2.verify_password("admin", "n3w").unwrap());
        assert!(!s2.verify_password("admin", "admin").unwrap());
    }

    #[test]
    fn default_hash_is_the_default_password() {
        let h = default_hash();
        assert!(same(&derive("admin", &h.salt, h.rounds), &h.hash));
        assert!(!same(&derive("admin2", &h.salt, h.rounds), &h.hash));
    }

    #[test]
    fn hash_verifies_only_the_right_password() {
        let h = hash_new("admin").unwrap();
        assert!(same(&derive("admin", &h.salt, h.rounds), &h.hash));
        assert!(!same(&derive("admin2", &h.salt, h.rounds), &h.hash));
        let h2 = hash_new("admin").unwrap();
        assert_ne!(h.salt, h2.salt, "salts are random");
        assert_ne!(h.hash, h2.hash);
    }
}
