//! The HTTP client to ABS: fetches the attack list and posts traffic batches.
//!
//! Every call tries the `abs_endpoint`s in order and stops at the first that
//! answers well: `200` with a body for the attack list, any 2xx for a traffic
//! batch. Redirects are not followed (see [`AbsClient::new`]): a 3xx, like a
//! 1xx, a `204` or another 2xx to the attack-list request, is an error that
//! names the status, and the next endpoint is tried. TLS (`enable_ssl=true`) verifies the server against
//! `abs_ca_cert_path` when set (a PEM bundle; only those roots are trusted),
//! else against the Mozilla roots compiled in (webpki-roots), so behaviour does
//! not depend on the host's CA store. With `enable_ssl=false` plain HTTP is used.
//! The access and secret keys travel only in the `x-abs-ak` / `x-abs-sk`
//! headers and appear in no error message.

use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::time::format_minute;
use crate::policy::config::AbsConfig;

/// Path of the attack-list resource.
pub const ATTACKLIST_PATH: &str = "/v4/abs/attacklist";
/// Path traffic batches are posted to (our choice; see docs/abs.md).
pub const TRAFFIC_PATH: &str = "/v4/abs/traffic";

/// Timeouts and limits of the client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Time to open a TCP connection (and finish the TLS handshake).
    pub connect_timeout: Duration,
    /// Time for one whole request, body included: a slow ABS fails over.
    pub request_timeout: Duration,
    /// Largest response body read; a larger one is an error.
    pub max_body: u64,
    /// How far back the attack-list date window (`earlier_date`) reaches.
    pub window: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            max_body: 64 << 20,
            window: Duration::from_secs(30 * 86_400),
        }
    }
}

/// Why a call to one endpoint, or to all of them, failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientError {
    /// `endpoint: what went wrong`, one per endpoint tried.
    pub attempts: Vec<String>,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attempts.is_empty() {
            return f.write_str("no ABS endpoint configured (abs_endpoint in abs.conf)");
        }
        f.write_str(&self.attempts.join("; "))
    }
}

impl std::error::Error for ClientError {}

/// A successful response.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The endpoint that answered.
    pub endpoint: String,
    /// The body (at most [`ClientOptions::max_body`] bytes).
    pub body: Vec<u8>,
}

/// A client for the endpoints of one `abs.conf`.
pub struct AbsClient {
    agent: ureq::Agent,
    scheme: &'static str,
    endpoints: Vec<String>,
    access_key: String,
    secret_key: String,
    opts: ClientOptions,
}

impl fmt::Debug for AbsClient {
    /// Shows the endpoints, never the keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbsClient")
            .field("scheme", &self.scheme)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// The rustls configuration: the given PEM roots, or webpki-roots.
fn tls_config(ca: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| format!("abs_ca_cert_path {}: {e}", path.display()))?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "abs_ca_cert_path {}: no usable certificate",
                    path.display()
                ));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // Name the provider explicitly: if another crate in the binary enables a
    // second rustls provider, the implicit default would panic.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

fn read_capped(resp: ureq::Response, max: u64) -> Result<Vec<u8>, String> {
    if let Some(n) = resp
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if n > max {
            return Err(format!(
                "response body of {n} bytes exceeds the {max}-byte limit"
            ));
        }
    }
    let mut body = Vec::new();
    resp.into_reader()
        .take(max + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading the response: {e}"))?;
    if body.len() as u64 > max {
        return Err(format!("response body exceeds the {max}-byte limit"));
    }
    Ok(body)
}

/// What the server said, for a message: printable ASCII only, and short, so a
/// misbehaving server cannot fill a log line.
fn printable(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect()
}

/// `302 Found`: the status code and the server's reason phrase.
fn status_line(resp: &ureq::Response) -> String {
    let text = printable(resp.status_text(), 40);
    if text.is_empty() {
        resp.status().to_string()
    } else {
        format!("{} {text}", resp.status())
    }
}

/// The host (and port) a `Location` points to, without user info, path or
/// query, which may carry credentials. `None` for a relative location.
fn location_host(location: &str) -> Option<String> {
    let (_, rest) = location.trim().split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = printable(host, 100);
    (!host.is_empty()).then_some(host)
}

/// Refuses an answer that is not a success: a 1xx, or a 3xx (named with the
/// host it points to; never followed).
fn check_success(resp: &ureq::Response) -> Result<(), String> {
    match resp.status() {
        200..=299 => Ok(()),
        300..=399 => {
            let to = match resp.header("location") {
                None => String::new(),
                Some(l) => match location_host(l) {
                    Some(h) => format!(" (redirect to {h})"),
                    None => " (redirect to a path on the same host)".to_string(),
                },
            };
            Err(format!(
                "ABS answered {}{to}; not following: check abs_endpoint",
                status_line(resp)
            ))
        }
        _ => Err(format!(
            "ABS answered {}: not a final answer",
            status_line(resp)
        )),
    }
}

/// Refuses an answer to the attack-list request that is not `200` with a body:
/// only that is a list, so nothing else may replace the one in force.
fn check_attacklist(resp: &ureq::Response) -> Result<(), String> {
    check_success(resp)?;
    if resp.status() != 200 {
        return Err(format!(
            "ABS answered {}: no attack list",
            status_line(resp)
        ));
    }
    Ok(())
}

/// A short description of a ureq error. Transport errors name the URL, which
/// carries no credential (the keys are headers).
fn describe(e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, resp) => {
            format!("HTTP {code} {}", resp.status_text())
        }
        ureq::Error::Transport(t) => {
            let mut s = t.kind().to_string();
            if let Some(m) = t.message() {
                s.push_str(": ");
                s.push_str(m);
            }
            if let Some(src) = std::error::Error::source(&t) {
                s.push_str(": ");
                s.push_str(&src.to_string());
            }
            s
        }
    }
}

impl AbsClient {
    /// A client for `cfg` (reads `abs_ca_cert_path` now, so a bad bundle is reported at start).
    pub fn new(cfg: &AbsConfig, opts: ClientOptions) -> Result<AbsClient, String> {
        let mut b = ureq::AgentBuilder::new()
            .timeout_connect(opts.connect_timeout)
            .timeout(opts.request_timeout)
            // The ABS API is not documented to redirect, and a followed
            // redirect would carry the x-abs-ak / x-abs-sk headers to whatever
            // host it names. With 0, ureq returns the 3xx as is and
            // `check_success` reports it.
            .redirects(0)
            .try_proxy_from_env(false)
            .user_agent(concat!("ase/", env!("CARGO_PKG_VERSION")));
        let scheme = if cfg.enable_ssl {
            b = b.tls_config(tls_config(cfg.ca_cert_path.as_deref())?);
            "https"
        } else {
            "http"
        };
        Ok(AbsClient {
            agent: b.build(),
            scheme,
            endpoints: cfg.endpoints.clone(),
            access_key: cfg.access_key.clone(),
            secret_key: cfg.secret_key.clone(),
            opts,
        })
    }

    /// The options in force.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn each<T>(
        &self,
        mut call: impl FnMut(&str) -> Result<T, String>,
    ) -> Result<(String, T), ClientError> {
        let mut attempts = Vec::new();
        for ep in &self.endpoints {
            match call(&format!("{}://{ep}", self.scheme)) {
                Ok(v) => return Ok((ep.clone(), v)),
                Err(e) => attempts.push(format!("{ep}: {e}")),
            }
        }
        Err(ClientError { attempts })
    }

    /// `GET /v4/abs/attacklist?earlier_date=..&later_date=..&status=active`,
    /// trying each endpoint in turn. `now_ms` places the date window.
    pub fn fetch_attacklist(&self, now_ms: u64) -> Result<Fetched, ClientError> {
        let (endpoint, body) = self.fetch_attacklist_with(now_ms, Ok)?;
        Ok(Fetched { endpoint, body })
    }

    /// Like [`AbsClient::fetch_attacklist`], but each body goes through `accept`
    /// first, and a body it refuses (malformed, wrong shape) fails over to the
    /// next endpoint like a network error: one sick ABS node must not block the
    /// sync while another answers well.
    pub fn fetch_attacklist_with<T>(
        &self,
        now_ms: u64,
        mut accept: impl FnMut(Vec<u8>) -> Result<T, String>,
    ) -> Result<(String, T), ClientError> {
        let earlier = format_minute(now_ms.saturating_sub(self.opts.window.as_millis() as u64));
        // Round up to the next minute so entries detected this minute are inside.
        let later = format_minute(now_ms.saturating_add(60_000));
        self.each(|base| {
            let resp = self
                .agent
                .get(&format!("{base}{ATTACKLIST_PATH}"))
                .query("earlier_date", &earlier)
                .query("later_date", &later)
                .query("status", "active")
                .set("x-abs-ak", &self.access_key)
                .set("x-abs-sk", &self.secret_key)
                .set("accept", "application/json")
                .call()
                .map_err(describe)?;
            check_attacklist(&resp)?;
            let body = read_capped(resp, self.opts.max_body)?;
            if body.iter().all(u8::is_ascii_whitespace) {
                return Err("ABS answered 200 with an empty body: no attack list".into());
            }
            accept(body)
        })
    }

    /// `POST /v4/abs/traffic` with a JSON batch, trying each endpoint in turn.
    /// Returns the endpoint that took it.
    pub fn post_traffic(&self, body: &[u8]) -> Result<String, ClientError> {
        let (ep, ()) = self.each(|base| {
            let resp = self
                .agent
                .post(&format!("{base}{TRAFFIC_PATH}"))
                .set("x-abs-ak", &self.access_key)
                .set("x-abs-sk", &self.secret_key)
                .set("content-type", "application/json")
                .send_bytes(body)
                .map_err(describe)?;
            check_success(&resp)?;
            // Drain a small answer so the connection can be reused.
            let _ = read_capped(resp, 64 << 10);
            Ok(())
        })?;
        Ok(ep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_shown_by_its_host_only() {
        assert_eq!(
            location_host("https://u:secret@abs2.example:8443/v4?sk=x").as_deref(),
            Some("abs2.example:8443")
        );
        assert_eq!(
            location_host("http://[::1]:80#f").as_deref(),
            Some("[::1]:80")
        );
        assert_eq!(location_host("/v4/abs/attacklist?ak=x"), None);
        assert_eq!(location_host("http://\u{7}\n"), None);
    }
}
