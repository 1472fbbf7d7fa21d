//! Lists snapshot files: `policy::snapshot`.
//!
//! Input: a mode byte, then the rest. Even mode: the rest is a file, given
//! to `Snapshot::open` and to `Snapshot::open_verified` (as if changed after
//! its checksum was checked); whatever opens is probed with keys taken from
//! the input and iterated in full. Odd mode: the rest is a list of entries
//! (below); the snapshot built from them must open and find every one with
//! its meta, later pushes of a key winning, and nothing else.
//!
//! Entry: kind byte (mod 5); for an IP, a prefix length byte (mod 129) and 16
//! address bytes (masked to the length); otherwise a name length and a value
//! length byte (mod 32 each) and those bytes (names only for cookie and
//! api_key); then a sources byte and three expiry words of 6 bytes.

#![no_main]

use std::collections::HashMap;

use ase::policy::lists::ALLOW;
use ase::policy::snapshot::{Builder, MAX_EXPIRY, Snapshot, Verifier};
use ase::policy::{IdKind, IpNet, Key, KeyRef, Meta, Source};
use libfuzzer_sys::fuzz_target;

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u48(&mut self) -> Option<u64> {
        let mut w = [0u8; 8];
        w[..6].copy_from_slice(self.take(6)?);
        Some(u64::from_le_bytes(w))
    }

    fn entry(&mut self) -> Option<(Key, Meta)> {
        let kind = IdKind::ALL[self.byte()? as usize % 5];
        let key = if kind == IdKind::Ip {
            let len = self.byte()? % 129;
            let a: [u8; 16] = self.take(16)?.try_into().ok()?;
            Key::ip(IpNet::of(u128::from_be_bytes(a), len))
        } else {
            let n = if kind.has_name() {
                self.byte()? as usize % 32
            } else {
                0
            };
            let v = self.byte()? as usize % 32;
            let name = self.take(n)?;
            let value = self.take(v)?;
            Key::new(KeyRef::new(kind, name, value))
        };
        let meta = Meta {
            sources: self.byte()?,
            allow_exp: self.u48()?,
            manual_exp: self.u48()?,
            abs_exp: self.u48()?,
            ..Meta::default()
        };
        Some((key, meta))
    }
}

fn probe(s: &Snapshot, data: &[u8]) {
    // Keys made of the input's bytes, of every kind.
    for chunk in data.chunks(24).take(16) {
        let _ = s.get(&KeyRef::token(chunk));
        let _ = s.get(&KeyRef::username(chunk));
        let (n, v) = chunk.split_at(chunk.len() / 3);
        let _ = s.get(&KeyRef::new(IdKind::Cookie, n, v));
        let _ = s.get(&KeyRef::new(IdKind::ApiKey, n, v));
        let mut a = [0u8; 16];
        a[..chunk.len().min(16)].copy_from_slice(&chunk[..chunk.len().min(16)]);
        let addr = u128::from_be_bytes(a);
        let _ = s.get_ip(IpNet::of(addr, chunk.len() as u8 * 5 % 129));
        s.each_ip(addr, |_, _| false);
        s.each_ip(0xffff_0000_0000 | (addr as u32) as u128, |_, _| false);
    }
    let mut n = 0u64;
    for (k, m) in s.iter() {
        let _ = (k.identifier(), m.sources);
        n += 1;
    }
    let _ = (s.len(), n, s.prefixes(), s.footprint(), s.by_sources()[1]);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let opened = Snapshot::open(Box::new(rest.to_vec()));
        if let Ok(s) = &opened {
            probe(s, rest);
        }
        // The Verifier agrees with open.
        if let Ok(mut v) = Verifier::new(rest) {
            let step = 1 + mode as usize * 37;
            let verdict = loop {
                if let Some(r) = v.step(rest, step) {
                    break r;
                }
            };
            assert_eq!(
                verdict.is_ok(),
                opened.is_ok(),
                "Verifier and open disagree"
            );
        }
        if let Ok(s) = Snapshot::open_verified(Box::new(rest.to_vec())) {
            probe(&s, rest);
        }
        return;
    }
    let mut input = Input(rest);
    let mut b = Builder::new(mode as u64, 7);
    let mut want: HashMap<Key, Meta> = HashMap::new();
    while let Some((k, m)) = input.entry() {
        b.push(&k, m).expect("well-formed key");
        let mut m = m;
        m.sources &= Source::ANY | ALLOW;
        if m.sources == 0 {
            continue;
        }
        m.allow_exp = m.allow_exp.min(MAX_EXPIRY);
        m.manual_exp = m.manual_exp.min(MAX_EXPIRY);
        m.abs_exp = m.abs_exp.min(MAX_EXPIRY);
        want.insert(k, m);
    }
    let bytes = b.finish();
    let s = Snapshot::open(Box::new(bytes)).expect("a built snapshot opens");
    assert_eq!(s.len(), want.len() as u64);
    assert_eq!(s.seq(), mode as u64);
    for (k, m) in &want {
        let (kind, name, value) = k.parts();
        assert_eq!(
            s.get(&KeyRef::new(kind, name, value)),
            Some(*m),
            "{}",
            k.identifier()
        );
        if let Some(net) = k.ip_net() {
            assert_eq!(s.get_ip(net), Some(*m));
        }
    }
    let got: HashMap<Key, Meta> = s.iter().collect();
    assert_eq!(got, want);
});
