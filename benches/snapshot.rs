//! Lists snapshot figures (not a test): build time, file bytes per entry by
//! kind, open time with the full checksum, incremental verification
//! throughput, and nanoseconds per hit and per miss.
//!
//! `cargo bench --bench snapshot`
//!
//! Lookups take random keys over a file larger than the caches, from a
//! memory map as in production (the page cache warm from the write).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ase::mapped::MappedFile;
use ase::policy::snapshot::{Builder, Snapshot, Verifier};
use ase::policy::{IdKind, IpNet, Key, KeyRef, Meta, Source};

const V4_MAPPED: u128 = 0xffff_u128 << 32;

/// xorshift64: deterministic, and cheap next to a lookup.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn meta() -> Meta {
    Meta {
        sources: Source::Abs.bit(),
        abs_exp: 1_900_000_000_000,
        ..Meta::default()
    }
}

/// A random IPv4 host address with the top bit of the u32 forced to `hi`,
/// so hits and misses never collide.
fn v4(r: &mut Rng, hi: bool) -> u32 {
    let a = r.next() as u32 & 0x7fff_ffff;
    if hi { a | 0x8000_0000 } else { a }
}

fn token(r: &mut Rng, hit: bool) -> Vec<u8> {
    // ~40 bytes, like the opaque OAuth2 tokens ABS lists.
    format!(
        "{}{:016x}{:024x}",
        if hit { 'h' } else { 'm' },
        r.next(),
        r.next() as u128
    )
    .into_bytes()
}

fn per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn run(name: &str, ips: usize, tokens: usize, cookies: usize) {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ ips as u64);
    let ip_keys: Vec<u32> = (0..ips).map(|_| v4(&mut r, true)).collect();
    let tok_keys: Vec<Vec<u8>> = (0..tokens).map(|_| token(&mut r, true)).collect();
    let cookie_keys: Vec<Vec<u8>> = (0..cookies)
        .map(|_| format!("{:032x}", r.next() as u128 * 7).into_bytes())
        .collect();

    let t = Instant::now();
    let mut b = Builder::new(1, 0);
    for &a in &ip_keys {
        b.push(&Key::ip(IpNet::of(V4_MAPPED | a as u128, 128)), meta())
            .unwrap();
    }
    for v in &tok_keys {
        b.push(&Key::new(KeyRef::token(v)), meta()).unwrap();
    }
    for v in &cookie_keys {
        b.push(
            &Key::new(KeyRef::new(IdKind::Cookie, b"JSESSIONID", v)),
            meta(),
        )
        .unwrap();
    }
    let bytes = b.finish();
    let build = t.elapsed();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lists.snap");
    std::fs::write(&path, &bytes).unwrap();
    let len = bytes.len();
    drop(bytes);

    let t = Instant::now();
    let s = Snapshot::open(Box::new(MappedFile::open(&path).unwrap())).unwrap();
    let open = t.elapsed();
    let entries = s.len();
    let f = s.footprint();

    let map = MappedFile::open(&path).unwrap();
    let t = Instant::now();
    let mut v = Verifier::new(&map).unwrap();
    let mut steps = 0;
    loop {
        steps += 1;
        if let Some(r) = v.step(&map, 4 << 20) {
            r.unwrap();
            break;
        }
    }
    let verify = t.elapsed();

    println!("{name}: {entries} entries");
    println!(
        "  build {:.0} ms; file {} bytes, {:.1} bytes/entry",
        build.as_secs_f64() * 1e3,
        len,
        len as f64 / entries as f64
    );
    println!(
        "  bytes/entry: IPv4 {:.1} (table); tokens {:.1} (table) + key bytes; cookies share the string table{}",
        f.ipv4 as f64 / ips as f64,
        if tokens + cookies > 0 {
            f.strings as f64 / (tokens + cookies) as f64
        } else {
            0.0
        },
        if tokens + cookies > 0 {
            format!(
                " ({:.1} table + {:.1} heap per string entry)",
                f.strings as f64 / (tokens + cookies) as f64,
                f.heap as f64 / (tokens + cookies) as f64
            )
        } else {
            String::new()
        }
    );
    println!(
        "  open (full checksum) {:.1} ms, {:.0} MB/s; Verifier 4 MB steps ({steps}) {:.1} ms, {:.0} MB/s",
        open.as_secs_f64() * 1e3,
        per_s(len, open),
        verify.as_secs_f64() * 1e3,
        per_s(len, verify)
    );

    const N: usize = 2_000_000;
    let probe = |label: &str, keys: &[IpNet]| {
        let t = Instant::now();
        let mut found = 0usize;
        for &k in keys {
            found += black_box(s.get_ip(black_box(k))).is_some() as usize;
        }
        let d = t.elapsed();
        println!(
            "  {label}: {:.1} ns/lookup ({found} of {} found)",
            d.as_nanos() as f64 / keys.len() as f64,
            keys.len()
        );
    };
    let hits: Vec<IpNet> = (0..N)
        .map(|_| IpNet::of(V4_MAPPED | ip_keys[r.next() as usize % ips] as u128, 128))
        .collect();
    let misses: Vec<IpNet> = (0..N)
        .map(|_| IpNet::of(V4_MAPPED | v4(&mut r, false) as u128, 128))
        .collect();
    probe("IPv4 hit", &hits);
    probe("IPv4 miss", &misses);
    if tokens > 0 {
        let hits: Vec<&[u8]> = (0..N)
            .map(|_| tok_keys[r.next() as usize % tokens].as_slice())
            .collect();
        let misses: Vec<Vec<u8>> = (0..N / 4).map(|_| token(&mut r, false)).collect();
        for (label, keys) in [
            ("token hit (hash included)", hits),
            (
                "token miss (hash included)",
                misses.iter().map(Vec::as_slice).collect(),
            ),
        ] {
            let t = Instant::now();
            let mut found = 0usize;
            for &k in &keys {
                found += black_box(s.get(&KeyRef::token(black_box(k)))).is_some() as usize;
            }
            let d = t.elapsed();
            println!(
                "  {label}: {:.1} ns/lookup ({found} of {} found)",
                d.as_nanos() as f64 / keys.len() as f64,
                keys.len()
            );
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    run("1M IPv4 hosts", 1_000_000, 0, 0);
    run("2.5M IPv4 hosts", 2_500_000, 0, 0);
    run(
        "mix: 1M IPv4 + 100k tokens (41 bytes) + 20k cookies",
        1_000_000,
        100_000,
        20_000,
    );
}
