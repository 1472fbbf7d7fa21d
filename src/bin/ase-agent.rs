//! ase-agent: the host's background work in a process of its own.
//!
//! ase-agent [--config PATH]
//!
//! One process per host holds the host role: it builds the lists snapshot
//! every engine maps, polls ABS for the attack list and ships traffic. By
//! default one of the nginx workers takes it. Run `ase-agent` (and set
//! `ase_host_role off;` in nginx) to keep that work, and its thread, out of
//! nginx altogether: nginx workers then run no thread of ase. The agent runs
//! in the foreground, logs to stderr and stops cleanly on SIGTERM or SIGINT.
//! The configuration is `--config`, else `$ASE_CONFIG`, else
//! `/etc/ase/ase.conf`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ase::engine::{Engine, EngineOptions};

const USAGE: &str = "Usage: ase-agent [--config PATH]\n\
\n\
Does the host's background work for every ase engine on this machine:\n\
builds the lists snapshot they map, polls ABS, ships traffic.\n\
  --config PATH   ase.conf to use (default: $ASE_CONFIG, else /etc/ase/ase.conf)\n";

fn config_path() -> Result<PathBuf, String> {
    let mut args = std::env::args_os().skip(1);
    let mut config = None;
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--config") => {
                config = Some(PathBuf::from(args.next().ok_or("--config needs a path")?));
            }
            Some(s) if s.starts_with("--config=") => {
                config = Some(PathBuf::from(&s["--config=".len()..]));
            }
            Some("-h" | "--help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {}", a.to_string_lossy())),
        }
    }
    Ok(config
        .or_else(|| std::env::var_os("ASE_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/ase/ase.conf")))
}

fn main() -> ExitCode {
    let path = match config_path() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ase-agent: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("ase-agent: cannot handle signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut engine = match Engine::open_with(&path, EngineOptions::default()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ase-agent: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "ase-agent: {} running, config {}",
        env!("CARGO_PKG_VERSION"),
        path.display()
    );
    let mut said = String::new();
    let mut last = Instant::now() - Duration::from_secs(60);
    while !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if last.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last = Instant::now();
        // Say what changed, not the same line every second.
        let h = engine.health();
        let now = if h.host_role {
            match &h.build_error {
                Some(e) => format!("host role held; snapshot build failing: {e}"),
                None => format!(
                    "host role held; snapshot at log position {}",
                    h.snapshot_seq
                ),
            }
        } else {
            "host role held by another process; standing by".to_string()
        };
        let now = match &h.store_error {
            Some(e) => format!("{now}; store: {e}"),
            None => now,
        };
        if now != said {
            eprintln!("ase-agent: {now}");
            said = now;
        }
    }
    eprintln!("ase-agent: stopping");
    engine.shutdown();
    ExitCode::SUCCESS
}
