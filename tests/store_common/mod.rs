//! Helpers shared by the integration tests: a configuration in a temporary
//! directory and a way to run the real `ase-cli` binary against it.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const CLI: &str = env!("CARGO_BIN_EXE_ase-cli");

/// An API with a decoy sub-path, so real-time detections can be provoked.
pub const SHOP_API: &str = r#"{ "api_metadata": {
  "protocol": "http", "url": "/shop", "hostname": "*", "enable_blocking": true,
  "decoy_config": { "decoy_enabled": true, "response_code": 200, "response_def": "OK",
                    "response_message": "ok", "decoy_subpaths": ["/shop/admin"] } } }"#;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Env {
    /// `ase.conf` with `extra` lines, one API (`shop`), state in `state/`.
    pub fn new(extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ase.conf");
        std::fs::write(
            &config,
            format!("enable_firewall=true\nsync_poll_interval=20ms\n{extra}\n"),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("api")).unwrap();
        std::fs::write(dir.path().join("api/shop.json"), SHOP_API).unwrap();
        Env { dir, config }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs `ase-cli --config ... -u admin -p admin ARGS` with `stdin`.
    pub fn cli_in(&self, args: &[&str], stdin: &str) -> Output {
        let mut all = vec![
            "--config",
            self.config.to_str().unwrap(),
            "-u",
            "admin",
            "-p",
            "admin",
        ];
        all.extend_from_slice(args);
        run(&all, stdin)
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_in(args, "")
    }

    /// Runs a command that must succeed silently on stderr; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert_success(&o, args);
        String::from_utf8(o.stdout).unwrap()
    }
}

pub fn assert_success(o: &Output, what: &[&str]) {
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{what:?}: status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs the CLI with exactly `args` (no implied credential or config).
pub fn run(args: &[&str], stdin: &str) -> Output {
    let mut c = Command::new(CLI)
        .args(args)
        .env_remove("ASE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut i = c.stdin.take().unwrap();
    // The CLI may exit before reading (bad input): ignore a closed pipe.
    let _ = i.write_all(stdin.as_bytes());
    drop(i);
    c.wait_with_output().unwrap()
}

pub fn store_path(state_dir: &Path) -> PathBuf {
    state_dir.join(ase::store::STORE_FILE)
}
