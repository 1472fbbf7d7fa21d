//! `ase-cli`: the operator's command line, compatible with ASE's `cli.sh`.
//!
//! ```text
//! ase-cli [--config PATH] -u USER [-p PASS | --password-file FILE] [--yes] [--json] [--ttl DURATION] COMMAND [ARGS]
//! ```
//!
//! Without `-p` the password comes from `--password-file`, else
//! `$ASE_PASSWORD`, else a prompt on the terminal (no echo): a password on
//! the command line is visible to every user in `ps`.
//!
//! Options may come before or after the command, as with `cli.sh`; `--` ends
//! them (for a value that starts with `-`). The configuration is `--config`,
//! else `$ASE_CONFIG`, else `/etc/ase/ase.conf`. Changes go through
//! [`ase::engine::Engine`] into the shared store; running engines pick them up
//! from its change log, and a command that changed something returns once
//! every running engine has applied it, or after `--wait` (default 1 s) with
//! a warning on stderr naming how many lag. A running engine that cannot
//! read the store (its presence record says so) makes the command fail: the
//! change is stored but not in force there. This process starts no threads.
//!
//! Output lines follow ASE's documentation byte for byte where it shows them.
//! Where it is silent the strings are ours (see `help`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ase::clock::now_ms;
use ase::engine::{Engine, EngineError};
use ase::policy::Switch;
use ase::policy::config::parse_duration;
use ase::policy::{FailMode, IdKind, Identifier, Source};
use ase::store::{self, List, META_ABS_LAST_SYNC, NewEntry, SCHEMA_VERSION, StoredEntry};
use ase::sync::{abs, presence};
use serde_json::{Value, json};

const DEFAULT_CONFIG: &str = "/etc/ase/ase.conf";
const VERSION: &str = env!("CARGO_PKG_VERSION");

const HELP: &str = "\
Usage: ase-cli [--config PATH] -u USER [-p PASS] [OPTIONS] COMMAND [ARGS]

Allow list (whitelist) and deny list (blacklist):
  add_whitelist TYPE [NAME] VALUE      TYPE: ip, cookie NAME, token, api_key NAME, username
  delete_whitelist TYPE [NAME] VALUE
  view_whitelist
  clear_whitelist
  add_blacklist TYPE [NAME] VALUE      ip takes an address or a CIDR range
  delete_blacklist TYPE [NAME] VALUE   removes it from every deny source
  view_blacklist [FILTER]              all (default), manual, abs_detected, decoy,
                                       invalid_protocol, invalid_method, invalid_content_type
  clear_blacklist
  import_blacklist FILE                one entry per line (`ip 1.2.3.4`, `cookie NAME VALUE`);
                                       `-` reads standard input; added as manual entries
  export_blacklist [FILTER]            prints entries in the same form
Switches:
  enable_firewall | disable_firewall
  enable_abs | disable_abs
  enable_abs_attack | disable_abs_attack
  enable_ase_detected_attack | disable_ase_detected_attack   (disable deletes real-time entries)
  enable_blocking API | disable_blocking API
ABS:
  sync_abs                             fetch the ABS attack list now and apply it
                                       (whatever enable_abs_attack says)
Other:
  status | list_api | update_password | batch | help | version
  batch runs one command per line of standard input (clear_* needs --yes there).

Options:
  --config PATH     ase.conf to use (default: $ASE_CONFIG, else /etc/ase/ase.conf)
  -u USER -p PASS   credential (default admin/admin until update_password)
  --password-file FILE  read the password from the first line of FILE
                    (without -p and --password-file: $ASE_PASSWORD, else a
                    prompt on the terminal)
  --ttl DURATION    expire manual entries after DURATION (e.g. 30m, 12h, 7d)
  --json            JSON output for view_whitelist, view_blacklist and status
  --yes, -y         do not ask before clear_whitelist / clear_blacklist
  --wait DURATION   how long a change waits for the running engines to apply it
                    (default: $ASE_CLI_WAIT, else 1s; 0s: do not wait)
  --                end of options
";

/// A command-line failure: one line for stderr.
#[derive(Debug)]
struct Fail(String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}

type Res<T = ()> = Result<T, Fail>;

fn fail<T>(m: impl Into<String>) -> Res<T> {
    Err(Fail(m.into()))
}

#[derive(Default)]
struct Opts {
    config: Option<PathBuf>,
    user: Option<String>,
    pass: Option<String>,
    pass_file: Option<PathBuf>,
    yes: bool,
    json: bool,
    ttl: Option<Duration>,
    wait: Option<Duration>,
    help: bool,
    version: bool,
    words: Vec<String>,
}

fn parse_args(args: impl IntoIterator<Item = String>, top: bool) -> Res<Opts> {
    let mut o = Opts::default();
    let mut it = args.into_iter();
    let mut rest_positional = false;
    while let Some(a) = it.next() {
        if rest_positional {
            o.words.push(a);
            continue;
        }
        let mut value = |name: &str, inline: Option<&str>| -> Res<String> {
            match inline {
                Some(v) => Ok(v.to_string()),
                None => it
                    .next()
                    .map_or_else(|| fail(format!("option {name} needs a value")), Ok),
            }
        };
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v)),
            _ => (a.clone(), None),
        };
        match flag.as_str() {
            "--" => rest_positional = true,
            "-u" | "--user" if top => o.user = Some(value(&flag, inline)?),
            "-p" | "--password" if top => o.pass = Some(value(&flag, inline)?),
            "--password-file" if top => o.pass_file = Some(PathBuf::from(value(&flag, inline)?)),
            "--config" | "-c" if top => o.config = Some(PathBuf::from(value(&flag, inline)?)),
            "--yes" | "-y" => o.yes = true,
            "--json" => o.json = true,
            "--ttl" => {
                let v = value(&flag, inline)?;
                let d = parse_duration(&v).map_err(|e| Fail(format!("--ttl: {e}")))?;
                if d.is_zero() {
                    return fail("--ttl: the duration must be more than zero");
                }
                o.ttl = Some(d);
            }
            "--wait" if top => {
                let v = value(&flag, inline)?;
                o.wait = Some(parse_duration(&v).map_err(|e| Fail(format!("--wait: {e}")))?);
            }
            "-h" | "--help" => o.help = true,
            "-V" | "--version" => o.version = true,
            f if f.starts_with('-') && f.len() > 1 => {
                return fail(format!("unknown option {f} (see ase-cli help)"));
            }
            _ => o.words.push(a),
        }
    }
    Ok(o)
}

/// Options that take a value (the next argument when not given as `--opt=value`).
fn takes_value(flag: &str) -> bool {
    matches!(
        flag,
        "-u" | "--user"
            | "-p"
            | "--password"
            | "--password-file"
            | "-c"
            | "--config"
            | "--ttl"
            | "--wait"
    )
}

/// The arguments as UTF-8. One that is not is refused by its position and
/// what it is (the password, an option's value, the command or one of its
/// arguments), never shown: it may be a password or a token.
fn utf8_args(args: impl IntoIterator<Item = OsString>) -> Res<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut options_ended = false;
    let mut words = 0;
    for (i, a) in args.into_iter().enumerate() {
        let raw = match a.into_string() {
            Ok(s) => {
                if options_ended || !s.starts_with('-') || s == "-" {
                    let prev_takes = !options_ended && out.last().is_some_and(|p| takes_value(p));
                    if !prev_takes {
                        words += 1;
                    }
                } else if s == "--" {
                    options_ended = true;
                }
                out.push(s);
                continue;
            }
            Err(raw) => raw,
        };
        let bytes = raw.as_encoded_bytes();
        let prev = out.last().map(String::as_str).filter(|_| !options_ended);
        let what = if matches!(prev, Some("-p" | "--password"))
            || (!options_ended && bytes.starts_with(b"--password="))
        {
            "the password given with -p".to_string()
        } else if let Some(flag) = prev.filter(|p| takes_value(p)) {
            format!("the value of {flag}")
        } else if !options_ended && bytes.starts_with(b"-") {
            "an option".to_string()
        } else if words == 0 {
            "the command".to_string()
        } else {
            format!("argument {words} of the command")
        };
        return fail(format!(
            "argument {} ({what}) is not valid UTF-8; nothing was done",
            i + 1
        ));
    }
    Ok(out)
}

fn main() -> ExitCode {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let r = utf8_args(std::env::args_os().skip(1))
        .and_then(|args| run(args.into_iter(), &mut out, &mut input));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(m)) => {
            let _ = out.flush();
            // A closed pipe (`ase-cli export_blacklist | head`) is not an error to report.
            if !m.contains("Broken pipe") {
                eprintln!("ase-cli: {m}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(args: impl Iterator<Item = String>, out: &mut dyn Write, input: &mut dyn BufRead) -> Res {
    let o = parse_args(args, true)?;
    let cmd = o.words.first().map(String::as_str).unwrap_or("");
    if o.help || cmd == "help" {
        out.write_all(HELP.as_bytes())?;
        return Ok(());
    }
    if o.version || cmd == "version" {
        writeln!(out, "ase version {VERSION}")?;
        return Ok(());
    }
    if cmd.is_empty() {
        return fail("no command given (see ase-cli help)");
    }
    // Check the command and its arguments before touching anything, so a
    // typo never needs the credential or the store to be reported.
    let parsed = Command::parse(&o)?;
    let wait = change_wait(&o)?;
    let Some(user) = &o.user else {
        return fail("missing credential: give -u USER -p PASS");
    };
    let pass = password(&o)?;
    let pass = &pass;
    let config = config_path(&o);
    let engine = Engine::open_passive(&config).map_err(|e| open_error(&config, e))?;
    let store = engine
        .store()
        .ok_or_else(|| Fail("state store unavailable".into()))?;
    authenticate(&store, &engine.enforcer().config().state_dir, user, pass)?;
    let mut ctx = Ctx {
        engine: &engine,
        user,
        out,
        input,
        batch: false,
        abs_seq: 0,
    };
    let r = ctx.exec_with(&parsed, &o);
    // Whatever the command printed is done and durable; now wait until it is
    // in force in every running engine. A batch waits once, for its last
    // change, and so does a batch with failed lines (the others are made).
    let seq = engine.presence().last_change_seq().max(ctx.abs_seq);
    if seq > 0 && !wait.is_zero() {
        if let Some(w) = engine.wait_applied(seq, wait).warning(wait) {
            ctx.out.flush()?;
            eprintln!("ase-cli: {w}");
        }
    }
    if seq > 0 && r.is_ok() {
        let state_dir = &engine.enforcer().config().state_dir;
        if let Some(why) = engines_cannot_read(state_dir, seq) {
            ctx.out.flush()?;
            return fail(format!("the change is stored, but {why}"));
        }
        // Workers that cannot enter state_dir are invisible to the wait and
        // decide by fail_mode: say what keeps them out. A warning, exit
        // status 0: the change is stored, and that these workers use it is
        // read from nginx's configuration files, not learnt from them.
        if let Some(why) = closed_state_dir(state_dir) {
            if let Some(user) = nginx_user_of(&config) {
                ctx.out.flush()?;
                eprintln!(
                    "ase-cli: warning: no running engine has registered, and nginx runs as \
                     {user}; {why}"
                );
            }
        }
    }
    r
}

/// The password: `-p`, else the first line of `--password-file`, else
/// `$ASE_PASSWORD`, else asked on the terminal without echo.
fn password(o: &Opts) -> Res<String> {
    if let Some(p) = &o.pass {
        return Ok(p.clone());
    }
    if let Some(f) = &o.pass_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| Fail(format!("--password-file {}: {e}", f.display())))?;
        return Ok(text.lines().next().unwrap_or_default().to_string());
    }
    if let Ok(p) = std::env::var("ASE_PASSWORD") {
        return Ok(p);
    }
    if !io::stdin().is_terminal() {
        return fail(
            "missing password: give -p PASS, --password-file FILE or ASE_PASSWORD \
             (there is no terminal to ask on)",
        );
    }
    rpassword::prompt_password("Password: ").map_err(|e| Fail(format!("password prompt: {e}")))
}

/// The running engines of `state_dir` that have not applied log position
/// `seq` and say (in their presence records) they cannot read the store, as
/// a sentence; `None` when every one applied it or can read the store. An
/// engine that applied the change has it in force, whatever error it last
/// had (a failed detection write, say).
fn engines_cannot_read(state_dir: &Path, seq: u64) -> Option<String> {
    let peers = presence::live_engines(state_dir).ok()?;
    let failing: Vec<String> = peers
        .iter()
        .filter(|p| !p.has_applied(seq))
        .filter_map(|p| p.record)
        .filter(|r| r.flags & presence::STORE_FAILING != 0)
        .map(|r| r.pid.to_string())
        .collect();
    if failing.is_empty() {
        return None;
    }
    Some(format!(
        "{} of {} running engines cannot read the state store (pid {}): it is not in force \
         there until they can; their log says why (nginx: an [alert] in error.log), \
         `ase-cli status` shows them",
        failing.len(),
        peers.len(),
        failing.join(", ")
    ))
}

/// How long a change waits for the running engines: `--wait`, else
/// `$ASE_CLI_WAIT`, else [`presence::DEFAULT_WAIT`].
fn change_wait(o: &Opts) -> Res<Duration> {
    if let Some(w) = o.wait {
        return Ok(w);
    }
    match std::env::var("ASE_CLI_WAIT") {
        Ok(v) if !v.trim().is_empty() => {
            parse_duration(&v).map_err(|e| Fail(format!("ASE_CLI_WAIT: {e}")))
        }
        _ => Ok(presence::DEFAULT_WAIT),
    }
}

/// Meta key of the host's recent failed logins: `COUNT LAST_FAILURE_MS`.
const META_LOGIN_FAILURES: &str = "cli_login_failures";
/// Failures older than this (counted from the last one) are forgotten.
const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Wait after the first failure; it doubles with each further one.
const LOGIN_DELAY: Duration = Duration::from_secs(1);
/// Longest wait.
const LOGIN_DELAY_MAX: Duration = Duration::from_secs(30);
/// Lock file (in `state_dir`) that makes concurrent logins take turns.
const LOGIN_LOCK_FILE: &str = "cli-login.lock";

/// How long after the last of `failures` recent failures the next attempt
/// is checked: 0, then 1 s, 2 s, 4 s, ... up to 30 s.
fn login_delay(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => LOGIN_DELAY
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(LOGIN_DELAY_MAX),
    }
}

/// The recent failures recorded for the host: (count, last failure in Unix ms).
fn recent_failures(store: &store::Store, now: u64) -> (u32, u64) {
    let v = store.meta(META_LOGIN_FAILURES).ok().flatten();
    let parsed = v.as_deref().and_then(|v| {
        let (n, last) = v.split_once(' ')?;
        Some((n.parse::<u32>().ok()?, last.parse::<u64>().ok()?))
    });
    match parsed {
        Some((n, last)) if now.saturating_sub(last) < LOGIN_WINDOW.as_millis() as u64 => (n, last),
        _ => (0, 0),
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Checks the credential, throttled for the host: every ase-cli is a new
/// process, so the failures are counted in the store (meta table), and the
/// next attempt is checked only once `login_delay(count)` has passed since
/// the last one. Checking before waiting would not do: a guesser could stop
/// waiting as soon as no success showed. Attempts take turns on a lock file,
/// so guessing in parallel is no faster. A success forgets the failures.
fn authenticate(store: &store::Store, state_dir: &Path, user: &str, pass: &str) -> Res {
    // Best effort: without the lock file the attempts are still delayed. A
    // lock file another user created can still be locked read-only.
    let path = state_dir.join(LOGIN_LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .or_else(|_| std::fs::File::open(&path))
        .ok()
        .filter(|f| fs4::fs_std::FileExt::lock_exclusive(f).is_ok());
    let (count, last) = recent_failures(store, now_ms());
    let due = last.saturating_add(login_delay(count).as_millis() as u64);
    let wait = Duration::from_millis(due.saturating_sub(now_ms()));
    if !wait.is_zero() {
        // Said on a terminal only, like the progress bar: a script's stderr
        // stays empty when its command succeeds.
        if io::stderr().is_terminal() {
            eprintln!(
                "ase-cli: {count} failed login{} in the last {} minutes: waiting {:.1} s before \
             checking the credential",
                plural(count),
                LOGIN_WINDOW.as_secs() / 60,
                wait.as_secs_f64()
            );
        }
        std::thread::sleep(wait);
    }
    let ok = store.verify_password(user, pass)?;
    if ok {
        if count > 0 {
            let _ = store.set_meta(META_LOGIN_FAILURES, "0 0");
        }
        drop(lock);
        return Ok(());
    }
    // Read again: without the lock file, another process may have added
    // failures while this one waited.
    let (count, _) = recent_failures(store, now_ms());
    let count = count.saturating_add(1);
    let _ = store.set_meta(META_LOGIN_FAILURES, &format!("{count} {}", now_ms()));
    drop(lock);
    fail(format!(
        "authentication failed: wrong user name or password ({count} failed login{} in the \
         last {} minutes; the next attempt is checked after {} s)",
        plural(count),
        LOGIN_WINDOW.as_secs() / 60,
        login_delay(count).as_secs()
    ))
}

fn config_path(o: &Opts) -> PathBuf {
    o.config
        .clone()
        .or_else(|| std::env::var_os("ASE_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

fn open_error(config: &Path, e: EngineError) -> Fail {
    match e {
        EngineError::Store(m) => {
            // Say what running engines do meanwhile, from the config we did read.
            let mode = ase::load::load_config(config)
                .map(|c| c.fail_mode)
                .unwrap_or(FailMode::Open);
            let what = match mode {
                FailMode::Open => "fail_mode=open: they allow every request",
                FailMode::Closed => "fail_mode=closed: they block every request",
            };
            Fail(format!("{m} (engines that cannot load it follow {what})"))
        }
        e => Fail(e.to_string()),
    }
}

/// A validated command.
enum Command {
    Add(List, Identifier),
    Delete(List, Identifier),
    ViewWhitelist,
    ViewBlacklist(Option<Source>),
    Clear(List),
    Switch(Switch, bool),
    Blocking(String, bool),
    Status,
    ListApi,
    UpdatePassword,
    Import(String),
    Export(Option<Source>),
    Batch,
    SyncAbs,
}

fn list_word(l: List) -> &'static str {
    match l {
        List::Allow => "whitelist",
        List::Deny => "blacklist",
    }
}

/// Parses `TYPE [NAME] VALUE` (a username takes the rest, spaces included).
fn identifier(args: &[String]) -> Res<Identifier> {
    let Some(kind_word) = args.first() else {
        return fail("missing identifier: give TYPE [NAME] VALUE (see ase-cli help)");
    };
    let kind = IdKind::parse(kind_word).ok_or_else(|| {
        Fail(format!(
            "unknown identifier type {kind_word:?}: use ip, cookie, token, api_key or username"
        ))
    })?;
    let rest = &args[1..];
    let (name, value) = match kind {
        IdKind::Username if !rest.is_empty() => (String::new(), rest.join(" ")),
        IdKind::Cookie | IdKind::ApiKey if rest.len() == 2 => (rest[0].clone(), rest[1].clone()),
        IdKind::Cookie | IdKind::ApiKey => {
            return fail(format!(
                "{kind} needs a name and a value: {kind} NAME VALUE"
            ));
        }
        IdKind::Ip | IdKind::Token if rest.len() == 1 => (String::new(), rest[0].clone()),
        _ => return fail(format!("{kind} needs exactly one value: {kind} VALUE")),
    };
    Identifier::new(kind, &name, &value).map_err(|e| Fail(format!("invalid {kind}: {e}")))
}

fn filter(args: &[String]) -> Res<Option<Source>> {
    match args {
        [] => Ok(None),
        [w] if w == "all" => Ok(None),
        [w] => Source::parse(w).map(Some).ok_or_else(|| {
            Fail(format!(
                "unknown filter {w:?}: use all, manual, abs_detected, decoy, invalid_protocol, \
                 invalid_method or invalid_content_type"
            ))
        }),
        _ => fail("too many arguments: give one filter"),
    }
}

impl Command {
    fn parse(o: &Opts) -> Res<Command> {
        let cmd = o.words[0].as_str();
        let args = &o.words[1..];
        let none = |c: Command| -> Res<Command> {
            if args.is_empty() {
                Ok(c)
            } else {
                fail(format!("{cmd} takes no arguments"))
            }
        };
        let c = match cmd {
            "add_whitelist" => Command::Add(List::Allow, identifier(args)?),
            "add_blacklist" => Command::Add(List::Deny, identifier(args)?),
            "delete_whitelist" => Command::Delete(List::Allow, identifier(args)?),
            "delete_blacklist" => Command::Delete(List::Deny, identifier(args)?),
            "view_whitelist" => none(Command::ViewWhitelist)?,
            "view_blacklist" => Command::ViewBlacklist(filter(args)?),
            "clear_whitelist" => none(Command::Clear(List::Allow))?,
            "clear_blacklist" => none(Command::Clear(List::Deny))?,
            "status" => none(Command::Status)?,
            "list_api" => none(Command::ListApi)?,
            "update_password" => none(Command::UpdatePassword)?,
            "batch" => none(Command::Batch)?,
            "sync_abs" => none(Command::SyncAbs)?,
            "export_blacklist" => Command::Export(filter(args)?),
            "import_blacklist" => match args {
                [f] => Command::Import(f.clone()),
                _ => return fail("import_blacklist needs one FILE (or - for standard input)"),
            },
            "enable_blocking" | "disable_blocking" => match args {
                [api] => Command::Blocking(api.clone(), cmd.starts_with("enable")),
                _ => return fail(format!("{cmd} needs one API name")),
            },
            _ => {
                let sw = cmd
                    .strip_prefix("enable_")
                    .map(|s| (s, true))
                    .or_else(|| cmd.strip_prefix("disable_").map(|s| (s, false)))
                    .and_then(|(s, on)| ase::sync::watch::switch_named(s).map(|s| (s, on)));
                match sw {
                    Some((s, on)) => none(Command::Switch(s, on))?,
                    None => return fail(format!("unknown command {cmd:?} (see ase-cli help)")),
                }
            }
        };
        let ttl_ok = matches!(c, Command::Add(..) | Command::Import(_));
        if o.ttl.is_some() && !ttl_ok {
            return fail("--ttl applies only to add_whitelist, add_blacklist and import_blacklist");
        }
        let json_ok = matches!(
            c,
            Command::ViewWhitelist | Command::ViewBlacklist(_) | Command::Status
        );
        if o.json && !json_ok {
            return fail("--json applies only to view_whitelist, view_blacklist and status");
        }
        Ok(c)
    }
}

struct Ctx<'a> {
    engine: &'a Engine,
    user: &'a str,
    out: &'a mut dyn Write,
    input: &'a mut dyn BufRead,
    batch: bool,
    /// Log position of the ABS list `sync_abs` stored (it is not written
    /// through an engine change), to wait for.
    abs_seq: u64,
}

/// How an entry is named in messages that are not list views: values of
/// secret kinds (tokens, cookies, API keys) are not repeated.
fn describe(id: &Identifier) -> String {
    match id.kind {
        IdKind::Ip | IdKind::Username => id.to_string(),
        IdKind::Token => "that token".to_string(),
        k => format!("that {k} {}", id.name),
    }
}

fn expiry_of(o: &Opts) -> u64 {
    o.ttl
        .map(|d| now_ms().saturating_add(d.as_millis() as u64))
        .unwrap_or(0)
}

impl Ctx<'_> {
    fn store(&self) -> Res<std::sync::Arc<store::Store>> {
        self.engine
            .store()
            .ok_or_else(|| Fail("state store unavailable".into()))
    }

    fn exec_with(&mut self, c: &Command, o: &Opts) -> Res {
        let n = self.engine;
        match c {
            Command::Add(list, id) => {
                let exp = expiry_of(o);
                match list {
                    List::Allow => n.allow_add(id, exp)?,
                    List::Deny => n.deny_add(id, Source::Manual, exp)?,
                };
                writeln!(self.out, "{id} added to {}", list_word(*list))?;
            }
            Command::Delete(list, id) => {
                let r = match list {
                    List::Allow => n.allow_remove(id),
                    List::Deny => n.deny_remove(id),
                };
                match r {
                    Ok(()) => writeln!(self.out, "{id} deleted from {}", list_word(*list))?,
                    Err(EngineError::NotFound) => {
                        return fail(format!(
                            "{} is not in the {}",
                            describe(id),
                            list_word(*list)
                        ));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Command::ViewWhitelist => {
                let v = self.store()?.entries(List::Allow, Source::ANY, now_ms())?;
                if o.json {
                    let j = json!({ "whitelist": v.iter().map(entry_json).collect::<Vec<_>>() });
                    writeln!(self.out, "{j}")?;
                } else if v.is_empty() {
                    writeln!(self.out, "No Whitelist")?;
                } else {
                    writeln!(self.out, "Whitelist")?;
                    for (i, e) in v.iter().enumerate() {
                        writeln!(self.out, "{}) {}", i + 1, entry_line(e))?;
                    }
                }
            }
            Command::ViewBlacklist(f) => self.view_blacklist(*f, o.json)?,
            Command::Clear(list) => {
                let word = list_word(*list);
                if !o.yes {
                    if self.batch {
                        return fail(format!("clear_{word} in batch needs --yes"));
                    }
                    if !self.confirm(&format!(
                        "This will delete all {word} Attacks, Are you sure (y/n) : "
                    ))? {
                        writeln!(self.out, "Action canceled")?;
                        return Ok(());
                    }
                }
                match list {
                    List::Allow => n.allow_clear()?,
                    List::Deny => n.deny_clear(Source::ANY)?,
                };
                let title = if *list == List::Allow {
                    "Whitelist"
                } else {
                    "Blacklist"
                };
                writeln!(self.out, "{title} cleared")?;
            }
            Command::Switch(s, on) => {
                n.set_switch(*s, *on)?;
                let label = match s {
                    Switch::Firewall => "Firewall",
                    Switch::Abs => "ABS",
                    Switch::AbsAttack => "ABS Attack",
                    Switch::AseDetectedAttack => "ASE Detected Attack",
                };
                writeln!(self.out, "{label} is now {}", onoff(*on))?;
            }
            Command::Blocking(api, on) => {
                n.set_api_blocking(api, *on)?;
                writeln!(self.out, "Blocking is now {} for API {api}", onoff(*on))?;
            }
            Command::Status => self.status(o.json)?,
            Command::ListApi => self.list_api()?,
            Command::UpdatePassword => self.update_password()?,
            Command::Import(file) => self.import(file, expiry_of(o))?,
            Command::Export(f) => {
                let mask = f.map_or(Source::ANY, Source::bit);
                let v = self.store()?.entries(List::Deny, mask, now_ms())?;
                let mut seen = HashSet::new();
                for e in v {
                    if seen.insert(e.id.clone()) {
                        writeln!(self.out, "{}", e.id)?;
                    }
                }
            }
            Command::Batch => self.batch()?,
            Command::SyncAbs => self.sync_abs()?,
        }
        Ok(())
    }

    fn confirm(&mut self, prompt: &str) -> Res<bool> {
        write!(self.out, "{prompt}")?;
        self.out.flush()?;
        let mut line = String::new();
        let n = self.input.read_line(&mut line)?;
        // A terminal echoes the answer and its newline; otherwise end the
        // prompt's line ourselves so the next message starts on its own.
        if n == 0 || !io::stdin().is_terminal() {
            writeln!(self.out)?;
        }
        let a = line.trim();
        Ok(a.eq_ignore_ascii_case("y") || a.eq_ignore_ascii_case("yes"))
    }

    fn view_blacklist(&mut self, f: Option<Source>, json: bool) -> Res {
        let mask = f.map_or(Source::ANY, Source::bit);
        let v = self.store()?.entries(List::Deny, mask, now_ms())?;
        let sections: Vec<Source> = f.map_or(Source::ALL.to_vec(), |s| vec![s]);
        if json {
            let mut m = serde_json::Map::new();
            for s in &sections {
                let items: Vec<Value> = v
                    .iter()
                    .filter(|e| e.source == *s)
                    .map(entry_json)
                    .collect();
                m.insert(s.as_str().to_string(), Value::Array(items));
            }
            writeln!(self.out, "{}", json!({ "blacklist": m }))?;
            return Ok(());
        }
        if v.is_empty() {
            writeln!(self.out, "No Blacklist")?;
            return Ok(());
        }
        // ASE's documentation shows two spaces after the number in the `all`
        // view and one in a filtered view; both are reproduced.
        let sep = if f.is_none() { ")  " } else { ") " };
        for s in sections {
            let items: Vec<&StoredEntry> = v.iter().filter(|e| e.source == s).collect();
            if items.is_empty() {
                continue;
            }
            writeln!(self.out, "{}", s.title())?;
            for (i, e) in items.iter().enumerate() {
                writeln!(self.out, "{}{sep}{}", i + 1, entry_line(e))?;
            }
        }
        Ok(())
    }

    fn status(&mut self, json: bool) -> Res {
        let n = self.engine;
        let st = self.store()?;
        let cfg = n.enforcer().config();
        let stored = st.switches()?;
        let sw = |s: Switch| switch_in_force(&stored, s, cfg);
        let counts = st.counts(now_ms())?;
        let overrides = st.api_blocking()?;
        let apis = n.enforcer().apis().apis();
        let blocking = apis
            .iter()
            .filter(|a| {
                overrides
                    .iter()
                    .find(|(k, _)| *k == a.name)
                    .map_or(a.enable_blocking_default, |(_, on)| *on)
            })
            .count();
        let now = now_ms();
        let last_sync = match st.meta(META_ABS_LAST_SYNC)? {
            None => "never".to_string(),
            Some(v) => v
                .parse::<u64>()
                .map(|ms| format!("{} ({} ago)", rfc3339(ms), age(now, ms)))
                .unwrap_or(v),
        };
        let shared = n.abs_shared_status()?;
        let abs = shared.as_ref().map(|p| &p.status);
        let last_attempt = match shared.as_ref().filter(|p| p.status.last_attempt_ms != 0) {
            None => "never".to_string(),
            Some(p) => format!(
                "{}, {} (pid {})",
                rfc3339(p.status.last_attempt_ms),
                if p.status.last_error.is_none() {
                    "ok"
                } else {
                    "failed"
                },
                p.pid
            ),
        };
        let leader = match abs::election::holder(&cfg.state_dir) {
            Ok(Some(pid)) => format!("pid {pid}"),
            Ok(None) => "none".to_string(),
            Err(e) => format!("unknown ({e})"),
        };
        let endpoints = if cfg.abs.endpoints.is_empty() {
            "none".to_string()
        } else {
            cfg.abs.endpoints.join(", ")
        };
        let fail_mode = match cfg.fail_mode {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        };
        let mut rows: Vec<(&str, String)> = vec![
            ("version", VERSION.to_string()),
            ("mode", "in-process".to_string()),
            ("config", cfg.path.display().to_string()),
            ("firewall", onoff(sw(Switch::Firewall)).to_string()),
            (
                "abs",
                format!(
                    "{}, ssl: {}",
                    onoff(sw(Switch::Abs)),
                    onoff(cfg.abs.enable_ssl)
                ),
            ),
            ("abs attack", onoff(sw(Switch::AbsAttack)).to_string()),
            (
                "ase detected attack",
                onoff(sw(Switch::AseDetectedAttack)).to_string(),
            ),
            (
                "attack list memory",
                // ASE's line. Used: the estimate for the ABS list in force,
                // the part of the lists the budget bounds.
                {
                    let mb = |b: u64| b as f64 / (1u64 << 20) as f64;
                    let used = abs.map_or(0, |a| a.memory_bytes);
                    format!(
                        "configured {:.2} MB, used {:.2} MB, free {:.2} MB",
                        mb(cfg.attack_list_memory),
                        mb(used),
                        mb(cfg.attack_list_memory.saturating_sub(used))
                    )
                },
            ),
            ("fail mode", fail_mode.to_string()),
            ("state store", st.path().display().to_string()),
            ("store schema", SCHEMA_VERSION.to_string()),
            ("change log position", st.last_seq()?.to_string()),
            ("host role", {
                let lock = cfg.state_dir.join(ase::sync::snapshot::HOST_LOCK);
                match abs::election::holder_of(&lock) {
                    Ok(Some(pid)) => format!("pid {pid}"),
                    Ok(None) => "none (no engine is running)".to_string(),
                    Err(e) => format!("unknown ({e})"),
                }
            }),
            (
                "lists snapshot",
                match ase::sync::snapshot::open(&cfg.state_dir) {
                    Ok(Some((s, _))) => format!(
                        "log position {}, {} entries, {:.2} MB, built {}",
                        s.seq(),
                        s.len(),
                        s.byte_len() as f64 / (1u64 << 20) as f64,
                        rfc3339(s.built_ms())
                    ),
                    Ok(None) => "none yet".to_string(),
                    Err(e) => e,
                },
            ),
            ("running engines", engines_summary(&cfg.state_dir)),
            ("abs endpoints", endpoints),
            ("abs leader", leader),
            ("last abs sync", last_sync),
            ("abs last attempt", last_attempt),
            ("abs entries", abs.map_or(0, |a| a.entries).to_string()),
            (
                "abs dropped entries",
                abs.map_or(0, |a| a.dropped_items).to_string(),
            ),
            (
                "abs last error",
                abs.and_then(|a| a.last_error.clone())
                    .unwrap_or_else(|| "none".to_string()),
            ),
            (
                "abs consecutive failures",
                abs.map_or(0, |a| a.consecutive_failures).to_string(),
            ),
            (
                "apis",
                format!(
                    "{} ({blocking} blocking, {} monitoring)",
                    apis.len(),
                    apis.len() - blocking
                ),
            ),
            ("whitelist", counts.allow.to_string()),
        ];
        let from_cli = switch_sources(&stored, cfg);
        rows.insert(
            rows.iter()
                .position(|(k, _)| *k == "attack list memory")
                .unwrap_or(rows.len()),
            ("switches from ase-cli", from_cli),
        );
        rows.insert(
            rows.iter()
                .position(|(k, _)| *k == "fail mode")
                .map_or(rows.len(), |i| i + 1),
            (
                "ase keys not acted on",
                cfg.notice()
                    .map_or_else(|| "none".to_string(), |n| unused_keys_of(&n)),
            ),
        );
        let engines = presence::live_engines(&cfg.state_dir).unwrap_or_default();
        let last = st.last_seq()?;
        let mine = apis_digest(n);
        let engine_rows: Vec<(String, String)> = engines
            .iter()
            .map(|p| {
                (
                    format!("engine {}", p.name),
                    engine_line(p, last, mine, now),
                )
            })
            .collect();
        let labels = [
            "manual blacklist",
            "abs blacklist",
            "decoy blacklist",
            "protocol blacklist",
            "method blacklist",
            "content-type blacklist",
        ];
        for (i, l) in labels.iter().enumerate() {
            rows.push((l, counts.deny[i].to_string()));
        }
        if json {
            let mut m: serde_json::Map<String, Value> = rows
                .iter()
                .map(|(k, v)| (k.replace([' ', '-'], "_"), Value::String(v.clone())))
                .collect();
            let list: Vec<Value> = engine_rows
                .iter()
                .map(|(k, v)| json!({ "engine": k.trim_start_matches("engine "), "health": v }))
                .collect();
            m.insert("engines".into(), Value::Array(list));
            writeln!(self.out, "{}", Value::Object(m))?;
            return Ok(());
        }
        writeln!(self.out, "API Security Enforcer")?;
        for (k, v) in rows {
            writeln!(self.out, "{k:<24}: {v}")?;
        }
        for (k, v) in engine_rows {
            writeln!(self.out, "{k}: {v}")?;
        }
        Ok(())
    }

    /// The APIs of `api_dir`, each `( loaded )` as ASE says it, unless the
    /// running engines loaded another set of files: then the files changed
    /// since the oldest engine started say `( not loaded: ... )`, and a last
    /// line says the engines need a reload (nginx: `nginx -s reload`).
    fn list_api(&mut self) -> Res {
        let n = self.engine;
        let cfg = n.enforcer().config();
        let apis = n.enforcer().apis().apis();
        let mine = apis_digest(n);
        let engines = presence::live_engines(&cfg.state_dir).unwrap_or_default();
        let stale: Vec<presence::Record> = engines
            .iter()
            .filter_map(|p| p.record)
            .filter(|r| r.apis.is_some_and(|(_, d)| d != mine))
            .collect();
        let oldest = stale.iter().map(|r| r.started_ms).min();
        if apis.is_empty() {
            writeln!(self.out, "No APIs configured")?;
        }
        for a in apis {
            let changed = oldest.is_some_and(|t| {
                let f = cfg.api_dir.join(format!("{}.json", a.name));
                std::fs::metadata(f)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                    .is_none_or(|m| m.as_millis() as u64 >= t)
            });
            let line = a.list_line();
            if changed {
                writeln!(
                    self.out,
                    "{}",
                    line.replacen(
                        "( loaded )",
                        "( not loaded: changed after the running engines started )",
                        1
                    )
                )?;
            } else {
                writeln!(self.out, "{line}")?;
            }
        }
        if !stale.is_empty() {
            writeln!(
                self.out,
                "{} of {} running engines enforce another set of API files ({} APIs): \
                 reload them (nginx -s reload) to apply api_dir",
                stale.len(),
                engines.len(),
                stale[0].apis.map_or(0, |(c, _)| c)
            )?;
        }
        Ok(())
    }

    fn sync_abs(&mut self) -> Res {
        let n = self.engine;
        // The client's own timeouts bound the wait (a passive engine: this thread).
        let st = n
            .abs_sync_now(Duration::from_secs(120))
            .map_err(|e| match e {
                EngineError::Abs(m) => Fail(format!("ABS sync failed: {m}")),
                e => Fail(e.to_string()),
            })?;
        let mut line = format!(
            "ABS attack list synced: {} entries from {}",
            st.entries,
            st.last_endpoint.as_deref().unwrap_or("ABS")
        );
        if st.bad_items > 0 {
            line.push_str(&format!(" ({} unreadable items skipped)", st.bad_items));
        }
        if st.dropped_items > 0 {
            line.push_str(&format!(
                " ({} entries dropped: over attack_list_memory)",
                st.dropped_items
            ));
        }
        writeln!(self.out, "{line}")?;
        let seq = self.store()?.last_seq()?;
        presence::notify(&n.enforcer().config().state_dir, seq);
        self.abs_seq = seq;
        let stored = self.store()?.switches()?;
        if !switch_in_force(&stored, Switch::AbsAttack, n.enforcer().config()) {
            writeln!(
                self.out,
                "ABS Attack is disabled: these entries block after enable_abs_attack"
            )?;
        }
        Ok(())
    }

    fn update_password(&mut self) -> Res {
        let a = self.ask_secret("Enter new password : ")?;
        let b = self.ask_secret("Re-enter new password : ")?;
        if a.is_empty() {
            return fail("the new password is empty; nothing changed");
        }
        if a != b {
            return fail("the passwords do not match; nothing changed");
        }
        self.store()?.set_password(self.user, &a)?;
        writeln!(self.out, "Password updated")?;
        Ok(())
    }

    fn ask_secret(&mut self, prompt: &str) -> Res<String> {
        write!(self.out, "{prompt}")?;
        self.out.flush()?;
        let tty = io::stdin().is_terminal();
        // No echo on a terminal: `stty` acts on the terminal we inherit.
        let stty = |arg: &str| {
            let _ = std::process::Command::new("stty")
                .arg(arg)
                .stdin(std::process::Stdio::inherit())
                .status();
        };
        if tty {
            stty("-echo");
        }
        let mut line = String::new();
        let r = self.input.read_line(&mut line);
        if tty {
            stty("echo");
        }
        writeln!(self.out)?;
        if r? == 0 {
            return fail("no password given (end of input); nothing changed");
        }
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    }

    fn import(&mut self, file: &str, expiry: u64) -> Res {
        let text = if file == "-" {
            let mut s = String::new();
            self.input.read_to_string(&mut s)?;
            s
        } else {
            std::fs::read_to_string(file).map_err(|e| Fail(format!("cannot read {file}: {e}")))?
        };
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id = parse_line(line).map_err(|Fail(m)| Fail(format!("{file}:{}: {m}", i + 1)))?;
            entries.push(NewEntry::new(id, expiry));
        }
        let total = entries.len();
        let mut bar = Progress::new(total);
        let new = self
            .engine
            .deny_add_many(&entries, Source::Manual, &mut |done| bar.show(done))?;
        bar.finish();
        writeln!(
            self.out,
            "{total} entries imported to blacklist ({new} new)"
        )?;
        Ok(())
    }

    fn batch(&mut self) -> Res {
        let mut text = String::new();
        self.input.read_to_string(&mut text)?;
        self.batch = true;
        let mut failed = 0;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words = line.split_whitespace().map(String::from);
            let r = parse_args(words, false).and_then(|o| {
                if o.words.is_empty() {
                    return fail("no command");
                }
                let c = Command::parse(&o)?;
                if matches!(c, Command::Batch | Command::UpdatePassword) {
                    return fail("not available in batch");
                }
                if let Command::Import(f) = &c {
                    if f == "-" {
                        return fail("import_blacklist - is not available in batch");
                    }
                }
                self.exec_with(&c, &o)
            });
            // Flush per command: what was printed is what was done.
            self.out.flush()?;
            if let Err(Fail(m)) = r {
                failed += 1;
                eprintln!("ase-cli: line {}: {m}", i + 1);
            }
        }
        if failed > 0 {
            return fail(format!("{failed} batch command(s) failed"));
        }
        Ok(())
    }
}

fn parse_line(line: &str) -> Res<Identifier> {
    let (kind, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let mut args = vec![kind.to_string()];
    match IdKind::parse(kind) {
        // A user name keeps its inner spaces as written.
        Some(IdKind::Username) if !rest.is_empty() => args.push(rest.to_string()),
        _ => args.extend(rest.split_whitespace().map(String::from)),
    }
    identifier(&args)
}

/// The switches whose value in force comes from `ase-cli` (stored by
/// `enable_*` / `disable_*`) rather than `ase.conf`, with what `ase.conf`
/// says: the stored value wins until the store is reset.
fn switch_sources(stored: &[(String, bool)], cfg: &ase::policy::Config) -> String {
    let v: Vec<String> = Switch::ALL
        .iter()
        .filter_map(|s| {
            let (_, on) = stored.iter().find(|(k, _)| k == s.as_str())?;
            Some(format!(
                "{} {} (ase.conf: {})",
                s.as_str(),
                onoff(*on),
                onoff(s.configured(cfg))
            ))
        })
        .collect();
    if v.is_empty() {
        "none (every switch as ase.conf sets it)".to_string()
    } else {
        v.join("; ")
    }
}

/// The key list of a configuration notice (the part after its title).
fn unused_keys_of(notice: &str) -> String {
    notice
        .split_once(": ")
        .map_or(notice, |(_, keys)| keys)
        .to_string()
}

/// The digest of the API files as this process read them.
fn apis_digest(n: &Engine) -> u64 {
    n.enforcer().apis().source_digest()
}

/// How many engines run, how many cannot read the store; and, when none is
/// registered although `ase-cli` runs as root on a state directory closed
/// to every other user, why engines of another user would not show.
fn engines_summary(state_dir: &Path) -> String {
    let peers = match presence::live_engines(state_dir) {
        Ok(v) => v,
        Err(e) => return format!("unknown ({e})"),
    };
    let failing = peers
        .iter()
        .filter(|p| {
            p.record
                .is_some_and(|r| r.flags & presence::STORE_FAILING != 0)
        })
        .count();
    if failing > 0 {
        return format!("{} ({failing} cannot read the state store)", peers.len());
    }
    if peers.is_empty() {
        if let Some(why) = closed_state_dir(state_dir) {
            return format!("0 (none registered; {why})");
        }
    }
    peers.len().to_string()
}

/// Why engines of another user than root would not register, when no
/// engine is registered, `ase-cli` runs as root and `state_dir` is root's
/// and closed to every other user; `None` otherwise. Only root can make
/// such a directory and still use it, so an engine of any other user (an
/// nginx worker, say) cannot enter it.
fn closed_state_dir(state_dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if !presence::live_engines(state_dir).is_ok_and(|p| p.is_empty()) {
        return None;
    }
    let me_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let m = std::fs::metadata(state_dir).ok()?;
    (me_root && m.uid() == 0 && m.mode() & 0o077 == 0).then(|| {
        format!(
            "{} is root's with mode {:04o}: an engine of another user, such as an nginx \
             worker, cannot open it and decides by fail_mode; give the directory to that user",
            state_dir.display(),
            m.mode() & 0o7777
        )
    })
}

/// The user of the workers of a running nginx whose configuration names
/// `config` (in its main file or a file that includes), when that user is
/// not root; `None` otherwise. Another nginx on the host, not using this
/// configuration, says nothing about this state directory.
fn nginx_user_of(config: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut names = vec![config.to_string_lossy().into_owned()];
    if let Ok(c) = config.canonicalize() {
        names.push(c.to_string_lossy().into_owned());
    }
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let comm = std::fs::read_to_string(p.path().join("comm")).ok()?;
        let uid = std::fs::metadata(p.path()).ok()?.uid();
        if comm.trim_end() != "nginx" || uid == 0 {
            return None;
        }
        let main = nginx_main_conf(&p.path())?;
        nginx_conf_names(&main, &names, 2).then(|| store::who(uid))
    })
}

/// The main configuration file of the nginx a worker (`/proc/PID`) belongs
/// to: its master's `-c` (under its `-p` when relative), else Debian's.
fn nginx_main_conf(worker: &Path) -> Option<PathBuf> {
    // Fields after the command name, which may hold spaces: state, ppid.
    let stat = std::fs::read_to_string(worker.join("stat")).ok()?;
    let ppid = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .to_string();
    let cmdline = std::fs::read(Path::new("/proc").join(ppid).join("cmdline")).ok()?;
    // nginx rewrites its master's command line to one string ("nginx:
    // master process /usr/sbin/nginx -c FILE"): split at spaces too.
    let args: Vec<String> = cmdline
        .split(|&b| b == 0 || b == b' ')
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let conf = PathBuf::from(after("-c").map_or("/etc/nginx/nginx.conf", |c| c.as_str()));
    Some(match after("-p") {
        Some(prefix) if conf.is_relative() => Path::new(prefix).join(conf),
        _ if conf.is_relative() => Path::new("/etc/nginx").join(conf),
        _ => conf,
    })
}

/// Whether the nginx configuration `file`, or a file it includes (to
/// `depth` levels, `*` in a file name matching any run), holds one of
/// `names`.
fn nginx_conf_names(file: &Path, names: &[String], depth: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    let text: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    if names.iter().any(|n| text.contains(n.as_str())) {
        return true;
    }
    if depth == 0 {
        return false;
    }
    let base = file.parent().unwrap_or(Path::new("/"));
    text.split([';', '{', '}'])
        .filter_map(|d| d.trim().strip_prefix("include"))
        .filter(|rest| rest.starts_with(char::is_whitespace))
        .flat_map(|pattern| included(&base.join(pattern.trim())))
        .any(|f| nginx_conf_names(&f, names, depth - 1))
}

/// The files an `include` pattern names (a `*` only in the file name).
fn included(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((head, tail)) = name.split_once('*') else {
        return vec![pattern.to_path_buf()];
    };
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.len() >= head.len() + tail.len() && n.starts_with(head) && n.ends_with(tail)
            })
        })
        .collect()
}

/// One running engine's health: how far it applied the log, whether it
/// reads the store, and whether it enforces the API files as they are now.
fn engine_line(p: &presence::Peer, last_seq: u64, apis: u64, now: u64) -> String {
    let Some(r) = p.record else {
        return "record unreadable".to_string();
    };
    let mut s = format!("pid {}, log position {}", r.pid, r.applied_seq);
    if r.applied_seq < last_seq {
        s.push_str(&format!(" ({} behind)", last_seq - r.applied_seq));
    }
    s.push_str(if !r.health_known() {
        ", health unknown"
    } else if r.flags & presence::STORE_FAILING != 0 {
        ", cannot read the state store"
    } else {
        ", store ok"
    });
    if r.flags & presence::FAIL_MODE != 0 {
        s.push_str(", fail_mode decides (state never loaded)");
    }
    match r.apis {
        Some((count, digest)) if digest == apis => {
            s.push_str(&format!(", {count} APIs as in api_dir"))
        }
        Some((count, _)) => s.push_str(&format!(
            ", {count} APIs loaded at its start, api_dir changed since: reload it"
        )),
        None => {}
    }
    s.push_str(&format!(", up {}", age(now, r.started_ms)));
    s
}

/// A switch as the engines apply it: the value stored by `enable_*` /
/// `disable_*`, else the one `ase.conf` gives.
fn switch_in_force(stored: &[(String, bool)], s: Switch, cfg: &ase::policy::Config) -> bool {
    stored
        .iter()
        .find(|(k, _)| k == s.as_str())
        .map_or(s.configured(cfg), |(_, on)| *on)
}

/// `3s`, `5m`, `2h`, `4d`: how long ago, coarsely.
fn age(now: u64, then: u64) -> String {
    let s = now.saturating_sub(then) / 1000;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn onoff(on: bool) -> &'static str {
    if on { "enabled" } else { "disabled" }
}

fn entry_line(e: &StoredEntry) -> String {
    let id = &e.id;
    let mut s = if id.kind.has_name() {
        format!(
            "type : {}, name : {}, value : {}",
            id.kind, id.name, id.value
        )
    } else {
        format!("type : {}, value : {}", id.kind, id.value)
    };
    if e.expiry != 0 {
        s.push_str(&format!(", expires : {}", rfc3339(e.expiry)));
    }
    s
}

fn entry_json(e: &StoredEntry) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("type".into(), json!(e.id.kind.as_str()));
    if e.id.kind.has_name() {
        m.insert("name".into(), json!(e.id.name));
    }
    m.insert("value".into(), json!(e.id.value));
    m.insert("added".into(), json!(rfc3339(e.added)));
    if e.expiry != 0 {
        m.insert("expires".into(), json!(rfc3339(e.expiry)));
    }
    if !e.api.is_empty() {
        m.insert("api".into(), json!(e.api));
    }
    if !e.attack_code.is_empty() {
        m.insert("attack_code".into(), json!(e.attack_code));
    }
    Value::Object(m)
}

/// Unix ms as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A progress bar on standard error, drawn only when it is a terminal.
struct Progress {
    total: usize,
    on: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            on: io::stderr().is_terminal() && total > 0,
        }
    }

    fn show(&mut self, done: usize) {
        if !self.on {
            return;
        }
        let width = 40;
        let filled = done * width / self.total.max(1);
        eprint!(
            "\r[{}{}] {done}/{}",
            "#".repeat(filled),
            " ".repeat(width - filled),
            self.total
        );
    }

    fn finish(&mut self) {
        if self.on {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599_000), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn import_lines() {
        assert_eq!(
            parse_line("username your  name").unwrap().value,
            "your  name"
        );
        assert_eq!(parse_line("cookie J v").unwrap().to_string(), "cookie J v");
        assert!(parse_line("cookie J v extra").is_err());
        assert!(parse_line("ip 1.2.3").is_err());
        assert_eq!(parse_line("ip 10.1.2.3/8").unwrap().value, "10.0.0.0/8");
    }

    #[test]
    fn nginx_configuration_naming_an_ase_conf_through_includes() {
        let d = tempfile::tempdir().unwrap();
        let main = d.path().join("nginx.conf");
        std::fs::create_dir(d.path().join("conf.d")).unwrap();
        std::fs::write(
            &main,
            "user nobody;\nhttp {\n  # ase_config /etc/ase/ase.conf;\n  include conf.d/*.conf;\n}\n",
        )
        .unwrap();
        let names = |n: &str| vec![n.to_string()];
        assert!(
            !nginx_conf_names(&main, &names("/etc/ase/ase.conf"), 2),
            "a directive commented out names nothing"
        );
        std::fs::write(
            d.path().join("conf.d/ase.conf"),
            "ase_config /etc/ase/ase.conf;\n",
        )
        .unwrap();
        std::fs::write(d.path().join("conf.d/other.txt"), "/srv/x/ase.conf").unwrap();
        assert!(nginx_conf_names(&main, &names("/etc/ase/ase.conf"), 2));
        assert!(
            !nginx_conf_names(&main, &names("/srv/x/ase.conf"), 2),
            "only the files the pattern matches"
        );
        assert!(!nginx_conf_names(&main, &names("/etc/ase/ase.conf"), 0));
    }
}
