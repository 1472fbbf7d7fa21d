//! `ase.conf` and `abs.conf`: ASE's INI files (`key=value`, `;` comments).
//!
//! Parsing is pure (text in, [`Config`] out); reading the files lives in
//! `crate::config`. Every key is checked: an unknown key or a bad value is a
//! [`ConfigError`] naming the file, the line and the key. Keys that ASE has but
//! an in-process enforcer has no use for (ports, mode, log settings) are
//! accepted so that an operator's existing `ase.conf` loads unchanged.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the host does with a request that matches no API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownApi {
    /// Let it through (the client IP is still checked against the deny list).
    Pass,
    /// Answer `503` `Error: Unknown API`, as ASE does.
    Reject,
}

/// What the engine does with a request that carries one identifier kind
/// more than once with different values (`duplicate_identifiers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DuplicateIds {
    /// Look up every occurrence in the lists (the default).
    Check,
    /// As `Check`, and refuse the request with `400` when its occurrences
    /// disagree or a JWT is too large to read (docs/design.md, Identifiers).
    Reject,
}

/// What an engine does when its state store cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// Allow every request, and say so in status.
    Open,
    /// Block every request.
    Closed,
}

/// `abs.conf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsConfig {
    /// ABS nodes, `host:port`, tried in order.
    pub endpoints: Vec<String>,
    /// `x-abs-ak`.
    pub access_key: String,
    /// `x-abs-sk`.
    pub secret_key: String,
    /// TLS to ABS (default true).
    pub enable_ssl: bool,
    /// CA bundle to verify ABS with; `None` uses the system roots.
    pub ca_cert_path: Option<PathBuf>,
    /// ASE keys given in the file that ase accepts and does not act on.
    pub unused_keys: Vec<String>,
}

impl Default for AbsConfig {
    fn default() -> Self {
        AbsConfig {
            endpoints: Vec::new(),
            access_key: String::new(),
            secret_key: String::new(),
            enable_ssl: true,
            ca_cert_path: None,
            unused_keys: Vec::new(),
        }
    }
}

/// `ase.conf` (plus `abs.conf`), validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The `ase.conf` this came from.
    pub path: PathBuf,
    /// Master switch (`enable_firewall`, default true).
    pub enable_firewall: bool,
    /// Send traffic records to ABS (`enable_abs`, default false).
    pub enable_abs: bool,
    /// Fetch and block ABS's attack list (`enable_abs_attack`, default false).
    pub enable_abs_attack: bool,
    /// How often to fetch the attack list (`abs_attack_request_minutes`, default 10
    /// minutes; `abs_attack_request_interval` overrides it).
    pub abs_attack_interval: Duration,
    /// Real-time detection and blocking (`enable_ase_detected_attack`, default false).
    pub enable_ase_detected_attack: bool,
    /// Client IP from the first `X-Forwarded-For` address (`enable_xff`, default false).
    pub enable_xff: bool,
    /// Memory budget of the ABS attack list in bytes (`attack_list_memory`,
    /// default 128MB): entries beyond it are dropped at each sync
    /// (`sync::abs::sync_once`).
    pub attack_list_memory: u64,
    /// Directory of API JSON files (default `api/` beside ase.conf).
    pub api_dir: PathBuf,
    /// Directory of the state store (default `state/` beside ase.conf).
    pub state_dir: PathBuf,
    /// How often a process picks up list changes (default 100ms).
    pub sync_poll_interval: Duration,
    /// Unknown API policy (default pass).
    pub unknown_api: UnknownApi,
    /// Behaviour when the state cannot be loaded (default open).
    pub fail_mode: FailMode,
    /// Requests whose repeated identifiers disagree (`duplicate_identifiers`,
    /// default check).
    pub duplicate_identifiers: DuplicateIds,
    /// Replace tokens, cookies and API keys by a keyed hash in ABS traffic records.
    pub abs_obfuscate_identifiers: bool,
    /// `abs.conf`.
    pub abs: AbsConfig,
    /// ASE keys given in `ase.conf` that ase accepts and does not act on
    /// ([`Config::notice`] names them).
    pub unused_keys: Vec<String>,
}

impl Config {
    /// The defaults for an `ase.conf` at `path`.
    pub fn defaults(path: &Path) -> Config {
        let dir = path.parent().unwrap_or(Path::new("."));
        Config {
            path: path.to_path_buf(),
            enable_firewall: true,
            enable_abs: false,
            enable_abs_attack: false,
            abs_attack_interval: Duration::from_secs(600),
            enable_ase_detected_attack: false,
            enable_xff: false,
            attack_list_memory: 128 << 20,
            api_dir: dir.join("api"),
            state_dir: dir.join("state"),
            sync_poll_interval: Duration::from_millis(100),
            unknown_api: UnknownApi::Pass,
            fail_mode: FailMode::Open,
            duplicate_identifiers: DuplicateIds::Check,
            abs_obfuscate_identifiers: false,
            abs: AbsConfig::default(),
            unused_keys: Vec::new(),
        }
    }

    /// The notice for the keys of ASE that the files give and ase does not
    /// act on (`None` when there are none): an operator who brings an
    /// `ase.conf` from ASE learns which of its settings have no effect here.
    pub fn notice(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.unused_keys.is_empty() {
            parts.push(format!(
                "{}: {}",
                self.path.display(),
                self.unused_keys.join(", ")
            ));
        }
        if !self.abs.unused_keys.is_empty() {
            parts.push(format!(
                "{}: {}",
                self.path.with_file_name("abs.conf").display(),
                self.abs.unused_keys.join(", ")
            ));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "ASE keys ase accepts and does not act on: {}",
                parts.join("; ")
            )
        })
    }
}

/// A bad configuration file: which file, line and key, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line number; 0 when the error is about the file as a whole.
    pub line: usize,
    /// The key, when the error is about one.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Parses `true`/`false` (ASE writes them lowercase; any case is accepted).
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("expected true or false, got {v:?}")),
    }
}

/// Parses a duration: a number and a unit among `ms`, `s`, `m`, `h`, `d`
/// (`100ms`, `5s`, `10m`). A bare number is refused: the unit is not guessable.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {v:?} needs a unit (ms, s, m, h, d)"))?;
    let (num, unit) = v.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {v:?}: expected a number and a unit such as 5s"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => {
            return Err(format!(
                "invalid duration unit in {v:?}: use ms, s, m, h or d"
            ));
        }
    }
    .ok_or_else(|| format!("duration {v:?} is too large"))?;
    Ok(Duration::from_millis(ms))
}

/// Parses a memory size such as `128MB`, `64mb`, `1GB` (units KB, MB, GB, TB).
pub fn parse_size(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {v:?}: expected a number and a unit such as 128MB"))?;
    let mul: u64 = match unit.to_ascii_uppercase().as_str() {
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return Err(format!("invalid size unit in {v:?}: use KB, MB, GB or TB")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("size {v:?} is too large"))
}

/// Splits an INI text into `(line number, key, value)`, refusing lines that are
/// neither blank, a comment, nor `key=value`.
fn lines(text: &str, file: &Path) -> Result<Vec<(usize, String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(ConfigError {
                file: file.to_path_buf(),
                line: i + 1,
                key: String::new(),
                message: format!("expected key=value, got {line:?}"),
            });
        };
        // A `;` after the value starts a comment (ASE's files put them on their own
        // lines, but a trailing one is common in hand-edited files).
        let v = match v.find(" ;") {
            Some(p) => &v[..p],
            None => v,
        };
        let key = k.trim().to_string();
        if key.is_empty() {
            return Err(ConfigError {
                file: file.to_path_buf(),
                line: i + 1,
                key,
                message: "empty key".into(),
            });
        }
        if out
            .iter()
            .any(|(_, k2, _): &(usize, String, String)| *k2 == key)
        {
            return Err(ConfigError {
                file: file.to_path_buf(),
                line: i + 1,
                key,
                message: "key given twice".into(),
            });
        }
        out.push((i + 1, key, v.trim().to_string()));
    }
    Ok(out)
}

/// ASE `ase.conf` keys that an in-process enforcer accepts and has no use for.
const ASE_PASSIVE_KEYS: &[&str] = &[
    "mode",
    "http_ws_port",
    "https_wss_port",
    "management_port",
    "admin_log_level",
    "enable_cluster",
    "enable_access_log",
    "flush_log_immediate",
    "enable_audit",
    "syslog_server",
    "cpu_count",
    "hostname_refresh",
    "decoy_alert_interval",
    "enable_sideband_authentication",
    "enable_sideband_keepalive",
    "enable_mtls",
    "enable_ase_health",
    "timezone",
    "auth_method",
    "enable_abs_publish",
    "abs_publish_request_minutes",
    "enable_strict_parsing",
    "enable_hostname_rewrite",
    "keystore_password",
    "enable_1G",
    "enable_google_pubsub",
    "google_pubsub_topic",
    "google_pubsub_concurrency",
    "google_pubsub_qps",
    "google_pubsub_apikey",
    "google_pubsub_timeout",
    "cache_queue_size",
    "enable_email",
    "email_report",
    "smtp_host",
    "smtp_port",
    "sender_email",
    "sender_password",
    "receiver_email",
    "email_alert",
    "enable_ssl_v3",
    "enable_tls_v1",
    "enable_tls_v1_1",
    "enable_tls_v1_2",
    "enable_tls_v1_3",
    "server_ssl_ciphers",
    "client_ssl_ciphers",
    "x_forwarded_for",
    "enable_connection_keepalive",
    "log_level",
];

/// Keys of [`ASE_PASSIVE_KEYS`] that get no notice: ase-server (the sideband
/// listener) acts on them.
const SERVER_KEYS: &[&str] = &[
    "mode",
    "http_ws_port",
    "https_port",
    "enable_sideband_authentication",
    "enable_sideband_keepalive",
];

const ABS_PASSIVE_KEYS: &[&str] = &[
    "deployment_type",
    "gateway_credential",
    "abs_cloud_endpoint",
];

fn resolve(base: &Path, v: &str) -> PathBuf {
    let p = Path::new(v);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// Parses the text of an `ase.conf` found at `path`.
pub fn parse_ase_conf(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut c = Config::defaults(path);
    let mut interval_override = None;
    for (line, key, v) in lines(text, path)? {
        let err = |message: String| ConfigError {
            file: path.to_path_buf(),
            line,
            key: key.clone(),
            message,
        };
        let nonempty = |v: &str| {
            if v.is_empty() {
                Err("empty value".to_string())
            } else {
                Ok(())
            }
        };
        match key.as_str() {
            "enable_firewall" => c.enable_firewall = parse_bool(&v).map_err(err)?,
            "enable_abs" => c.enable_abs = parse_bool(&v).map_err(err)?,
            "enable_abs_attack" => c.enable_abs_attack = parse_bool(&v).map_err(err)?,
            "enable_ase_detected_attack" => {
                c.enable_ase_detected_attack = parse_bool(&v).map_err(err)?
            }
            "enable_xff" => c.enable_xff = parse_bool(&v).map_err(err)?,
            "abs_obfuscate_identifiers" => {
                c.abs_obfuscate_identifiers = parse_bool(&v).map_err(err)?
            }
            "abs_attack_request_minutes" => {
                let n: u64 = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=525_600).contains(n))
                    .ok_or_else(|| {
                        err(format!(
                            "expected whole minutes from 1 to 525600, got {v:?}"
                        ))
                    })?;
                c.abs_attack_interval = Duration::from_secs(n * 60);
            }
            "abs_attack_request_interval" => {
                let d = parse_duration(&v).map_err(err)?;
                if d < Duration::from_secs(1) {
                    return Err(err("must be at least 1s".into()));
                }
                interval_override = Some(d);
            }
            "sync_poll_interval" => {
                let d = parse_duration(&v).map_err(err)?;
                if d < Duration::from_millis(10) || d > Duration::from_secs(60) {
                    return Err(err("must be between 10ms and 60s".into()));
                }
                c.sync_poll_interval = d;
            }
            "attack_list_memory" => {
                let n = parse_size(&v).map_err(err)?;
                if !(64 << 20..=1024 << 30).contains(&n) {
                    return Err(err("must be between 64MB and 1024GB".into()));
                }
                c.attack_list_memory = n;
            }
            "api_dir" => {
                nonempty(&v).map_err(err)?;
                c.api_dir = resolve(path, &v);
            }
            "state_dir" => {
                nonempty(&v).map_err(err)?;
                c.state_dir = resolve(path, &v);
            }
            "unknown_api" => {
                c.unknown_api = match v.as_str() {
                    "pass" => UnknownApi::Pass,
                    "reject" => UnknownApi::Reject,
                    _ => return Err(err(format!("expected pass or reject, got {v:?}"))),
                }
            }
            "fail_mode" => {
                c.fail_mode = match v.as_str() {
                    "open" => FailMode::Open,
                    "closed" => FailMode::Closed,
                    _ => return Err(err(format!("expected open or closed, got {v:?}"))),
                }
            }
            "duplicate_identifiers" => {
                c.duplicate_identifiers = match v.as_str() {
                    "check" => DuplicateIds::Check,
                    "reject" => DuplicateIds::Reject,
                    _ => return Err(err(format!("expected check or reject, got {v:?}"))),
                }
            }
            k if ASE_PASSIVE_KEYS.contains(&k) => {
                if k.starts_with("enable_") {
                    parse_bool(&v).map_err(err)?;
                }
                if !SERVER_KEYS.contains(&k) {
                    c.unused_keys.push(key.clone());
                }
            }
            _ => return Err(err("unknown key".into())),
        }
    }
    if let Some(d) = interval_override {
        c.abs_attack_interval = d;
    }
    Ok(c)
}

/// Parses the text of an `abs.conf` found at `path`.
pub fn parse_abs_conf(text: &str, path: &Path) -> Result<AbsConfig, ConfigError> {
    let mut a = AbsConfig::default();
    for (line, key, v) in lines(text, path)? {
        let err = |message: String| ConfigError {
            file: path.to_path_buf(),
            line,
            key: key.clone(),
            message,
        };
        match key.as_str() {
            "abs_endpoint" => {
                a.endpoints.clear();
                for ep in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let ok = ep.rsplit_once(':').is_some_and(|(h, p)| {
                        !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)
                    });
                    if !ok || ep.contains('/') {
                        return Err(err(format!("expected host:port, got {ep:?}")));
                    }
                    a.endpoints.push(ep.to_string());
                }
            }
            "access_key" => {
                if v.contains(':') {
                    return Err(err("':' is not allowed in ABS keys".into()));
                }
                a.access_key = v;
            }
            "secret_key" => {
                if v.contains(':') {
                    return Err(err("':' is not allowed in ABS keys".into()));
                }
                a.secret_key = v;
            }
            "enable_ssl" => a.enable_ssl = parse_bool(&v).map_err(err)?,
            "abs_ca_cert_path" => {
                a.ca_cert_path = (!v.is_empty()).then(|| resolve(path, &v));
            }
            k if ABS_PASSIVE_KEYS.contains(&k) => a.unused_keys.push(key.clone()),
            _ => return Err(err("unknown key".into())),
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("/etc/ase/ase.conf")
    }

    #[test]
    fn defaults_and_ase_keys() {
        let c = parse_ase_conf(
            "; comment\nmode=sideband\nenable_firewall=true\nenable_abs_attack=true\n\
             ; This value determines how often ASE will query ABS.\nabs_attack_request_minutes=10\n\
             enable_xff=true\nattack_list_memory=128MB\nhttp_ws_port=80\n",
            &p(),
        )
        .unwrap();
        assert!(c.enable_firewall && c.enable_abs_attack && c.enable_xff);
        assert!(!c.enable_ase_detected_attack);
        assert_eq!(c.abs_attack_interval, Duration::from_secs(600));
        assert_eq!(c.api_dir, PathBuf::from("/etc/ase/api"));
        assert_eq!(c.state_dir, PathBuf::from("/etc/ase/state"));
        assert_eq!(c.sync_poll_interval, Duration::from_millis(100));
    }

    #[test]
    fn keys_ase_does_not_act_on_are_named_but_not_the_sideband_ones() {
        let c = parse_ase_conf(
            "mode=sideband\nhttp_ws_port=80\nenable_cluster=true\nenable_firewall=true\n\
             enable_audit=false\n",
            &p(),
        )
        .unwrap();
        assert_eq!(c.unused_keys, ["enable_cluster", "enable_audit"]);
        assert_eq!(
            c.notice().unwrap(),
            "ASE keys ase accepts and does not act on: /etc/ase/ase.conf: enable_cluster, \
             enable_audit"
        );
        let quiet = parse_ase_conf("mode=sideband\nenable_firewall=true\n", &p()).unwrap();
        assert_eq!(quiet.notice(), None);
    }

    #[test]
    fn our_keys_and_relative_paths() {
        let c = parse_ase_conf(
            "api_dir=apis\nstate_dir=/var/lib/ase\nabs_attack_request_interval=5s\n\
             abs_attack_request_minutes=3\nsync_poll_interval=50ms\nunknown_api=reject\nfail_mode=closed\n",
            &p(),
        )
        .unwrap();
        assert_eq!(c.api_dir, PathBuf::from("/etc/ase/apis"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/ase"));
        assert_eq!(
            c.abs_attack_interval,
            Duration::from_secs(5),
            "interval overrides minutes"
        );
        assert_eq!(c.unknown_api, UnknownApi::Reject);
        assert_eq!(c.fail_mode, FailMode::Closed);
        assert_eq!(c.duplicate_identifiers, DuplicateIds::Check);
    }

    #[test]
    fn bad_lines_name_file_line_and_key() {
        let cases = [
            ("enable_firewall=yes\n", 1, "enable_firewall"),
            ("\n\nbogus_key=1\n", 3, "bogus_key"),
            (
                "abs_attack_request_minutes=0\n",
                1,
                "abs_attack_request_minutes",
            ),
            (
                "abs_attack_request_minutes=ten\n",
                1,
                "abs_attack_request_minutes",
            ),
            ("sync_poll_interval=100\n", 1, "sync_poll_interval"),
            ("sync_poll_interval=5ms\n", 1, "sync_poll_interval"),
            ("attack_list_memory=12MB\n", 1, "attack_list_memory"),
            ("attack_list_memory=lots\n", 1, "attack_list_memory"),
            ("unknown_api=maybe\n", 1, "unknown_api"),
            ("fail_mode=sideways\n", 1, "fail_mode"),
            ("duplicate_identifiers=last\n", 1, "duplicate_identifiers"),
            ("api_dir=\n", 1, "api_dir"),
            ("enable_xff=true\nenable_xff=false\n", 2, "enable_xff"),
            ("just text\n", 1, ""),
        ];
        for (text, line, key) in cases {
            let e = parse_ase_conf(text, &p()).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (line, key), "{text:?}: {e}");
            assert!(e.to_string().starts_with("/etc/ase/ase.conf:"), "{e}");
        }
    }

    #[test]
    fn abs_conf() {
        let a = parse_abs_conf(
            "deployment_type=onprem\nabs_endpoint=127.0.0.1:8080, abs2:9090\naccess_key=abs_ak\n\
             secret_key=abs_sk\nenable_ssl=false\nabs_ca_cert_path=certs/ca.pem\n",
            Path::new("/etc/ase/abs.conf"),
        )
        .unwrap();
        assert_eq!(a.endpoints, vec!["127.0.0.1:8080", "abs2:9090"]);
        assert!(!a.enable_ssl);
        assert_eq!(a.ca_cert_path, Some(PathBuf::from("/etc/ase/certs/ca.pem")));
        for bad in [
            "abs_endpoint=nohost\n",
            "abs_endpoint=h:0\n",
            "access_key=a:b\n",
            "enable_ssl=1\n",
            "x=y\n",
        ] {
            assert!(parse_abs_conf(bad, Path::new("abs.conf")).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(parse_size("64mb").unwrap(), 64 << 20);
        assert!(parse_size("64").is_err());
    }
}
