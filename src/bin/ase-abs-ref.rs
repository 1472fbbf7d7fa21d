//! `ase-abs-ref`: a reference ABS server for tests and demos — a TEST DOUBLE,
//! not a detection engine. It serves an attack list from a JSON file (re-read
//! on every request), checks the `x-abs-ak` / `x-abs-sk` keys, stores each
//! traffic batch it receives as a file, and can be told to misbehave.
//! See `--help` and docs/abs.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HELP: &str = "\
ase-abs-ref — a reference ABS server for testing ase. THIS IS A TEST DOUBLE:
it detects nothing; it serves whatever attack list it is given.

USAGE:
  ase-abs-ref --attacklist FILE [OPTIONS]

OPTIONS:
  --attacklist FILE     JSON body served by GET /v4/abs/attacklist (re-read per request;
                        a missing file serves {\"ips\":[]})
  --listen ADDR         address to bind (default 127.0.0.1:0); the bound address is
                        printed on stdout as `listening on HOST:PORT`
  --access-key KEY      expected x-abs-ak (default abs_ak)
  --secret-key KEY      expected x-abs-sk (default abs_sk)
  --traffic-dir DIR     store each POST /v4/abs/traffic body as DIR/batch-NNNNNN.json
  --control FILE        read the failure mode from FILE on every request (overrides /__control)
  --redirect-to URL     Location of the 3xx answers of `status N` and `bodyless N`
                        (default http://abs-moved.example/v4/abs/attacklist)
  --tls-cert PEM        serve HTTPS with this certificate chain...
  --tls-key PEM         ...and this private key
  -h, --help            this text

FAILURE MODES (control file content, or GET /__control?mode=MODE&arg=N):
  ok                    behave (default)
  down                  close every ABS connection without answering
  500                   answer 500 Internal Server Error
  slow N                wait N seconds (default 5) before answering
  malformed             answer 200 with a truncated JSON body
  oversized N           answer 200 with a body of N bytes (default 80 MiB), no Content-Length
  status N              answer status N (default 302) with the attack list as body;
                        a 3xx carries Location: the --redirect-to URL
  bodyless N            answer status N (default 302) with no body (and Location for a 3xx)

OTHER ENDPOINTS (no keys needed, never failing):
  GET /__stats          {\"attacklist\":N,\"traffic\":N,\"unauthorized\":N,\"last_query\":\"...\"}
  GET /__control?...    set the failure mode
";

#[derive(Clone, Debug, PartialEq)]
enum Mode {
    Ok,
    Down,
    Error500,
    Slow(f64),
    Malformed,
    Oversized(u64),
    Status(u16),
    Bodyless(u16),
}

fn parse_mode(word: &str, arg: Option<&str>) -> Option<Mode> {
    let num = |d: f64| arg.and_then(|a| a.trim().parse::<f64>().ok()).unwrap_or(d);
    Some(match word.trim() {
        "" | "ok" => Mode::Ok,
        "down" => Mode::Down,
        "500" => Mode::Error500,
        "slow" => Mode::Slow(num(5.0).max(0.0)),
        "malformed" => Mode::Malformed,
        "oversized" => Mode::Oversized(num(80.0 * 1048576.0) as u64),
        "status" => Mode::Status(num(302.0) as u16),
        "bodyless" => Mode::Bodyless(num(302.0) as u16),
        _ => return None,
    })
}

struct Server {
    attacklist: PathBuf,
    access_key: String,
    secret_key: String,
    traffic_dir: Option<PathBuf>,
    control: Option<PathBuf>,
    redirect_to: String,
    mode: Mutex<Mode>,
    attacklist_hits: AtomicU64,
    traffic_hits: AtomicU64,
    unauthorized: AtomicU64,
    last_query: Mutex<String>,
}

struct Req {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

fn read_request(s: &mut impl Read) -> Option<Req> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || headers.len() > 100 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len.min(256 << 20)];
    r.read_exact(&mut body).ok()?;
    Some(Req {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn respond(s: &mut impl Write, status: &str, body: &[u8]) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nServer: ase-abs-ref\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(body);
    let _ = s.flush();
}

/// The reason phrase of the statuses the failure modes are used with.
fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        _ => "Status",
    }
}

impl Server {
    /// Answers `code` with `body` (`None`: no body at all), and a Location
    /// for a 3xx.
    fn respond_status(&self, s: &mut impl Write, code: u16, body: Option<&[u8]>) {
        let mut head = format!(
            "HTTP/1.1 {code} {}\r\nServer: ase-abs-ref\r\n",
            reason(code)
        );
        if (300..400).contains(&code) {
            head.push_str(&format!("Location: {}\r\n", self.redirect_to));
        }
        match body {
            Some(b) => head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )),
            // 204 and 304 have no body by definition; others say so.
            None if code == 204 || code == 304 => {}
            None => head.push_str("Content-Length: 0\r\n"),
        }
        head.push_str("Connection: close\r\n\r\n");
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(body.unwrap_or_default());
        let _ = s.flush();
    }

    fn mode(&self) -> Mode {
        if let Some(p) = &self.control {
            if let Ok(t) = std::fs::read_to_string(p) {
                let mut w = t.split_whitespace();
                if let Some(m) = parse_mode(w.next().unwrap_or(""), w.next()) {
                    return m;
                }
            }
        }
        self.mode.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn handle(&self, s: &mut (impl Read + Write)) {
        let Some(req) = read_request(s) else { return };
        match req.path.as_str() {
            "/__stats" => {
                let body = serde_json::json!({
                    "attacklist": self.attacklist_hits.load(Relaxed),
                    "traffic": self.traffic_hits.load(Relaxed),
                    "unauthorized": self.unauthorized.load(Relaxed),
                    "last_query": *self.last_query.lock().unwrap_or_else(|e| e.into_inner()),
                });
                return respond(s, "200 OK", body.to_string().as_bytes());
            }
            "/__control" => {
                return match parse_mode(req.param("mode").unwrap_or(""), req.param("arg")) {
                    Some(m) => {
                        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = m;
                        respond(s, "200 OK", b"{\"message\":\"ok\"}")
                    }
                    None => respond(s, "400 Bad Request", b"{\"message\":\"unknown mode\"}"),
                };
            }
            _ => {}
        }
        let is_list = req.method == "GET" && req.path == "/v4/abs/attacklist";
        let is_traffic = req.method == "POST" && req.path == "/v4/abs/traffic";
        if is_list {
            self.attacklist_hits.fetch_add(1, Relaxed);
            *self.last_query.lock().unwrap_or_else(|e| e.into_inner()) = req.query.clone();
        }
        if is_traffic {
            self.traffic_hits.fetch_add(1, Relaxed);
        }
        match self.mode() {
            Mode::Ok => {}
            Mode::Down => return,
            Mode::Error500 => {
                return respond(s, "500 Internal Server Error", b"{\"message\":\"error\"}");
            }
            Mode::Slow(secs) => std::thread::sleep(Duration::from_secs_f64(secs.min(3600.0))),
            Mode::Malformed => return respond(s, "200 OK", b"{\"ips\": [\"1.2.3.4\", "),
            Mode::Status(code) => {
                let body =
                    std::fs::read(&self.attacklist).unwrap_or_else(|_| b"{\"ips\":[]}".to_vec());
                return self.respond_status(s, code, Some(&body));
            }
            Mode::Bodyless(code) => return self.respond_status(s, code, None),
            Mode::Oversized(n) => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"ips\":[");
                let chunk = "\"10.0.0.1\",".repeat(6000);
                let mut sent = 8u64;
                while sent < n {
                    if s.write_all(chunk.as_bytes()).is_err() {
                        return;
                    }
                    sent += chunk.len() as u64;
                }
                let _ = s.write_all(b"\"10.0.0.1\"]}");
                let _ = s.flush();
                return;
            }
        }
        if !(is_list || is_traffic) {
            return respond(s, "404 Not Found", b"{\"message\":\"not found\"}");
        }
        if req.header("x-abs-ak") != Some(self.access_key.as_str())
            || req.header("x-abs-sk") != Some(self.secret_key.as_str())
        {
            self.unauthorized.fetch_add(1, Relaxed);
            return respond(s, "401 Unauthorized", b"{\"message\":\"Unauthorized\"}");
        }
        if is_list {
            let body = std::fs::read(&self.attacklist).unwrap_or_else(|_| b"{\"ips\":[]}".to_vec());
            return respond(s, "200 OK", &body);
        }
        if let Some(dir) = &self.traffic_dir {
            let n = self.traffic_hits.load(Relaxed);
            let tmp = dir.join(format!(".batch-{n:06}.tmp"));
            // Write then rename, so a reader never sees half a batch.
            if std::fs::write(&tmp, &req.body).is_err()
                || std::fs::rename(&tmp, dir.join(format!("batch-{n:06}.json"))).is_err()
            {
                return respond(
                    s,
                    "500 Internal Server Error",
                    b"{\"message\":\"cannot store\"}",
                );
            }
        }
        respond(s, "200 OK", b"{\"message\":\"ok\"}")
    }
}

fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(cfg))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:0".to_string();
    let mut redirect_to = "http://abs-moved.example/v4/abs/attacklist".to_string();
    let (mut attacklist, mut traffic_dir, mut control, mut cert, mut key) =
        (None, None, None, None, None);
    let (mut ak, mut sk) = ("abs_ak".to_string(), "abs_sk".to_string());
    while let Some(a) = args.next() {
        let mut val = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("ase-abs-ref: {name} needs a value (see --help)");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return;
            }
            "--listen" => listen = val("--listen"),
            "--attacklist" => attacklist = Some(PathBuf::from(val("--attacklist"))),
            "--access-key" => ak = val("--access-key"),
            "--secret-key" => sk = val("--secret-key"),
            "--traffic-dir" => traffic_dir = Some(PathBuf::from(val("--traffic-dir"))),
            "--control" => control = Some(PathBuf::from(val("--control"))),
            "--redirect-to" => redirect_to = val("--redirect-to"),
            "--tls-cert" => cert = Some(PathBuf::from(val("--tls-cert"))),
            "--tls-key" => key = Some(PathBuf::from(val("--tls-key"))),
            other => {
                eprintln!("ase-abs-ref: unknown argument {other:?} (see --help)");
                std::process::exit(2);
            }
        }
    }
    let Some(attacklist) = attacklist else {
        eprintln!("ase-abs-ref: --attacklist FILE is required (see --help)");
        std::process::exit(2);
    };
    let tls = match (cert, key) {
        (Some(c), Some(k)) => match tls_config(&c, &k) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("ase-abs-ref: TLS: {e}");
                std::process::exit(1);
            }
        },
        (None, None) => None,
        _ => {
            eprintln!("ase-abs-ref: --tls-cert and --tls-key go together");
            std::process::exit(2);
        }
    };
    if let Some(d) = &traffic_dir {
        if let Err(e) = std::fs::create_dir_all(d) {
            eprintln!("ase-abs-ref: {}: {e}", d.display());
            std::process::exit(1);
        }
    }
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ase-abs-ref: bind {listen}: {e}");
            std::process::exit(1);
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(listen);
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    let server = Arc::new(Server {
        attacklist,
        access_key: ak,
        secret_key: sk,
        traffic_dir,
        control,
        redirect_to,
        mode: Mutex::new(Mode::Ok),
        attacklist_hits: AtomicU64::new(0),
        traffic_hits: AtomicU64::new(0),
        unauthorized: AtomicU64::new(0),
        last_query: Mutex::new(String::new()),
    });
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        let server = server.clone();
        let tls = tls.clone();
        std::thread::spawn(move || {
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
            match tls {
                None => {
                    let mut tcp: TcpStream = tcp;
                    server.handle(&mut tcp);
                }
                Some(cfg) => {
                    let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                        return;
                    };
                    let mut s = rustls::StreamOwned::new(conn, tcp);
                    server.handle(&mut s);
                    s.conn.send_close_notify();
                    let _ = s.flush();
                }
            }
        });
    }
}
