//! The admin credential: PBKDF2-HMAC-SHA256 with a random 16-byte salt.
//!
//! The round count is stored with each hash so it can be raised later without
//! invalidating existing credentials.

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

#[cfg(test)]
mod tests {
    use super::*;

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
