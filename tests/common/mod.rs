//! Shared helpers of the ABS integration tests: the reference server
//! (`ase-abs-ref`, started as a child process) and an engine over a temporary
//! configuration.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ase::enforcer::Enforcer;
use ase::policy::Request;
use ase::policy::ident::ip_to_u128;
use ase::sync::abs::{ClientOptions, PollerOptions};

/// A running reference ABS server.
pub struct RefServer {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl RefServer {
    /// Starts `ase-abs-ref` on a free loopback port with `extra` arguments.
    pub fn start(extra: &[&str]) -> RefServer {
        let dir = tempfile::tempdir().unwrap();
        RefServer::start_in(dir, extra)
    }

    /// Starts it with its files (list.json, traffic/) in `dir`.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> RefServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ase-abs-ref"))
            .arg("--attacklist")
            .arg(dir.path().join("list.json"))
            .arg("--traffic-dir")
            .arg(dir.path().join("traffic"))
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start ase-abs-ref");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        RefServer { child, addr, dir }
    }

    /// Replaces the served attack list (atomically: the server re-reads per request).
    pub fn set_list(&self, json: &str) {
        let tmp = self.dir.path().join("list.json.tmp");
        std::fs::write(&tmp, json).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("list.json")).unwrap();
    }

    fn get(&self, path: &str) -> String {
        ureq::get(&format!("http://{}{path}", self.addr))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    }

    /// Sets the failure mode (`ok`, `down`, `500`, `slow`, `malformed`, `oversized`).
    pub fn control(&self, mode: &str, arg: &str) {
        self.get(&format!("/__control?mode={mode}&arg={arg}"));
    }

    /// The server's request counters.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/__stats")).unwrap()
    }

    /// Contents of every traffic batch received so far, in order.
    pub fn batches(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("traffic"))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|x| x == "json"));
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Kills the server now (the port then refuses connections).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RefServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The API every test uses: all identifier kinds, blocking on.
pub const SHOP_API: &str = r#"{"api_metadata": {
  "protocol": "http", "url": "/shop", "hostname": "*",
  "cookie": "JSESSIONID", "oauth2_access_token": true,
  "apikey_header": "X-Api-Key", "username_header": "X-User",
  "enable_blocking": true }}"#;

/// Writes ase.conf, abs.conf and api/shop.json into `dir`; returns the ase.conf path.
pub fn write_config(dir: &Path, endpoints: &[&str], abs_extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("api")).unwrap();
    std::fs::write(dir.join("api/shop.json"), SHOP_API).unwrap();
    std::fs::write(
        dir.join("ase.conf"),
        "enable_firewall=true\nenable_abs=true\nenable_abs_attack=true\n\
         abs_attack_request_interval=1s\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("abs.conf"),
        format!(
            "abs_endpoint={}\naccess_key=abs_ak\nsecret_key=abs_sk\n{abs_extra}",
            endpoints.join(",")
        ),
    )
    .unwrap();
    dir.join("ase.conf")
}

/// An engine over a fresh configuration in `dir` talking plain HTTP to `endpoints`.
pub fn engine(dir: &Path, endpoints: &[&str]) -> Arc<Enforcer> {
    let conf = write_config(dir, endpoints, "enable_ssl=false\n");
    Arc::new(Enforcer::open(&conf).unwrap())
}

/// Poller options for tests: short interval and backoff, 1 s timeouts, 1 MiB cap, no election.
pub fn fast_poller() -> PollerOptions {
    PollerOptions {
        interval: Duration::from_millis(200),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        idle_check: Duration::from_millis(50),
        client: ClientOptions {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            max_body: 1 << 20,
            window: Duration::from_secs(86_400),
        },
        lock_path: None,
    }
}

/// Whether a GET /shop/items from `ip` with `headers` is blocked.
pub fn blocked(e: &Enforcer, ip: &str, headers: &[(&str, &str)]) -> bool {
    let h: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let req = Request {
        client_ip: Some(ip_to_u128(ip.parse().unwrap())),
        method: b"GET",
        scheme: b"http",
        host: b"shop.example",
        uri: b"/shop/items",
        headers: &h[..],
        username: b"",
        unknown_api: None,
    };
    e.check(&req).stops()
}

/// Polls `f` until true or `limit` passes; returns the last value.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port nothing listens on.
pub fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap().to_string();
    drop(l);
    a
}
