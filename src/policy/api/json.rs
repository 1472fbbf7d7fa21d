//! The shapes of ASE's API JSON (`api_metadata`), as serde reads them.
//! Every field ASE documents parses, so a file with a field of the wrong
//! type is refused naming that field; unknown fields are ignored. Only
//! some fields act in-process: [`Api::parse`](super::Api::parse) compiles
//! those.

use serde::Deserialize;

/// Reads `api_metadata` out of one API JSON document; the error names the
/// field at fault.
pub(super) fn read(json: &[u8]) -> Result<Meta, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("invalid JSON: {e}"))?;
    let Some(meta) = doc.get("api_metadata").filter(|m| m.is_object()) else {
        return Err("api_metadata: missing; expected {\"api_metadata\": {...}}".into());
    };
    serde_path_to_error::deserialize(meta).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        format!("api_metadata{at}: {}", e.into_inner())
    })
}

/// A status code given as a number (`200`) or a string (`"401"`); `""` means unset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Code(pub(super) Option<u16>);

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Code, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let bad = || serde::de::Error::custom("expected an HTTP status code from 100 to 599");
        match Raw::deserialize(d).map_err(|_| bad())? {
            Raw::N(n) if (100..=599).contains(&n) => Ok(Code(Some(n as u16))),
            Raw::S(s) if s.trim().is_empty() => Ok(Code(None)),
            Raw::S(s) => match s.trim().parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => Ok(Code(Some(n))),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

#[allow(
    dead_code,
    reason = "fields parsed to validate ASE's format; not every one acts in-process"
)]
#[derive(Deserialize)]
pub(super) struct Meta {
    #[serde(default)]
    pub(super) protocol: String,
    pub(super) url: String,
    pub(super) hostname: String,
    #[serde(default)]
    pub(super) cookie: String,
    #[serde(default)]
    pub(super) cookie_idle_timeout: String,
    #[serde(default)]
    pub(super) logout_api_enabled: bool,
    #[serde(default)]
    pub(super) cookie_persistence_enabled: bool,
    #[serde(default)]
    pub(super) oauth2_access_token: bool,
    #[serde(default)]
    pub(super) is_token_mandatory: bool,
    #[serde(default)]
    pub(super) apikey_qs: String,
    #[serde(default)]
    pub(super) apikey_header: String,
    #[serde(default)]
    pub(super) login_url: String,
    #[serde(default = "yes")]
    pub(super) enable_blocking: bool,
    #[serde(default)]
    pub(super) api_mapping: Option<ApiMapping>,
    #[serde(default)]
    pub(super) api_pattern_enforcement: Option<PatternJson>,
    #[serde(default)]
    pub(super) flow_control: Option<FlowControl>,
    #[serde(default)]
    pub(super) api_memory_size: String,
    #[serde(default)]
    pub(super) health_check: bool,
    #[serde(default)]
    pub(super) health_check_interval: Option<u64>,
    #[serde(default)]
    pub(super) health_retry_count: Option<u64>,
    #[serde(default)]
    pub(super) health_url: String,
    #[serde(default)]
    pub(super) server_ssl: bool,
    #[serde(default)]
    pub(super) servers: Vec<Server>,
    #[serde(default)]
    pub(super) decoy_config: Option<DecoyJson>,
    #[serde(default)]
    pub(super) username_header: String,
    #[serde(default)]
    pub(super) jwt: Option<JwtJson>,
}

fn yes() -> bool {
    true
}

#[allow(dead_code, reason = "parsed for validation only")]
#[derive(Deserialize)]
pub(super) struct ApiMapping {
    #[serde(default)]
    pub(super) internal_url: String,
}

#[allow(dead_code, reason = "parsed for validation only")]
#[derive(Deserialize)]
pub(super) struct FlowControl {
    #[serde(default)]
    pub(super) client_spike_threshold: String,
    #[serde(default)]
    pub(super) server_connection_queueing: bool,
}

#[allow(dead_code, reason = "parsed for validation only")]
#[derive(Deserialize)]
pub(super) struct Server {
    pub(super) host: String,
    pub(super) port: u16,
    #[serde(default)]
    pub(super) server_connection_quota: Option<u64>,
    #[serde(default)]
    pub(super) server_spike_threshold: String,
}

#[derive(Deserialize)]
pub(super) struct PatternJson {
    #[serde(default)]
    pub(super) protocol_allowed: String,
    #[serde(default)]
    pub(super) http_redirect: Option<RedirectJson>,
    #[serde(default)]
    pub(super) methods_allowed: Vec<String>,
    #[serde(default)]
    pub(super) content_type_allowed: String,
    #[serde(default)]
    pub(super) error_code: Code,
    #[serde(default)]
    pub(super) error_def: String,
    #[serde(default)]
    pub(super) error_message_body: String,
}

#[derive(Deserialize)]
pub(super) struct RedirectJson {
    #[serde(default)]
    pub(super) response_code: Code,
    #[serde(default)]
    pub(super) response_def: String,
    #[serde(default)]
    pub(super) https_url: String,
}

#[derive(Deserialize)]
pub(super) struct DecoyJson {
    #[serde(default)]
    pub(super) decoy_enabled: bool,
    #[serde(default)]
    pub(super) response_code: Code,
    #[serde(default)]
    pub(super) response_def: String,
    #[serde(default)]
    pub(super) response_message: String,
    #[serde(default)]
    pub(super) decoy_subpaths: Vec<String>,
}

#[derive(Deserialize)]
pub(super) struct JwtJson {
    #[serde(default)]
    pub(super) location: String,
    #[serde(default)]
    pub(super) username: String,
    #[serde(default)]
    pub(super) clientid: String,
}
