//! What the ABS client does with HTTP answers that are not an attack list: a
//! redirect, a `204`, a `200` without a body. Against the reference server on
//! loopback; what a user notices is what still blocks and what status says.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ase::sync::abs::{AbsSink, Poller, PollerOptions};
use common::*;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

#[test]
fn only_a_200_with_a_body_replaces_the_list_and_redirects_are_not_followed() {
    // Where the redirects point: it must never see a request, so never the keys.
    let elsewhere = RefServer::start(&["--access-key", "abs_ak", "--secret-key", "abs_sk"]);
    let target = format!("http://user:pw@{}/v4/abs/attacklist?k=v", elsewhere.addr);
    let abs = RefServer::start(&["--redirect-to", &target]);
    abs.set_list(r#"{"ips": ["10.1.1.1", "10.1.1.2"]}"#);
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &[&abs.addr]);
    let p = Poller::start(
        e.clone(),
        e.clone() as Arc<dyn AbsSink>,
        PollerOptions {
            interval: Duration::from_secs(3600),
            ..fast_poller()
        },
    )
    .unwrap();
    let st = p.sync_now(WAIT).unwrap();
    assert_eq!((st.last_error.as_deref(), st.entries), (None, 2));

    // Each answer carries a list that would unblock 10.1.1.2 (or nothing at all).
    abs.set_list(r#"{"ips": ["10.1.1.1"]}"#);
    let host = elsewhere.addr.as_str();
    let cases: [(&str, &str, &[&str]); 6] = [
        (
            "status",
            "302",
            &[
                "ABS answered 302 Found",
                "redirect to",
                host,
                "not following",
            ],
        ),
        ("status", "300", &["ABS answered 300 Multiple Choices"]),
        (
            "status",
            "202",
            &["ABS answered 202 Accepted: no attack list"],
        ),
        (
            "bodyless",
            "302",
            &["ABS answered 302 Found", "not following"],
        ),
        (
            "bodyless",
            "204",
            &["ABS answered 204 No Content: no attack list"],
        ),
        ("bodyless", "200", &["ABS answered 200 with an empty body"]),
    ];
    for (n, (mode, code, wants)) in cases.into_iter().enumerate() {
        abs.control(mode, code);
        let st = p.sync_now(WAIT).unwrap();
        let err = st.last_error.clone().unwrap_or_default();
        for want in wants {
            assert!(err.contains(want), "{mode} {code}: {err:?} lacks {want:?}");
        }
        assert!(!err.contains("JSON"), "{mode} {code}: {err:?}");
        assert!(
            !err.contains("pw") && !err.contains("k=v") && !err.contains("user"),
            "{mode} {code}: only the host of the Location: {err:?}"
        );
        assert_eq!(st.consecutive_failures, n as u32 + 1, "{mode} {code}");
        assert_eq!(
            st.entries, 2,
            "{mode} {code}: status shows the list in force"
        );
        assert!(
            blocked(&e, "10.1.1.1", &[]) && blocked(&e, "10.1.1.2", &[]),
            "{mode} {code}: the last good list stays in force"
        );
    }
    let seen = elsewhere.stats();
    assert_eq!(
        (seen["attacklist"].as_u64(), seen["unauthorized"].as_u64()),
        (Some(0), Some(0)),
        "the redirect target got no request"
    );

    // A 200 with a list applies again.
    abs.control("ok", "");
    let st = p.sync_now(WAIT).unwrap();
    assert_eq!((st.last_error.as_deref(), st.entries), (None, 1));
    assert!(blocked(&e, "10.1.1.1", &[]) && !blocked(&e, "10.1.1.2", &[]));
    assert!(p.stop(Duration::from_secs(5)));
}

#[test]
fn a_redirect_fails_over_to_the_next_endpoint() {
    let moved = RefServer::start(&[]);
    moved.set_list(r#"{"ips": []}"#);
    moved.control("status", "301");
    let good = RefServer::start(&[]);
    good.set_list(r#"{"usernames": ["eve"]}"#);
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &[&moved.addr, &good.addr]);
    let p = Poller::start(e.clone(), e.clone() as Arc<dyn AbsSink>, fast_poller()).unwrap();
    let st = p.sync_now(WAIT).unwrap();
    assert_eq!(st.last_error, None);
    assert_eq!(st.last_endpoint.as_deref(), Some(good.addr.as_str()));
    assert!(blocked(&e, "192.0.2.1", &[("X-User", "eve")]));
}
