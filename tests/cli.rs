//! `ase-cli` through the real binary: ASE's documented outputs byte for byte
//! (its pages "Managing allow lists and deny lists", "Configuring automated ASE
//! attack blocking", "Managing ASE blocking of ABS-detected attacks" and
//! "Real-time Detected attacks for inline ASE"), our extensions, and bad input.

mod common;
mod store_common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ase::clock::now_ms;
use ase::policy::{IdKind, Identifier, Source};
use ase::store::{NewEntry, Store};
use store_common::{CLI, Env, assert_success, run};

fn id(kind: IdKind, name: &str, value: &str) -> Identifier {
    Identifier::new(kind, name, value).unwrap()
}

#[test]
fn documented_allow_list() {
    let e = Env::new("");
    for (args, want) in [
        (
            &["add_whitelist", "ip", "10.10.10.10"][..],
            "ip 10.10.10.10 added to whitelist\n",
        ),
        (
            &["add_whitelist", "cookie", "JSESSIONID", "cookie_1.4"],
            "cookie JSESSIONID cookie_1.4 added to whitelist\n",
        ),
        (
            &["add_whitelist", "token", "token1.4"],
            "token token1.4 added to whitelist\n",
        ),
        (
            &["add_whitelist", "api_key", "X-API-KEY", "key_1.4"],
            "api_key X-API-KEY key_1.4 added to whitelist\n",
        ),
        (
            &["add_whitelist", "username", "abc@example.com"],
            "username abc@example.com added to whitelist\n",
        ),
    ] {
        assert_eq!(e.ok(args), want, "{args:?}");
    }
    // The documented view, built from exactly its entries.
    e.ok(&["clear_whitelist", "--yes"]);
    for args in [
        &["add_whitelist", "ip", "1.1.1.1"][..],
        &["add_whitelist", "cookie", "JSESSIONID", "cookie_1.1"],
        &["add_whitelist", "token", "token1.3"],
        &["add_whitelist", "api_key", "X-API-KEY", "key_1.4"],
        &["add_whitelist", "username", "abc@example.com"],
    ] {
        e.ok(args);
    }
    assert_eq!(
        e.ok(&["view_whitelist"]),
        "Whitelist\n\
         1) type : ip, value : 1.1.1.1\n\
         2) type : cookie, name : JSESSIONID, value : cookie_1.1\n\
         3) type : token, value : token1.3\n\
         4) type : api_key, name : X-API-KEY, value : key_1.4\n\
         5) type : username, value : abc@example.com\n"
    );
    e.ok(&["add_whitelist", "ip", "4.4.4.4"]);
    e.ok(&["add_whitelist", "token", "token1.1"]);
    for (args, want) in [
        (
            &["delete_whitelist", "ip", "4.4.4.4"][..],
            "ip 4.4.4.4 deleted from whitelist\n",
        ),
        (
            &["delete_whitelist", "cookie", "JSESSIONID", "cookie_1.1"],
            "cookie JSESSIONID cookie_1.1 deleted from whitelist\n",
        ),
        (
            &["delete_whitelist", "token", "token1.1"],
            "token token1.1 deleted from whitelist\n",
        ),
        (
            &["delete_whitelist", "api_key", "X-API-KEY", "key_1.4"],
            "api_key X-API-KEY key_1.4 deleted from whitelist\n",
        ),
        (
            &["delete_whitelist", "username", "abc@example.com"],
            "username abc@example.com deleted from whitelist\n",
        ),
    ] {
        assert_eq!(e.ok(args), want, "{args:?}");
    }
    assert_eq!(
        e.ok(&["view_whitelist"]),
        "Whitelist\n1) type : ip, value : 1.1.1.1\n2) type : token, value : token1.3\n"
    );
    let prompt = "This will delete all whitelist Attacks, Are you sure (y/n) : \n";
    let o = e.cli_in(&["clear_whitelist"], "n\n");
    assert_success(&o, &["clear_whitelist"]);
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!("{prompt}Action canceled\n")
    );
    assert!(
        e.ok(&["view_whitelist"]).starts_with("Whitelist\n1)"),
        "n keeps the list"
    );
    let o = e.cli_in(&["clear_whitelist"], "");
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!("{prompt}Action canceled\n"),
        "end of input means no"
    );
    let o = e.cli_in(&["clear_whitelist"], "y\n");
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!("{prompt}Whitelist cleared\n")
    );
    assert_eq!(e.ok(&["view_whitelist"]), "No Whitelist\n");
}

/// Fills the ABS and real-time sources as ASE's documented views show them.
fn documented_sources(e: &Env) {
    let s = Store::open(&e.state_dir()).unwrap();
    let abs: Vec<NewEntry> = [
        "fAtTzxFJZ2Zkr7HZ9KM17s7kY2Mu",
        "oFQOr11Gj8cCRv1k4849RZOPztPP",
        "Rz7vn5KoLUcAhruQZ4H5cE00s2mG",
        "gxbkGPNuFJw69Z5PF44PoRIfPugA",
    ]
    .iter()
    .map(|t| NewEntry::new(id(IdKind::Token, "", t), 0))
    .chain([NewEntry::new(id(IdKind::Username, "", "user1"), 0)])
    .collect();
    s.replace_source(Source::Abs, &abs).unwrap();
    let ip = |v: &str| id(IdKind::Ip, "", v);
    let three = |t: &str, i: &str, c: &str| {
        vec![
            id(IdKind::Token, "", t),
            ip(i),
            id(IdKind::Cookie, "JSESSIONID", c),
        ]
    };
    s.record_detections(&[
        (vec![ip("172.16.40.15")], Source::Decoy),
        (vec![ip("1.2.3.4")], Source::Decoy),
        (
            three("token1.1", "1.1.1.1", "cookie_1.1"),
            Source::InvalidProtocol,
        ),
        (
            three("token1.3", "3.3.3.3", "cookie_1.3"),
            Source::InvalidMethod,
        ),
        (
            three("token1.2", "2.2.2.2", "cookie_1.2"),
            Source::InvalidContentType,
        ),
    ])
    .unwrap();
}

#[test]
fn documented_deny_list() {
    let e = Env::new("");
    for (args, want) in [
        (
            &["add_blacklist", "ip", "1.1.1.1"][..],
            "ip 1.1.1.1 added to blacklist\n",
        ),
        (
            &[
                "add_blacklist",
                "cookie",
                "JSESSIONID",
                "ad233edqsd1d23redwefew",
            ],
            "cookie JSESSIONID ad233edqsd1d23redwefew added to blacklist\n",
        ),
        (
            &["add_blacklist", "token", "ad233edqsd1d23redwefew"],
            "token ad233edqsd1d23redwefew added to blacklist\n",
        ),
        (
            &[
                "add_blacklist",
                "api_key",
                "AccessKey",
                "b31dfa4678b24aa5a2daa06aba1857d4",
            ],
            "api_key AccessKey b31dfa4678b24aa5a2daa06aba1857d4 added to blacklist\n",
        ),
        (
            &["add_blacklist", "username", "abc@example.com"],
            "username abc@example.com added to blacklist\n",
        ),
        (
            &["add_blacklist", "username", "your", "name"],
            "username your name added to blacklist\n",
        ),
    ] {
        assert_eq!(e.ok(args), want, "{args:?}");
    }
    for (args, want) in [
        (
            &["delete_blacklist", "ip", "1.1.1.1"][..],
            "ip 1.1.1.1 deleted from blacklist\n",
        ),
        (
            &[
                "delete_blacklist",
                "api_key",
                "AccessKey",
                "b31dfa4678b24aa5a2daa06aba1857d4",
            ],
            "api_key AccessKey b31dfa4678b24aa5a2daa06aba1857d4 deleted from blacklist\n",
        ),
    ] {
        assert_eq!(e.ok(args), want, "{args:?}");
    }
    e.ok(&["add_blacklist", "cookie", "JSESSIONID", "avbry47wdfgd"]);
    e.ok(&["add_blacklist", "token", "58fcb0cb97c54afbb88c07a4f2d73c35"]);
    assert_eq!(
        e.ok(&["delete_blacklist", "cookie", "JSESSIONID", "avbry47wdfgd"]),
        "cookie JSESSIONID avbry47wdfgd deleted from blacklist\n"
    );
    assert_eq!(
        e.ok(&[
            "delete_blacklist",
            "token",
            "58fcb0cb97c54afbb88c07a4f2d73c35"
        ]),
        "token 58fcb0cb97c54afbb88c07a4f2d73c35 deleted from blacklist\n"
    );

    // The documented `view_blacklist all`.
    e.ok(&["clear_blacklist", "--yes"]);
    for args in [
        &["add_blacklist", "ip", "172.168.11.110"][..],
        &[
            "add_blacklist",
            "token",
            "cdE94R3osh283B7NoiJR41XHgt7gxroot",
        ],
        &["add_blacklist", "username", "blockeduser"],
        &[
            "add_blacklist",
            "cookie",
            "JSESSIONID",
            "pZlhg5s3i8csImMoas7vh81vz",
        ],
        &[
            "add_blacklist",
            "api_key",
            "x-api-key",
            "d4d28833e2c24be0913f4267f3b91ce5",
        ],
    ] {
        e.ok(args);
    }
    let s = Store::open(&e.state_dir()).unwrap();
    s.set_switch("ase_detected_attack", true).unwrap();
    drop(s);
    documented_sources(&e);
    let all = e.ok(&["view_blacklist", "all"]);
    assert!(
        all.starts_with(
            "Manual Blacklist\n\
             1)  type : ip, value : 172.168.11.110\n\
             2)  type : token, value : cdE94R3osh283B7NoiJR41XHgt7gxroot\n\
             3)  type : username, value : blockeduser\n\
             4)  type : cookie, name : JSESSIONID, value : pZlhg5s3i8csImMoas7vh81vz\n\
             5)  type : api_key, name : x-api-key, value : d4d28833e2c24be0913f4267f3b91ce5\n\
             ABS Generated Blacklist\n\
             1)  type : token, value : fAtTzxFJZ2Zkr7HZ9KM17s7kY2Mu\n\
             2)  type : token, value : oFQOr11Gj8cCRv1k4849RZOPztPP\n\
             3)  type : token, value : Rz7vn5KoLUcAhruQZ4H5cE00s2mG\n\
             4)  type : token, value : gxbkGPNuFJw69Z5PF44PoRIfPugA\n\
             5)  type : username, value : user1\n\
             Realtime Decoy Blacklist\n\
             1)  type : ip, value : 172.16.40.15\n\
             2)  type : ip, value : 1.2.3.4\n\
             Realtime Protocol Blacklist\n"
        ),
        "{all}"
    );
    for (filter, want) in [
        (
            "decoy",
            "Realtime Decoy Blacklist\n1) type : ip, value : 172.16.40.15\n2) type : ip, value : 1.2.3.4\n",
        ),
        (
            "invalid_protocol",
            "Realtime Protocol Blacklist\n\
             1) type : token, value : token1.1\n\
             2) type : ip, value : 1.1.1.1\n\
             3) type : cookie, name : JSESSIONID, value : cookie_1.1\n",
        ),
        (
            "invalid_method",
            "Realtime Method Blacklist\n\
             1) type : token, value : token1.3\n\
             2) type : ip, value : 3.3.3.3\n\
             3) type : cookie, name : JSESSIONID, value : cookie_1.3\n",
        ),
        (
            "invalid_content_type",
            "Realtime Content-Type Blacklist\n\
             1) type : token, value : token1.2\n\
             2) type : ip, value : 2.2.2.2\n\
             3) type : cookie, name : JSESSIONID, value : cookie_1.2\n",
        ),
    ] {
        assert_eq!(e.ok(&["view_blacklist", filter]), want, "{filter}");
    }
    // Seed 003: disabling real-time detection deletes those entries.
    assert_eq!(
        e.ok(&["disable_ase_detected_attack"]),
        "ASE Detected Attack is now disabled\n"
    );
    assert_eq!(e.ok(&["view_blacklist", "decoy"]), "No Blacklist\n");
    assert_eq!(
        e.ok(&["view_blacklist", "invalid_method"]),
        "No Blacklist\n"
    );
    assert!(
        e.ok(&["view_blacklist", "manual"])
            .starts_with("Manual Blacklist\n1) type : ip")
    );

    e.ok(&["clear_blacklist", "--yes"]);
    assert_eq!(e.ok(&["view_blacklist", "abs_detected"]), "No Blacklist\n");
    assert_eq!(e.ok(&["view_blacklist", "all"]), "No Blacklist\n");

    e.ok(&["add_blacklist", "ip", "1.1.1.1"]);
    let prompt = "This will delete all blacklist Attacks, Are you sure (y/n) : \n";
    let o = e.cli_in(&["clear_blacklist"], "n\n");
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!("{prompt}Action canceled\n")
    );
    let o = e.cli_in(&["clear_blacklist"], "y\n");
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!("{prompt}Blacklist cleared\n")
    );
    assert_eq!(e.ok(&["view_blacklist", "all"]), "No Blacklist\n");
}

#[test]
fn documented_switch_messages() {
    let e = Env::new("");
    for (cmd, want) in [
        ("enable_firewall", "Firewall is now enabled\n"),
        ("disable_firewall", "Firewall is now disabled\n"),
        ("enable_abs", "ABS is now enabled\n"),
        ("disable_abs", "ABS is now disabled\n"),
        ("enable_abs_attack", "ABS Attack is now enabled\n"),
        ("disable_abs_attack", "ABS Attack is now disabled\n"),
        (
            "enable_ase_detected_attack",
            "ASE Detected Attack is now enabled\n",
        ),
        (
            "disable_ase_detected_attack",
            "ASE Detected Attack is now disabled\n",
        ),
        ("enable_firewall", "Firewall is now enabled\n"),
        ("enable_abs_attack", "ABS Attack is now enabled\n"),
    ] {
        assert_eq!(e.ok(&[cmd]), want, "{cmd}");
    }
    let status = e.ok(&["status"]);
    for line in [
        "firewall                : enabled\n",
        "abs                     : disabled, ssl: enabled\n",
        "abs attack              : enabled\n",
        "ase detected attack     : disabled\n",
    ] {
        assert!(status.contains(line), "{line:?} in\n{status}");
    }
}

#[test]
fn view_after_mixed_adds_and_deletes() {
    let e = Env::new("");
    let b = "add_blacklist";
    e.ok(&[b, "ip", "1.1.1.1"]);
    e.ok(&[b, "ip", "2.2.2.2"]);
    e.ok(&[b, "token", "t1"]);
    e.ok(&["delete_blacklist", "ip", "1.1.1.1"]);
    e.ok(&[b, "ip", "::ffff:3.3.3.3"]);
    e.ok(&[b, "ip", "2.2.2.2"]); // again: stays in its place
    e.ok(&[b, "ip", "10.9.8.7/8"]);
    e.ok(&[b, "ip", "1.1.1.1"]); // back, at the end
    e.ok(&["delete_blacklist", "token", "t1"]);
    e.ok(&[b, "api_key", "X-Key", "k"]);
    assert_eq!(
        e.ok(&["view_blacklist", "manual"]),
        "Manual Blacklist\n\
         1) type : ip, value : 2.2.2.2\n\
         2) type : ip, value : 3.3.3.3\n\
         3) type : ip, value : 10.0.0.0/8\n\
         4) type : ip, value : 1.1.1.1\n\
         5) type : api_key, name : X-Key, value : k\n"
    );
    // API key names are case-insensitive, values are not.
    assert_eq!(
        e.ok(&["delete_blacklist", "api_key", "x-key", "k"]),
        "api_key x-key k deleted from blacklist\n"
    );
    let o = e.cli(&["delete_blacklist", "ip", "2.2.2.3"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(o.stderr).unwrap(),
        "ase-cli: ip 2.2.2.3 is not in the blacklist\n"
    );
    let o = e.cli(&["delete_blacklist", "token", "secret-value"]);
    assert!(
        !String::from_utf8(o.stderr)
            .unwrap()
            .contains("secret-value"),
        "token values are not echoed in errors"
    );
}

#[test]
fn bad_input_changes_nothing() {
    let e = Env::new("");
    e.ok(&["add_blacklist", "ip", "1.1.1.1"]);
    let before = e.ok(&["export_blacklist"]);
    let pos = |e: &Env| {
        e.ok(&["status"])
            .lines()
            .find(|l| l.starts_with("change log position"))
            .unwrap()
            .to_string()
    };
    let p0 = pos(&e);
    let cases: &[(&[&str], &str)] = &[
        (&["frobnicate"], "unknown command"),
        (&["add_blacklist", "ip"], "ip needs exactly one value"),
        (
            &["add_blacklist", "ip", "1.1.1.1", "2.2.2.2"],
            "ip needs exactly one value",
        ),
        (
            &["add_blacklist", "cookie", "JSESSIONID"],
            "cookie needs a name and a value",
        ),
        (&["add_blacklist", "ip", "1.2.3"], "invalid IP address"),
        (
            &["add_blacklist", "ip", "10.0.0.0/33"],
            "invalid prefix length",
        ),
        (&["add_blacklist", "token", ""], "empty value"),
        (&["add_blacklist", "mac", "x"], "unknown identifier type"),
        (&["add_whitelist"], "missing identifier"),
        (&["view_blacklist", "bogus"], "unknown filter"),
        (&["enable_blocking", "nosuchapi"], "unknown API: nosuchapi"),
        (&["enable_blocking"], "needs one API name"),
        (&["status", "extra"], "takes no arguments"),
        (&["view_whitelist", "--ttl", "5m"], "--ttl applies only"),
        (
            &["add_blacklist", "--ttl", "5", "ip", "9.9.9.9"],
            "needs a unit",
        ),
        (
            &["add_blacklist", "--bogus", "ip", "9.9.9.9"],
            "unknown option --bogus",
        ),
        (
            &["import_blacklist", "/nonexistent/list.txt"],
            "cannot read /nonexistent/list.txt",
        ),
    ];
    for (args, msg) in cases {
        let o = e.cli(args);
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            err.starts_with("ase-cli: ") && err.contains(msg),
            "{args:?}: {err:?}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    // Wrong credential, missing credential, unreadable config.
    let cfg = e.config.to_str().unwrap();
    let o = run(
        &[
            "--config",
            cfg,
            "-u",
            "admin",
            "-p",
            "nope",
            "add_blacklist",
            "ip",
            "9.9.9.9",
        ],
        "",
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(o.stderr).unwrap(),
        "ase-cli: authentication failed: wrong user name or password (1 failed login in the \
         last 15 minutes; the next attempt is checked after 1 s)\n"
    );
    let o = run(
        &[
            "--config",
            cfg,
            "-u",
            "root",
            "-p",
            "admin",
            "clear_blacklist",
            "--yes",
        ],
        "",
    );
    assert_eq!(o.status.code(), Some(1));
    let o = run(&["--config", cfg, "add_blacklist", "ip", "9.9.9.9"], "");
    assert!(
        String::from_utf8(o.stderr)
            .unwrap()
            .contains("missing credential")
    );
    let o = run(
        &[
            "--config",
            "/nonexistent/ase.conf",
            "-u",
            "admin",
            "-p",
            "admin",
            "status",
        ],
        "",
    );
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("/nonexistent/ase.conf") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(e.ok(&["export_blacklist"]), before);
    assert_eq!(pos(&e), p0, "nothing was logged");
}

/// The password need not be on the command line (where `ps` shows it):
/// `ASE_PASSWORD` is checked, `--password-file` wins over it, and with
/// neither and no terminal to prompt on the command is refused.
#[test]
fn password_from_environment_or_file_file_first_none_without_terminal_refused() {
    let e = Env::new("");
    let cfg = e.config.to_str().unwrap();
    let cli = |args: &[&str], env: Option<&str>| {
        let mut c = Command::new(CLI);
        c.args(["--config", cfg, "-u", "admin"])
            .args(args)
            .env_remove("ASE_CONFIG")
            .env_remove("ASE_PASSWORD")
            .stdin(Stdio::null());
        if let Some(p) = env {
            c.env("ASE_PASSWORD", p);
        }
        c.output().unwrap()
    };
    let o = cli(&["add_blacklist", "ip", "9.8.7.6"], Some("admin"));
    assert_success(&o, &["ASE_PASSWORD"]);
    let o = cli(&["view_blacklist"], Some("wrong"));
    assert_eq!(o.status.code(), Some(1), "ASE_PASSWORD is checked");

    let file = e.dir.path().join("password");
    std::fs::write(&file, "admin\n").unwrap();
    let f = file.to_str().unwrap();
    let o = cli(&["--password-file", f, "export_blacklist"], Some("wrong"));
    assert_success(&o, &["--password-file"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "ip 9.8.7.6\n",
        "the file beats the environment"
    );
    let o = cli(&["--password-file", "/nonexistent/pw", "status"], None);
    assert_eq!(o.status.code(), Some(1));

    // No password anywhere and no terminal to ask on: refused, nothing done.
    let o = cli(&["add_blacklist", "ip", "1.1.1.1"], None);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("missing password") && err.contains("ASE_PASSWORD"),
        "{err}"
    );
    assert_eq!(e.ok(&["export_blacklist"]), "ip 9.8.7.6\n");
}

/// `status` says where each switch's value comes from and which ASE keys of
/// the configuration have no effect.
#[test]
fn status_shows_switch_sources_and_keys_not_acted_on() {
    let e = Env::new("enable_cluster=true\nenable_audit=false\nmode=sideband");
    let st = e.ok(&["status"]);
    assert_eq!(
        status_line(&st, "switches from ase-cli"),
        "none (every switch as ase.conf sets it)"
    );
    assert_eq!(
        status_line(&st, "ase keys not acted on"),
        format!("{}: enable_cluster, enable_audit", e.config.display())
    );
    e.ok(&["disable_firewall"]);
    e.ok(&["enable_ase_detected_attack"]);
    let st = e.ok(&["status"]);
    assert_eq!(status_line(&st, "firewall"), "disabled");
    assert_eq!(
        status_line(&st, "switches from ase-cli"),
        "firewall disabled (ase.conf: enabled); ase_detected_attack enabled (ase.conf: disabled)"
    );
}

#[test]
fn options_anywhere_help_version_and_env_config() {
    let e = Env::new("");
    let cfg = e.config.to_str().unwrap();
    let o = run(
        &[
            "add_blacklist",
            "ip",
            "5.5.5.5",
            "-u",
            "admin",
            "--config",
            cfg,
            "-p",
            "admin",
        ],
        "",
    );
    assert_success(&o, &["flexible order"]);
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "ip 5.5.5.5 added to blacklist\n"
    );
    let o = std::process::Command::new(store_common::CLI)
        .args(["-u", "admin", "-p", "admin", "view_blacklist", "manual"])
        .env("ASE_CONFIG", cfg)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "Manual Blacklist\n1) type : ip, value : 5.5.5.5\n"
    );
    let h = run(&["help"], "");
    assert!(
        h.status.success()
            && String::from_utf8(h.stdout)
                .unwrap()
                .contains("view_blacklist [FILTER]")
    );
    let v = run(&["version"], "");
    assert_eq!(
        String::from_utf8(v.stdout).unwrap(),
        format!("ase version {}\n", env!("CARGO_PKG_VERSION"))
    );
    // A value starting with '-' after `--`.
    assert_eq!(
        e.ok(&["add_blacklist", "--", "token", "-abc"]),
        "token -abc added to blacklist\n"
    );
}

#[test]
fn ttl_json_import_export() {
    let e = Env::new("");
    // Long enough that the views below run before the expiry even on a
    // loaded machine (each ase-cli run derives the password key). The
    // entry is written before the command returns, so its expiry is at most
    // 8 s after that: the wait further down counts from there.
    e.ok(&["add_blacklist", "--ttl", "8s", "ip", "6.6.6.6"]);
    let added = std::time::Instant::now();
    e.ok(&["add_whitelist", "username", "ops", "team", "--ttl=1h"]);
    let v = e.ok(&["view_blacklist", "manual"]);
    assert!(
        v.contains("1) type : ip, value : 6.6.6.6, expires : "),
        "{v}"
    );
    let j: serde_json::Value = serde_json::from_str(&e.ok(&["view_whitelist", "--json"])).unwrap();
    assert_eq!(j["whitelist"][0]["type"], "username");
    assert_eq!(j["whitelist"][0]["value"], "ops team");
    assert!(j["whitelist"][0]["expires"].is_string());
    let expiry = std::time::Duration::from_millis(8100);
    std::thread::sleep(expiry.saturating_sub(added.elapsed()));
    assert_eq!(
        e.ok(&["view_blacklist", "manual"]),
        "No Blacklist\n",
        "expired entries are gone"
    );

    let list = e.dir.path().join("list.txt");
    std::fs::write(
        &list,
        "# bad clients\nip 1.2.3.4\n\nip 2001:db8::/32\ncookie JSESSIONID abc\n\
         api_key X-API-KEY k1\ntoken t1\nusername your name\nip 1.2.3.4\n",
    )
    .unwrap();
    let out = e.ok(&["import_blacklist", list.to_str().unwrap()]);
    assert_eq!(out, "7 entries imported to blacklist (6 new)\n");
    assert_eq!(
        e.ok(&["export_blacklist"]),
        "ip 1.2.3.4\nip 2001:db8::/32\ncookie JSESSIONID abc\napi_key X-API-KEY k1\ntoken t1\nusername your name\n"
    );
    let j: serde_json::Value =
        serde_json::from_str(&e.ok(&["view_blacklist", "all", "--json"])).unwrap();
    assert_eq!(j["blacklist"]["manual"].as_array().unwrap().len(), 6);
    assert_eq!(j["blacklist"]["decoy"].as_array().unwrap().len(), 0);

    std::fs::write(&list, "ip 7.7.7.7\nip 300.1.1.1\n").unwrap();
    let o = e.cli(&["import_blacklist", list.to_str().unwrap()]);
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("list.txt:2: invalid ip"), "{err}");
    assert!(
        !e.ok(&["export_blacklist"]).contains("7.7.7.7"),
        "a bad line imports nothing"
    );

    // Import from standard input.
    let o = e.cli_in(&["import_blacklist", "-"], "ip 8.8.8.8\n");
    assert_success(&o, &["import -"]);
    assert!(
        e.ok(&["export_blacklist", "manual"])
            .ends_with("ip 8.8.8.8\n")
    );
}

#[test]
fn apis_blocking_and_password() {
    let e = Env::new("");
    assert_eq!(
        e.ok(&["list_api"]),
        "shop ( loaded ), http, decoy: in-context\n"
    );
    assert_eq!(
        e.ok(&["disable_blocking", "shop"]),
        "Blocking is now disabled for API shop\n"
    );
    assert!(
        e.ok(&["status"])
            .contains("apis                    : 1 (0 blocking, 1 monitoring)\n")
    );
    assert_eq!(
        e.ok(&["enable_blocking", "shop"]),
        "Blocking is now enabled for API shop\n"
    );

    let o = e.cli_in(&["update_password"], "s3cret\nother\n");
    assert_eq!(o.status.code(), Some(1), "mismatch refused");
    let o = e.cli_in(&["update_password"], "s3cret\ns3cret\n");
    assert_success(&o, &["update_password"]);
    assert!(
        String::from_utf8(o.stdout)
            .unwrap()
            .ends_with("Password updated\n")
    );
    assert_eq!(
        e.cli(&["status"]).status.code(),
        Some(1),
        "old password refused"
    );
    let cfg = e.config.to_str().unwrap();
    let o = run(
        &["--config", cfg, "-u", "admin", "-p", "s3cret", "status"],
        "",
    );
    assert_success(&o, &["new password"]);
}

#[test]
fn batch_runs_each_line() {
    let e = Env::new("");
    let o = e.cli_in(
        &["batch"],
        "add_blacklist ip 1.1.1.1\nadd_blacklist ip bad\n# comment\nadd_whitelist --ttl 1h token t\nclear_whitelist\nview_blacklist manual\n",
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "ip 1.1.1.1 added to blacklist\ntoken t added to whitelist\nManual Blacklist\n1) type : ip, value : 1.1.1.1\n"
    );
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("line 2: invalid ip")
            && err.contains("line 5: clear_whitelist in batch needs --yes"),
        "{err}"
    );
}

/// Writes abs.conf for `e` naming `endpoint` (plain HTTP, the reference keys).
fn abs_conf(e: &Env, endpoint: &str) {
    std::fs::write(
        e.dir.path().join("abs.conf"),
        format!(
            "abs_endpoint={endpoint}\naccess_key=abs_ak\nsecret_key=abs_sk\nenable_ssl=false\n"
        ),
    )
    .unwrap();
}

fn status_line<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find(|l| l.split(':').next().unwrap_or("").trim_end() == key)
        .and_then(|l| l.split_once(": ").map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no {key:?} line in\n{status}"))
}

#[test]
fn sync_abs_fetches_now_and_status_shows_the_sync() {
    let abs = common::RefServer::start(&[]);
    abs.set_list(r#"{"ips": ["10.20.0.1"], "usernames": ["mallory"]}"#);
    let e = Env::new("enable_abs_attack=true");
    abs_conf(&e, &abs.addr);

    let before = e.ok(&["status"]);
    assert_eq!(status_line(&before, "last abs sync"), "never");
    assert_eq!(status_line(&before, "abs last attempt"), "never");
    assert_eq!(status_line(&before, "abs leader"), "none");
    assert_eq!(status_line(&before, "abs endpoints"), abs.addr);

    assert_eq!(
        e.ok(&["sync_abs"]),
        format!("ABS attack list synced: 2 entries from {}\n", abs.addr)
    );
    let view = e.ok(&["view_blacklist", "abs_detected"]);
    assert!(view.contains("type : ip, value : 10.20.0.1"), "{view}");
    assert!(view.contains("type : username, value : mallory"), "{view}");
    let st = e.ok(&["status"]);
    assert!(
        status_line(&st, "last abs sync").ends_with("s ago)"),
        "{st}"
    );
    assert!(
        status_line(&st, "abs last attempt").contains(", ok (pid "),
        "{st}"
    );
    assert_eq!(status_line(&st, "abs entries"), "2");
    assert_eq!(status_line(&st, "abs dropped entries"), "0");
    // ASE's line; two small entries are well under 0.01 MB.
    assert_eq!(
        status_line(&st, "attack list memory"),
        "configured 128.00 MB, used 0.00 MB, free 128.00 MB"
    );
    assert_eq!(status_line(&st, "abs last error"), "none");
    assert_eq!(status_line(&st, "abs consecutive failures"), "0");
    assert_eq!(status_line(&st, "abs blacklist"), "2");

    // ABS failing: exit 1 with the reason, the list in force stays, and
    // status shows the error (never the keys).
    abs.control("500", "");
    let o = e.cli(&["sync_abs"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.starts_with("ase-cli: ABS sync failed: "), "{err}");
    assert!(err.contains("500") && !err.contains("abs_sk"), "{err}");
    let st = e.ok(&["status"]);
    assert!(status_line(&st, "abs last error").contains("500"), "{st}");
    assert!(!st.contains("abs_sk") && !st.contains("abs_ak"), "{st}");
    assert_eq!(status_line(&st, "abs consecutive failures"), "1");
    assert!(
        status_line(&st, "abs last attempt").contains(", failed (pid "),
        "{st}"
    );
    assert_eq!(status_line(&st, "abs entries"), "2", "the list in force");
    assert_eq!(status_line(&st, "abs blacklist"), "2");

    // A redirect carrying a list in its body is not an answer: the same.
    abs.set_list(r#"{"ips": ["10.20.0.1"]}"#);
    abs.control("status", "302");
    let o = e.cli(&["sync_abs"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ABS answered 302 Found (redirect to abs-moved.example); not following"),
        "{err}"
    );
    let st = e.ok(&["status"]);
    assert!(
        status_line(&st, "abs last error").contains("302 Found"),
        "{st}"
    );
    assert_eq!(status_line(&st, "abs consecutive failures"), "2");
    assert_eq!(status_line(&st, "abs blacklist"), "2", "the list in force");
    abs.set_list(r#"{"ips": ["10.20.0.1"], "usernames": ["mallory"]}"#);

    // With ABS Attack off, the sync still runs, and says the entries wait.
    abs.control("ok", "");
    e.ok(&["disable_abs_attack"]);
    let out = e.ok(&["sync_abs"]);
    assert!(
        out.ends_with("ABS Attack is disabled: these entries block after enable_abs_attack\n"),
        "{out}"
    );
    assert_eq!(
        status_line(&e.ok(&["status"]), "abs consecutive failures"),
        "0"
    );
    let json: serde_json::Value = serde_json::from_str(&e.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["abs_entries"], "2");
}

#[test]
fn sync_abs_without_an_endpoint_is_an_error() {
    let e = Env::new("");
    let o = e.cli(&["sync_abs"]);
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "ase-cli: ABS sync failed: abs.conf names no abs_endpoint: ABS is not configured\n"
    );
    assert_eq!(status_line(&e.ok(&["status"]), "abs endpoints"), "none");
    let o = e.cli(&["sync_abs", "now"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("sync_abs takes no arguments"));
}

/// Runs the CLI with raw arguments (which need not be UTF-8).
fn run_os(args: &[&OsStr]) -> Output {
    Command::new(CLI)
        .args(args)
        .env_remove("ASE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_non_utf8_argument_is_refused_by_position_and_never_shown() {
    let e = Env::new("");
    e.ok(&["view_blacklist"]);
    let s = |t: &'static str| OsStr::new(t);
    let b = |t: &'static [u8]| OsStr::from_bytes(t);
    let cfg = e.config.as_os_str();
    let head = [s("--config"), cfg, s("-u"), s("admin")];
    let cases: [(Vec<&OsStr>, &str); 5] = [
        (
            vec![
                s("-p"),
                b(b"MyPass\xe9"),
                s("add_blacklist"),
                s("ip"),
                s("9.9.9.9"),
            ],
            "argument 6 (the password given with -p) is not valid UTF-8",
        ),
        (
            vec![
                b(b"--password=MyPass\xe9"),
                s("add_blacklist"),
                s("ip"),
                s("9.9.9.9"),
            ],
            "argument 5 (the password given with -p) is not valid UTF-8",
        ),
        (
            vec![
                s("-p"),
                s("admin"),
                b(b"add_black\xfflist"),
                s("ip"),
                s("9.9.9.9"),
            ],
            "argument 7 (the command) is not valid UTF-8",
        ),
        (
            vec![
                s("-p"),
                s("admin"),
                s("add_blacklist"),
                s("token"),
                b(b"MyPass\xe9"),
            ],
            "argument 9 (argument 2 of the command) is not valid UTF-8",
        ),
        (
            vec![
                s("add_blacklist"),
                s("--ttl"),
                b(b"1\xe9d"),
                s("-p"),
                s("admin"),
                s("ip"),
                s("9.9.9.9"),
            ],
            "argument 7 (the value of --ttl) is not valid UTF-8",
        ),
    ];
    for (tail, want) in cases {
        let args: Vec<&OsStr> = head.iter().copied().chain(tail).collect();
        let o = run_os(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{want}: {err}");
        assert_eq!(err, format!("ase-cli: {want}; nothing was done\n"));
        assert!(
            !o.stderr.windows(6).any(|w| w == b"MyPass") && !o.stderr.contains(&0xe9),
            "{want}: the argument is not shown: {err}"
        );
        assert!(o.stdout.is_empty(), "{want}");
    }
    assert_eq!(e.ok(&["view_blacklist"]), "No Blacklist\n", "nothing added");
}

#[test]
fn failed_logins_delay_the_next_attempt_across_processes() {
    let e = Env::new("");
    e.ok(&["view_whitelist"]);
    let cfg = e.config.to_str().unwrap();
    let login = |pass: &str| {
        let start = Instant::now();
        let o = run(
            &[
                "--config",
                cfg,
                "-u",
                "admin",
                "-p",
                pass,
                "add_blacklist",
                "ip",
                "7.7.7.7",
            ],
            "",
        );
        (o, start, Instant::now())
    };
    let failed = |n: u32, next: u64| {
        format!(
            "ase-cli: authentication failed: wrong user name or password ({n} failed login{} \
             in the last 15 minutes; the next attempt is checked after {next} s)\n",
            if n == 1 { "" } else { "s" }
        )
    };

    // Each failure doubles the wait before the next attempt is checked,
    // whichever process makes it: 1 s after the first, 2 s after the second.
    // The failure is recorded inside the previous process, after it started
    // and a little before it ended (how little depends on the machine's
    // load): the wait counts from between the two.
    let (o, mut last_start, mut last_end) = login("guess-one");
    assert_eq!(String::from_utf8_lossy(&o.stderr), failed(1, 1));
    for (n, delay) in [(2, 1), (3, 2)] {
        let (o, start, end) = login("guess-two");
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&o.stderr), failed(n, 1 << (n - 1)));
        let delay = Duration::from_secs(delay);
        assert!(
            end - last_start >= delay && end - last_end >= delay - Duration::from_millis(500),
            "attempt {n} was checked {:?} after the previous attempt ended, {:?} after it \
             started; the wait is {delay:?}",
            end - last_end,
            end - last_start
        );
        (last_start, last_end) = (start, end);
    }
    // The right password also waits its turn (4 s), then works and forgets
    // the failures: the next wrong one counts from 1 again.
    let (o, _, end) = login("admin");
    assert_success(&o, &["right password"]);
    assert!(end - last_start >= Duration::from_secs(4));
    assert!(end - last_end >= Duration::from_millis(3500));
    assert_eq!(
        e.ok(&["view_blacklist", "manual"]),
        "Manual Blacklist\n1) type : ip, value : 7.7.7.7\n"
    );
    let (o, _, _) = login("guess-three");
    assert_eq!(String::from_utf8_lossy(&o.stderr), failed(1, 1));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("guess"));

    // Failures older than the 15-minute window are forgotten.
    let s = Store::open(&e.state_dir()).unwrap();
    let old = now_ms() - 16 * 60 * 1000;
    s.set_meta("cli_login_failures", &format!("9 {old}"))
        .unwrap();
    let (o, _, _) = login("guess-four");
    assert_eq!(String::from_utf8_lossy(&o.stderr), failed(1, 1));
}
