//! What a host needs from the configuration when it has no engine: the
//! verdict of `fail_mode`, read once by a process that can read the files
//! (nginx's master) for processes that may not manage to build an engine.

use std::ffi::c_char;

use super::{ASE_ERR_CONFIG, ASE_ERR_NULL_PARAMETER, ase_result, config_file};
use super::{ase_str, ase_verdict, run, write_error};
use crate::policy::decide::fail_mode;

/// Reads `ase.conf` at `config_path` and writes to `*verdict_out` the verdict
/// that `fail_mode` gives every request while no engine can decide: with
/// `fail_mode=open` `ASE_ACTION_ALLOW`, with `fail_mode=closed`
/// `ASE_ACTION_BLOCK` with its status, reason phrase and body; the reason is
/// `ASE_REASON_FAIL_MODE`. It is the verdict an engine gives while it cannot
/// load its state, for a host whose engine could not be made at all
/// (`ase_engine_new` failed): call it where the files are readable (an nginx
/// master, at configuration time, after `ase_config_check`) and keep the
/// verdict.
///
/// The verdict's strings are static: they live as long as the library.
/// Errors: `ASE_ERR_NULL_PARAMETER` (NULL `verdict_out`, or NULL path data
/// with a non-zero length), `ASE_ERR_INVALID_UTF8`, `ASE_ERR_CONFIG` (the
/// file is missing or invalid). `*verdict_out` is written only on success.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_config_fail_verdict(
    config_path: ase_str,
    verdict_out: *mut ase_verdict,
) -> ase_result {
    run(|| {
        if verdict_out.is_null() {
            return Err(ASE_ERR_NULL_PARAMETER);
        }
        let path = config_file(config_path).map_err(|(code, _)| code)?;
        let config = crate::load::load_config(path).map_err(|_| ASE_ERR_CONFIG)?;
        let v = ase_verdict::from(&fail_mode(config.fail_mode));
        // SAFETY: checked non-NULL above; the caller owns the out slot.
        unsafe { verdict_out.write(v) };
        Ok(())
    })
}

/// Reads `ase.conf` at `config_path` (and its `abs.conf`) and writes to
/// `buf` the notice naming the keys of ASE they give that ase accepts and
/// does not act on (`enable_cluster`, `enable_audit`, ...), NUL-terminated,
/// cut to `buf_len` bytes; an empty string when there are none. A host shows
/// it where the operator looks at configuration time (nginx: a `notice`
/// line of `nginx -t`).
///
/// `buf` is the caller's; NULL or 0 bytes writes nothing. Errors:
/// `ASE_ERR_NULL_PARAMETER` (NULL path data with a non-zero length),
/// `ASE_ERR_INVALID_UTF8`, `ASE_ERR_CONFIG` (the file is missing or
/// invalid: `ase_config_check` says why); `buf` is written only on success.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_config_notice(
    config_path: ase_str,
    buf: *mut c_char,
    buf_len: usize,
) -> ase_result {
    run(|| {
        let path = config_file(config_path).map_err(|(code, _)| code)?;
        let config = crate::load::load_config(path).map_err(|_| ASE_ERR_CONFIG)?;
        write_error(buf, buf_len, &config.notice().unwrap_or_default());
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::{ASE_ACTION_ALLOW, ASE_ACTION_BLOCK, ASE_OK, ASE_REASON_FAIL_MODE};

    fn verdict_for(conf: &str) -> (ase_result, ase_verdict) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ase.conf");
        std::fs::write(&path, conf).unwrap();
        let p = path.to_str().unwrap();
        let mut v = std::mem::MaybeUninit::<ase_verdict>::zeroed();
        let rc = ase_config_fail_verdict(ase_str::from_bytes(p.as_bytes()), v.as_mut_ptr());
        // SAFETY: zeroed is a valid ase_verdict (NULL strings of length 0).
        (rc, unsafe { v.assume_init() })
    }

    fn text(s: ase_str) -> String {
        // SAFETY: the verdict's strings are static.
        let b = unsafe { s.as_bytes() }.unwrap_or_default();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn open_allows_and_closed_blocks_as_an_engine_in_fail_mode_does() {
        let (rc, v) = verdict_for("fail_mode=open\n");
        assert_eq!(rc, ASE_OK);
        assert_eq!(
            (v.action, v.reason, v.status),
            (ASE_ACTION_ALLOW, ASE_REASON_FAIL_MODE, 0)
        );
        let (rc, v) = verdict_for("fail_mode=closed\n");
        assert_eq!(rc, ASE_OK);
        assert_eq!(
            (v.action, v.reason, v.status),
            (ASE_ACTION_BLOCK, ASE_REASON_FAIL_MODE, 403)
        );
        assert_eq!(text(v.status_text), "Forbidden");
        assert_eq!(text(v.body), "Error: Unauthorized");
    }

    /// The export of this file is checked as those of `mod.rs` are.
    #[test]
    fn the_export_is_inside_the_panic_boundary() {
        let src = include_str!("config_info.rs");
        let at = src
            .find("pub extern \"C\" fn ase_config_fail_verdict")
            .unwrap();
        let body = &src[at + src[at..].find('{').unwrap() + 1..];
        assert!(
            body.trim_start().starts_with("run("),
            "not wrapped in run()"
        );
    }

    #[test]
    fn errors_leave_the_verdict_unwritten() {
        let (rc, v) = verdict_for("fail_mode=sideways\n");
        assert_eq!(rc, ASE_ERR_CONFIG);
        assert_eq!(v.status, 0);
        let rc = ase_config_fail_verdict(
            ase_str::from_bytes(b"/nonexistent/ase.conf"),
            std::ptr::null_mut(),
        );
        assert_eq!(rc, ASE_ERR_NULL_PARAMETER);
        let mut v = std::mem::MaybeUninit::<ase_verdict>::zeroed();
        let rc = ase_config_fail_verdict(
            ase_str::from_bytes(b"/nonexistent/ase.conf"),
            v.as_mut_ptr(),
        );
        assert_eq!(rc, ASE_ERR_CONFIG);
    }
}

#[cfg(test)]
mod notice_tests {
    use super::*;
    use crate::ffi::ASE_OK;

    #[test]
    fn the_notice_names_the_keys_and_is_empty_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ase.conf");
        let p = path.to_str().unwrap().to_string();
        let notice = |conf: &str| {
            std::fs::write(&path, conf).unwrap();
            let mut buf = [1 as c_char; 256];
            let rc = ase_config_notice(ase_str::from_bytes(p.as_bytes()), buf.as_mut_ptr(), 256);
            // SAFETY: written NUL-terminated on ASE_OK.
            let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
            (rc, s.to_string_lossy().into_owned())
        };
        let (rc, n) = notice("enable_cluster=true\nenable_firewall=true\n");
        assert_eq!(rc, ASE_OK);
        assert!(n.ends_with(": enable_cluster"), "{n}");
        assert_eq!(notice("enable_firewall=true\n"), (ASE_OK, String::new()));
        assert_eq!(notice("enable_cluster=maybe\n").0, ASE_ERR_CONFIG);
    }
}
