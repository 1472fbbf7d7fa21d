//! The decision order (docs/design.md, "Decision order"), step by step, with
//! the identifiers of the examples in ASE's documentation.

use std::path::Path;

use ase::enforcer::Enforcer;
use ase::policy::Switch;
use ase::policy::decide::{Action, Decision, Reason, Request, UNAUTHORIZED};
use ase::policy::extract::parse_ip;
use ase::policy::{Api, ApiSet, Config, IdKind, Identifier, Source, UnknownApi};

const SHOP: &str = r#"{"api_metadata": {
  "protocol": "https", "url": "/shopapi", "hostname": "*",
  "cookie": "JSESSIONID", "oauth2_access_token": true,
  "apikey_qs": "", "apikey_header": "X-API-KEY",
  "enable_blocking": true,
  "api_pattern_enforcement": {
    "protocol_allowed": "https",
    "methods_allowed": ["GET", "POST"],
    "content_type_allowed": "application/json",
    "error_code": "401", "error_def": "Unauthorized", "error_message_body": "401 Unauthorized" },
  "decoy_config": { "decoy_enabled": true, "response_code": 200, "response_def": "OK",
                    "response_message": "decoy here", "decoy_subpaths": ["/shopapi/admin"] },
  "username_header": "x-username-header"
}}"#;

const QS: &str = r#"{"api_metadata": {"url": "/qs", "hostname": "*", "apikey_qs": "AccessKey"}}"#;

const JWT: &str = r#"{"api_metadata": {"url": "/jwt", "hostname": "*",
  "jwt": {"location": "h:authorization:bearer", "username": "username", "clientid": "client_id"}}}"#;

const TRAP: &str = r#"{"api_metadata": {"url": "/trap", "hostname": "*",
  "decoy_config": {"decoy_enabled": true, "response_code": 404, "response_def": "Not Found",
                   "response_message": "nothing", "decoy_subpaths": []}}}"#;

const REDIR: &str = r#"{"api_metadata": {"url": "/secure", "hostname": "*",
  "api_pattern_enforcement": {"protocol_allowed": "https",
    "http_redirect": {"response_code": 301, "response_def": "Moved Permanently",
                      "https_url": "https://shop.example.com/secure"}}}}"#;

const MONITOR: &str = r#"{"api_metadata": {"url": "/monitor", "hostname": "*", "enable_blocking": false,
  "cookie": "JSESSIONID",
  "api_pattern_enforcement": {"methods_allowed": ["GET"]}}}"#;

const EXACT: &str = r#"{"api_metadata": {"url": "/shopapi", "hostname": "api.example.com"}}"#;

fn engine(conf: &str) -> Enforcer {
    let path = Path::new("/etc/ase/ase.conf");
    let config: Config = ase::policy::config::parse_ase_conf(conf, path).unwrap();
    let apis = [
        ("shop", SHOP),
        ("qs", QS),
        ("jwt", JWT),
        ("trap", TRAP),
        ("redir", REDIR),
        ("monitor", MONITOR),
        ("exact", EXACT),
    ]
    .into_iter()
    .map(|(n, j)| Api::parse(n, j.as_bytes()).unwrap())
    .collect();
    Enforcer::new(config, ApiSet::new(apis).unwrap())
}

fn on() -> Enforcer {
    engine("enable_ase_detected_attack=true\nenable_abs_attack=true\n")
}

/// A request: scheme, method, host, uri, client ip, headers.
struct R {
    scheme: &'static str,
    method: &'static str,
    host: &'static str,
    uri: &'static str,
    ip: &'static str,
    headers: Vec<(&'static str, String)>,
    user: &'static str,
    unknown: Option<UnknownApi>,
}

fn get(uri: &'static str) -> R {
    R {
        scheme: "https",
        method: "GET",
        host: "shop.example.com",
        uri,
        ip: "10.1.1.1",
        headers: Vec::new(),
        user: "",
        unknown: None,
    }
}

impl R {
    fn ip(mut self, ip: &'static str) -> R {
        self.ip = ip;
        self
    }
    fn h(mut self, n: &'static str, v: &str) -> R {
        self.headers.push((n, v.to_string()));
        self
    }
    fn scheme(mut self, s: &'static str) -> R {
        self.scheme = s;
        self
    }
    fn method(mut self, m: &'static str) -> R {
        self.method = m;
        self
    }
    fn host(mut self, h: &'static str) -> R {
        self.host = h;
        self
    }
    fn user(mut self, u: &'static str) -> R {
        self.user = u;
        self
    }
    fn unknown(mut self, u: UnknownApi) -> R {
        self.unknown = Some(u);
        self
    }
    fn check<'e>(&self, e: &'e Enforcer) -> Decision<'e> {
        let hs: Vec<(&[u8], &[u8])> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let req = Request {
            client_ip: parse_ip(self.ip.as_bytes(), false),
            method: self.method.as_bytes(),
            scheme: self.scheme.as_bytes(),
            host: self.host.as_bytes(),
            uri: self.uri.as_bytes(),
            headers: &hs[..],
            username: self.user.as_bytes(),
            unknown_api: self.unknown,
        };
        e.check(&req)
    }
}

fn id(kind: IdKind, name: &str, value: &str) -> Identifier {
    Identifier::new(kind, name, value).unwrap()
}

fn deny(e: &Enforcer, kind: IdKind, name: &str, value: &str) {
    e.deny_add(&id(kind, name, value), Source::Manual, 0);
}

fn allow(e: &Enforcer, kind: IdKind, name: &str, value: &str) {
    e.allow_add(&id(kind, name, value), 0);
}

#[track_caller]
fn expect(d: &Decision<'_>, action: Action, reason: Reason, status: u16) {
    assert_eq!(
        (d.action, d.reason, d.status),
        (action, reason, status),
        "{d:?}"
    );
}

/// A plain valid request to the shop API, carrying all five identifiers.
fn full() -> R {
    get("/shopapi/items?x=1")
        .ip("1.1.1.1")
        .h("Cookie", "JSESSIONID=cookie_1.4")
        .h("Authorization", "Bearer token1.4")
        .h("X-API-KEY", "key_1.4")
        .h("x-username-header", "abc@example.com")
}

#[test]
fn step1_firewall_off_allows_everything_and_records_nothing() {
    let e = engine("enable_firewall=false\nenable_ase_detected_attack=true\n");
    deny(&e, IdKind::Ip, "", "1.1.1.1");
    let d = full().check(&e);
    expect(&d, Action::Allow, Reason::FirewallOff, 0);
    let d = get("/shopapi/admin").ip("9.9.9.9").check(&e);
    expect(&d, Action::Allow, Reason::FirewallOff, 0);
    assert!(e.deny_entries(Source::REALTIME).is_empty());
    e.set_switch(Switch::Firewall, true);
    expect(&full().check(&e), Action::Block, Reason::DenyList, 403);
}

#[test]
fn step2_unknown_api_pass_reject_and_ip_still_checked() {
    let e = on();
    let d = get("/nowhere").check(&e);
    expect(&d, Action::Allow, Reason::UnknownApi, 0);
    let d = get("/nowhere").unknown(UnknownApi::Reject).check(&e);
    expect(&d, Action::Block, Reason::UnknownApi, 503);
    assert_eq!(d.body, "Error: Unknown API");
    deny(&e, IdKind::Ip, "", "1.1.1.1");
    let d = get("/nowhere").ip("1.1.1.1").check(&e);
    expect(&d, Action::Block, Reason::DenyList, 403);
    // Only the IP counts without an API: a denied token is not read.
    deny(&e, IdKind::Token, "", "token1.4");
    let d = get("/nowhere")
        .h("Authorization", "Bearer token1.4")
        .check(&e);
    expect(&d, Action::Allow, Reason::UnknownApi, 0);
    let e = engine("unknown_api=reject\n");
    expect(
        &get("/nowhere").check(&e),
        Action::Block,
        Reason::UnknownApi,
        503,
    );
    let d = get("/nowhere").unknown(UnknownApi::Pass).check(&e);
    expect(&d, Action::Allow, Reason::UnknownApi, 0);
}

#[test]
fn step2_api_matching() {
    let e = on();
    let api = |r: R| r.check(&e).api.map(|a| a.name.clone());
    assert_eq!(api(get("/shopapi")).as_deref(), Some("shop"));
    assert_eq!(api(get("/shopapi/x/y")).as_deref(), Some("shop"));
    assert_eq!(api(get("/shopapix")), None, "prefix only on a / boundary");
    assert_eq!(
        api(get("/shopapi").host("API.example.com:443")).as_deref(),
        Some("exact")
    );
}

#[test]
fn step3_to_6_each_identifier_kind_is_denied_then_allowed() {
    // (kind, name, value, request carrying it)
    let cases: Vec<(IdKind, &str, &str, R)> = vec![
        (IdKind::Ip, "", "1.1.1.1", get("/shopapi").ip("1.1.1.1")),
        (IdKind::Ip, "", "172.168.11.0/24", get("/shopapi").ip("172.168.11.110")),
        (IdKind::Ip, "", "2001:db8::/32", get("/shopapi").ip("2001:db8::5")),
        (IdKind::Ip, "", "4.4.4.4", get("/shopapi").ip("::ffff:4.4.4.4")),
        (
            IdKind::Cookie,
            "JSESSIONID",
            "ad233edqsd1d23redwefew",
            get("/shopapi").h("Cookie", "a=b; JSESSIONID=ad233edqsd1d23redwefew"),
        ),
        (
            IdKind::Token,
            "",
            "cdE94R3osh283B7NoiJR41XHgt7gxroot",
            get("/shopapi").h("authorization", "Bearer cdE94R3osh283B7NoiJR41XHgt7gxroot"),
        ),
        (
            IdKind::ApiKey,
            "x-api-key",
            "d4d28833e2c24be0913f4267f3b91ce5",
            get("/shopapi").h("X-Api-Key", "d4d28833e2c24be0913f4267f3b91ce5"),
        ),
        (
            IdKind::ApiKey,
            "AccessKey",
            "b31dfa4678b24aa5a2daa06aba1857d4",
            get("/qs?AccessKey=b31dfa4678b24aa5a2daa06aba1857d4"),
        ),
        (
            IdKind::Username,
            "",
            "abc@example.com",
            get("/shopapi").h("X-Username-Header", "abc@example.com"),
        ),
        (IdKind::Username, "", "your name", get("/shopapi").h("x-username-header", "your name")),
        (IdKind::Username, "", "blockeduser", get("/qs").user("blockeduser")),
        (
            IdKind::Username,
            "",
            "alice",
            // payload {"sub":"1","username":"alice","client_id":"app"}
            get("/jwt").h(
                "Authorization",
                "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIiwidXNlcm5hbWUiOiJhbGljZSIsImNsaWVudF9pZCI6ImFwcCJ9.x",
            ),
        ),
    ];
    for (kind, name, value, req) in cases {
        let e = on();
        expect(&req.check(&e), Action::Allow, Reason::None, 0);
        deny(&e, kind, name, value);
        let d = req.check(&e);
        expect(&d, Action::Block, Reason::DenyList, 403);
        assert_eq!(
            (d.matched, d.source, d.body),
            (Some(kind), Some(Source::Manual), UNAUTHORIZED)
        );
        allow(&e, kind, name, value);
        let d = req.check(&e);
        expect(&d, Action::Allow, Reason::AllowList, 0);
        assert_eq!(d.matched, Some(kind), "{value}");
    }
}

#[test]
fn allow_beats_deny_across_kinds() {
    let e = on();
    deny(&e, IdKind::Ip, "", "1.1.1.1");
    deny(&e, IdKind::Token, "", "token1.4");
    allow(&e, IdKind::Cookie, "JSESSIONID", "cookie_1.4");
    expect(&full().check(&e), Action::Allow, Reason::AllowList, 0);
    let e = on();
    deny(&e, IdKind::Cookie, "JSESSIONID", "cookie_1.4");
    allow(&e, IdKind::Ip, "", "1.1.0.0/16");
    expect(&full().check(&e), Action::Allow, Reason::AllowList, 0);
}

#[test]
fn values_are_exact_and_names_are_as_documented() {
    let e = on();
    deny(&e, IdKind::Token, "", "token1.4");
    deny(&e, IdKind::Cookie, "JSESSIONID", "cookie_1.4");
    let d = get("/shopapi")
        .h("Authorization", "Bearer TOKEN1.4")
        .check(&e);
    expect(&d, Action::Allow, Reason::None, 0);
    let d = get("/shopapi")
        .h("Cookie", "jsessionid=cookie_1.4")
        .check(&e);
    expect(&d, Action::Allow, Reason::None, 0);
    // A cookie of another name with the listed value does not match.
    let d = get("/shopapi").h("Cookie", "OTHER=cookie_1.4").check(&e);
    expect(&d, Action::Allow, Reason::None, 0);
}

#[test]
fn expiry_stops_matching_at_once() {
    let e = on();
    let past = ase::clock::now_ms() - 1;
    e.deny_add(&id(IdKind::Ip, "", "1.1.1.1"), Source::Manual, past);
    expect(
        &get("/shopapi").ip("1.1.1.1").check(&e),
        Action::Allow,
        Reason::None,
        0,
    );
    e.deny_add(
        &id(IdKind::Ip, "", "1.1.1.1"),
        Source::Abs,
        ase::clock::now_ms() + 60_000,
    );
    let d = get("/shopapi").ip("1.1.1.1").check(&e);
    assert_eq!(d.source, Some(Source::Abs));
    e.allow_add(&id(IdKind::Ip, "", "1.1.1.1"), past);
    expect(
        &get("/shopapi").ip("1.1.1.1").check(&e),
        Action::Block,
        Reason::DenyList,
        403,
    );
}

#[test]
fn step5_decoys_in_and_out_of_context() {
    let e = on();
    let d = get("/shopapi/admin/users").ip("172.16.40.15").check(&e);
    expect(&d, Action::Respond, Reason::Decoy, 200);
    assert_eq!((d.body, d.status_text), ("decoy here", "OK"));
    let d = get("/trap/anything").ip("1.2.3.4").check(&e);
    expect(&d, Action::Respond, Reason::Decoy, 404);
    let listed: Vec<String> = e
        .deny_entries(Source::Decoy.bit())
        .into_iter()
        .map(|(i, _)| i.to_string())
        .collect();
    assert_eq!(listed, ["ip 172.16.40.15", "ip 1.2.3.4"]);
    // The decoy-tainted client is now blocked on a real API.
    let d = get("/shopapi/items").ip("1.2.3.4").check(&e);
    expect(&d, Action::Block, Reason::DenyList, 403);
    assert_eq!(d.source, Some(Source::Decoy));
    // An allow-listed client gets the decoy answer but is not listed.
    allow(&e, IdKind::Ip, "", "5.5.5.5");
    let d = get("/trap").ip("5.5.5.5").check(&e);
    expect(&d, Action::Respond, Reason::Decoy, 404);
    assert_eq!(e.deny_entries(Source::Decoy.bit()).len(), 2);
    // Without real-time detection the decoy still answers, and records nothing.
    let e = engine("");
    expect(
        &get("/trap").ip("6.6.6.6").check(&e),
        Action::Respond,
        Reason::Decoy,
        404,
    );
    assert!(e.deny_entries(Source::ANY).is_empty());
}

#[test]
fn step6_sources_follow_their_switches() {
    let e = engine("");
    e.deny_add(&id(IdKind::Ip, "", "1.1.1.1"), Source::Abs, 0);
    e.deny_add(&id(IdKind::Ip, "", "2.2.2.2"), Source::InvalidMethod, 0);
    expect(
        &get("/shopapi").ip("1.1.1.1").check(&e),
        Action::Allow,
        Reason::None,
        0,
    );
    expect(
        &get("/shopapi").ip("2.2.2.2").check(&e),
        Action::Allow,
        Reason::None,
        0,
    );
    e.set_switch(Switch::AbsAttack, true);
    expect(
        &get("/shopapi").ip("1.1.1.1").check(&e),
        Action::Block,
        Reason::DenyList,
        403,
    );
    e.set_switch(Switch::AseDetectedAttack, true);
    expect(
        &get("/shopapi").ip("2.2.2.2").check(&e),
        Action::Block,
        Reason::DenyList,
        403,
    );
    // Turning real-time detection off deletes its entries.
    e.set_switch(Switch::AseDetectedAttack, false);
    assert!(e.deny_entries(Source::REALTIME).is_empty());
    e.set_switch(Switch::AseDetectedAttack, true);
    expect(
        &get("/shopapi").ip("2.2.2.2").check(&e),
        Action::Allow,
        Reason::None,
        0,
    );
}

#[test]
fn step7_pattern_violations_answer_and_record_by_kind() {
    // (request, reason, source) with the identifiers of ASE's documented example.
    let cases = [
        (
            get("/shopapi/a")
                .scheme("http")
                .h("Authorization", "Bearer token_protocol")
                .h("Cookie", "JSESSIONID=session_protocol"),
            Reason::Protocol,
            Source::InvalidProtocol,
        ),
        (
            get("/shopapi/a")
                .method("DELETE")
                .h("Authorization", "Bearer token_method")
                .h("Cookie", "JSESSIONID=session_method"),
            Reason::Method,
            Source::InvalidMethod,
        ),
        (
            get("/shopapi/a")
                .method("POST")
                .h("Content-Type", "text/xml; charset=utf-8")
                .h("Authorization", "Bearer token_contenttype")
                .h("Cookie", "JSESSIONID=session_contenttype"),
            Reason::ContentType,
            Source::InvalidContentType,
        ),
    ];
    for (req, reason, source) in cases {
        let e = on();
        let d = req.check(&e);
        expect(&d, Action::Respond, reason, 401);
        assert_eq!(
            (d.status_text, d.body),
            ("Unauthorized", "401 Unauthorized")
        );
        let listed: Vec<String> = e
            .deny_entries(source.bit())
            .into_iter()
            .map(|(i, _)| i.to_string())
            .collect();
        assert_eq!(listed.len(), 3, "{listed:?}");
        assert!(listed.contains(&"ip 10.1.1.1".to_string()));
        // The client is now blocked on any API, even with a valid request.
        let d = get("/qs").ip("10.1.1.1").check(&e);
        expect(&d, Action::Block, Reason::DenyList, 403);
        assert_eq!(d.source, Some(source));
    }
    // Allowed content types, in any case and with parameters, pass; so does no body.
    let e = on();
    let ok = get("/shopapi")
        .method("POST")
        .h("Content-Type", "Application/JSON; charset=utf-8");
    expect(&ok.check(&e), Action::Allow, Reason::None, 0);
    expect(
        &get("/shopapi").method("POST").check(&e),
        Action::Allow,
        Reason::None,
        0,
    );
    // Without real-time detection: the same answer, nothing recorded.
    let e = engine("");
    let d = get("/shopapi").method("PUT").check(&e);
    expect(&d, Action::Respond, Reason::Method, 401);
    assert!(e.deny_entries(Source::ANY).is_empty());
}

#[test]
fn step7_http_redirect_for_https_only_apis() {
    let e = on();
    let d = get("/secure/x").scheme("http").check(&e);
    expect(&d, Action::Redirect, Reason::Protocol, 301);
    assert_eq!(d.location, "https://shop.example.com/secure");
    assert!(
        e.deny_entries(Source::ANY).is_empty(),
        "a redirect is not an attack"
    );
    expect(&get("/secure/x").check(&e), Action::Allow, Reason::None, 0);
}

#[test]
fn monitor_mode_would_block() {
    let e = on();
    let d = get("/monitor").method("POST").check(&e);
    expect(&d, Action::Allow, Reason::Method, 0);
    assert!(d.would_block);
    assert_eq!(
        e.deny_entries(Source::InvalidMethod.bit()).len(),
        1,
        "recorded"
    );
    deny(&e, IdKind::Cookie, "JSESSIONID", "c1");
    let d = get("/monitor")
        .h("Cookie", "JSESSIONID=c1")
        .ip("8.8.8.8")
        .check(&e);
    expect(&d, Action::Allow, Reason::DenyList, 0);
    assert!(d.would_block);
    let s = e.stats();
    assert_eq!(s.would_block[Reason::Method as usize], 1);
    assert_eq!(s.would_block[Reason::DenyList as usize], 1);
    assert_eq!(s.blocked_total(), 0);
    // Switching blocking on for the API makes the same request blocked.
    assert!(e.set_api_blocking("monitor", true));
    expect(
        &get("/monitor").h("Cookie", "JSESSIONID=c1").check(&e),
        Action::Block,
        Reason::DenyList,
        403,
    );
    assert!(!e.set_api_blocking("nope", true));
}

#[test]
fn xff_selects_the_first_address_only_when_enabled() {
    let e = engine("enable_xff=true\n");
    deny(&e, IdKind::Ip, "", "203.0.113.9");
    let r = || {
        get("/shopapi")
            .ip("127.0.0.1")
            .h("X-Forwarded-For", "203.0.113.9, 10.0.0.1")
    };
    expect(&r().check(&e), Action::Block, Reason::DenyList, 403);
    // A garbage XFF falls back to the connection address.
    deny(&e, IdKind::Ip, "", "127.0.0.1");
    let d = get("/shopapi")
        .ip("127.0.0.1")
        .h("X-Forwarded-For", "garbage")
        .check(&e);
    expect(&d, Action::Block, Reason::DenyList, 403);
    let e = engine("");
    deny(&e, IdKind::Ip, "", "203.0.113.9");
    expect(&r().check(&e), Action::Allow, Reason::None, 0);
}

#[test]
fn hostile_requests_do_not_break_anything() {
    let e = on();
    deny(&e, IdKind::Cookie, "JSESSIONID", "z");
    let big = format!("x={}; JSESSIONID=z", "y".repeat(1 << 20));
    let d = get("/shopapi").h("Cookie", &big).check(&e);
    expect(&d, Action::Block, Reason::DenyList, 403);
    let junk = String::from_utf8_lossy(&[0xff, 0xfe, 0x00, b'a']).into_owned();
    let d = get("/shopapi")
        .h(Box::leak(junk.clone().into_boxed_str()), &junk)
        .h("Authorization", "Bearer ")
        .check(&e);
    expect(&d, Action::Allow, Reason::None, 0);
    let long_uri: &'static str =
        Box::leak(format!("/shopapi/{}", "a/".repeat(10_000)).into_boxed_str());
    expect(&get(long_uri).check(&e), Action::Allow, Reason::None, 0);
    let d = get("/jwt").h("Authorization", "Bearer a.!!!!.c").check(&e);
    expect(&d, Action::Allow, Reason::None, 0);
}

/// The longest listable value (`MAX_FIELD` bytes) still blocks for every
/// kind, and a request value one byte longer is allowed, also when it starts
/// with a listed value. (That the longer one is not even hashed shows only
/// in time; this pins the boundary.)
#[test]
fn values_up_to_max_field_match_and_longer_ones_are_not_probed() {
    let long = "v".repeat(ase::policy::ident::MAX_FIELD);
    let longer = format!("{long}v");
    let e = on();
    deny(&e, IdKind::Cookie, "JSESSIONID", &long);
    deny(&e, IdKind::Token, "", &long);
    deny(&e, IdKind::ApiKey, "X-API-KEY", &long);
    deny(&e, IdKind::Username, "", &long);
    // Header, and what goes before the value in it.
    let cases = [
        ("Cookie", "JSESSIONID="),
        ("Authorization", "Bearer "),
        ("X-API-KEY", ""),
        ("x-username-header", ""),
    ];
    for (header, before) in cases {
        let d = get("/shopapi")
            .h(header, &format!("{before}{long}"))
            .check(&e);
        expect(&d, Action::Block, Reason::DenyList, 403);
        let d = get("/shopapi")
            .h(header, &format!("{before}{longer}"))
            .check(&e);
        expect(&d, Action::Allow, Reason::None, 0);
    }
}

#[test]
fn counters_count_by_reason() {
    let e = on();
    deny(&e, IdKind::Ip, "", "1.1.1.1");
    full().check(&e);
    get("/trap").check(&e);
    get("/shopapi").method("PUT").ip("3.3.3.3").check(&e);
    get("/shopapi").ip("2.2.2.2").check(&e);
    let s = e.stats();
    assert_eq!(s.checked, 4);
    assert_eq!(s.allowed, 1);
    assert_eq!(s.blocked[Reason::DenyList as usize], 1);
    assert_eq!(s.blocked[Reason::Decoy as usize], 1);
    assert_eq!(s.blocked[Reason::Method as usize], 1);
    assert_eq!(s.detections, 2);
}

/// A JWT whose payload is `json`, base64url without padding.
fn jwt_of(json: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::from("eyJhbGciOiJub25lIn0.");
    for c in json.as_bytes().chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for j in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * j) & 63) as usize] as char);
        }
    }
    out + ".sig"
}

/// A bearer JWT whose payload, `len` bytes of JSON, names `user` among
/// groups that fill it out, as a large identity provider's token does.
fn bearer_jwt(user: &str, len: usize) -> String {
    let mut json = format!(r#"{{"username":"{user}","groups":["#);
    let mut i = 0;
    while json.len() + 40 < len {
        json += &format!(r#""group-{i:04}-of-the-company","#);
        i += 1;
    }
    json += "\"last";
    json += &"x".repeat(len - json.len() - 3);
    json += "\"]}";
    assert_eq!(json.len(), len);
    format!("Bearer {}", jwt_of(&json))
}

#[test]
fn every_occurrence_of_an_identifier_meets_the_deny_list() {
    let e = on();
    deny(&e, IdKind::ApiKey, "AccessKey", "evil");
    deny(&e, IdKind::ApiKey, "X-API-KEY", "evil");
    deny(&e, IdKind::Cookie, "JSESSIONID", "evil");
    deny(&e, IdKind::Username, "", "evil");
    deny(&e, IdKind::Token, "", "evil");
    let cases = [
        (IdKind::ApiKey, get("/qs?AccessKey=ok&AccessKey=evil")),
        (IdKind::ApiKey, get("/qs?AccessKey=ok&AccessKey=%65vil")),
        (
            IdKind::ApiKey,
            get("/shopapi/a")
                .h("X-API-KEY", "ok")
                .h("x-api-key", "evil"),
        ),
        (
            IdKind::Cookie,
            get("/shopapi/a").h("Cookie", "JSESSIONID=ok; JSESSIONID=evil"),
        ),
        (
            IdKind::Cookie,
            get("/shopapi/a")
                .h("Cookie", "JSESSIONID=ok")
                .h("Cookie", "a=1; JSESSIONID=evil"),
        ),
        (
            IdKind::Username,
            get("/shopapi/a")
                .h("x-username-header", "ok")
                .h("X-Username-Header", "evil"),
        ),
        (
            IdKind::Token,
            get("/shopapi/a")
                .h("Authorization", "Bearer ok")
                .h("Authorization", "Bearer evil"),
        ),
    ];
    for (kind, req) in cases {
        let d = req.check(&e);
        expect(&d, Action::Block, Reason::DenyList, 403);
        assert_eq!((d.matched, d.source), (Some(kind), Some(Source::Manual)));
    }
    // The first occurrence alone passes; so does a clean repeat.
    let d = get("/qs?AccessKey=ok").check(&e);
    expect(&d, Action::Allow, Reason::None, 0);
    let d = get("/qs?AccessKey=ok&AccessKey=fine").check(&e);
    expect(&d, Action::Allow, Reason::None, 0);
    // An allow-listed occurrence is never blocked, wherever it comes.
    allow(&e, IdKind::ApiKey, "AccessKey", "friend");
    let d = get("/qs?AccessKey=evil&AccessKey=friend").check(&e);
    expect(&d, Action::Allow, Reason::AllowList, 0);
    assert_eq!(d.matched, Some(IdKind::ApiKey));
}

#[test]
fn duplicates_that_disagree_are_refused_only_when_asked() {
    let twice = |a: &str, b: &str| get("/shopapi/a").h("X-API-KEY", a).h("X-API-KEY", b);
    // Default (`check`): different values pass once each is checked.
    let e = on();
    expect(&twice("a", "b").check(&e), Action::Allow, Reason::None, 0);
    let e = engine("duplicate_identifiers=reject\n");
    let d = twice("a", "b").check(&e);
    expect(&d, Action::Block, Reason::DuplicateIdentifier, 400);
    assert_eq!(
        (d.matched, d.body, d.status_text),
        (Some(IdKind::ApiKey), "Error: Bad Request", "Bad Request")
    );
    let d = get("/shopapi/a")
        .h("Cookie", "JSESSIONID=a; JSESSIONID=b")
        .check(&e);
    expect(&d, Action::Block, Reason::DuplicateIdentifier, 400);
    assert_eq!(d.matched, Some(IdKind::Cookie));
    // The same value twice is not a disagreement.
    expect(&twice("a", "a").check(&e), Action::Allow, Reason::None, 0);
    let d = get("/qs?AccessKey=a&AccessKey=%61").check(&e);
    expect(&d, Action::Allow, Reason::None, 0);
    // A listed occurrence still answers 403 deny_list.
    deny(&e, IdKind::ApiKey, "X-API-KEY", "b");
    expect(
        &twice("a", "b").check(&e),
        Action::Block,
        Reason::DenyList,
        403,
    );
    // Monitor mode: would block.
    let d = get("/monitor")
        .h("Cookie", "JSESSIONID=a")
        .h("Cookie", "JSESSIONID=b")
        .check(&e);
    expect(&d, Action::Allow, Reason::DuplicateIdentifier, 0);
    assert!(d.would_block);
}

#[test]
fn more_occurrences_than_are_checked_are_refused_in_either_mode() {
    for conf in ["", "duplicate_identifiers=reject\n"] {
        let e = engine(conf);
        let mut r = get("/shopapi/a");
        for _ in 0..8 {
            r = r.h("x-username-header", "same");
        }
        expect(&r.check(&e), Action::Allow, Reason::None, 0);
        let d = r.h("x-username-header", "same").check(&e);
        expect(&d, Action::Block, Reason::DuplicateIdentifier, 400);
        assert_eq!(d.matched, Some(IdKind::Username), "{conf:?}");
    }
}

#[test]
fn a_jwt_behind_a_header_without_a_token_is_read() {
    // The first `Authorization` carries no bearer token; the second carries
    // a JWT naming a listed user. The user must be found in the second.
    let e = on();
    deny(&e, IdKind::Username, "", "mallory");
    let d = get("/jwt")
        .h("Authorization", "Basic eA==")
        .h("Authorization", &bearer_jwt("mallory", 200))
        .check(&e);
    expect(&d, Action::Block, Reason::DenyList, 403);
    assert_eq!(d.matched, Some(IdKind::Username));
    let d = get("/jwt")
        .h("Authorization", "Basic eA==")
        .h("Authorization", &bearer_jwt("alice", 200))
        .check(&e);
    expect(&d, Action::Allow, Reason::None, 0);
}

#[test]
fn a_large_jwt_still_names_its_user() {
    let e = on();
    deny(&e, IdKind::Username, "", "mallory");
    for len in [3_900, 4_100, 16_000, 16_384] {
        let d = get("/jwt")
            .h("Authorization", &bearer_jwt("mallory", len))
            .check(&e);
        expect(&d, Action::Block, Reason::DenyList, 403);
        assert_eq!(d.matched, Some(IdKind::Username), "{len}");
        let d = get("/jwt")
            .h("Authorization", &bearer_jwt("alice", len))
            .check(&e);
        expect(&d, Action::Allow, Reason::None, 0);
    }
    // Over the bound the user name is not read: the request passes by
    // default and is refused with `duplicate_identifiers = reject`.
    let over = bearer_jwt("mallory", 16_385);
    let d = get("/jwt").h("Authorization", &over).check(&e);
    expect(&d, Action::Allow, Reason::None, 0);
    let e = engine("duplicate_identifiers=reject\n");
    let d = get("/jwt").h("Authorization", &over).check(&e);
    expect(&d, Action::Block, Reason::DuplicateIdentifier, 400);
    assert_eq!(d.matched, Some(IdKind::Username));
    // Two tokens naming different users disagree.
    let d = get("/jwt")
        .h("Authorization", &bearer_jwt("alice", 100))
        .h("Authorization", &bearer_jwt("bob", 100))
        .check(&e);
    expect(&d, Action::Block, Reason::DuplicateIdentifier, 400);
}
