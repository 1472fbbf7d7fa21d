//! Reading the configuration from disk: `ase.conf`, the `abs.conf` beside it,
//! and every `*.json` file of `api_dir`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::policy::api::{Api, ApiError, ApiSet};
use crate::policy::config::{Config, ConfigError, parse_abs_conf, parse_ase_conf};

/// Any error loading the configuration.
#[derive(Debug)]
pub enum LoadError {
    /// A bad or unreadable `ase.conf` / `abs.conf`.
    Config(ConfigError),
    /// A bad or unreadable API JSON file, or an unreadable `api_dir`.
    Api(ApiError),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Config(e) => e.fmt(f),
            LoadError::Api(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LoadError {}

fn unreadable(file: &Path, e: std::io::Error) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: 0,
        key: String::new(),
        message: format!("cannot read: {e}"),
    }
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    let bytes = fs::read(path).map_err(|e| unreadable(path, e))?;
    String::from_utf8(bytes).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        key: String::new(),
        message: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
    })
}

/// The `abs.conf` that goes with the `ase.conf` at `ase_conf`: the one beside it.
pub fn abs_conf_path(ase_conf: &Path) -> PathBuf {
    ase_conf.with_file_name("abs.conf")
}

/// Reads `ase.conf` at `path` and the `abs.conf` beside it (optional).
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let text = read_text(path)?;
    let mut c = parse_ase_conf(&text, path)?;
    let abs = abs_conf_path(path);
    if abs.exists() {
        c.abs = parse_abs_conf(&read_text(&abs)?, &abs)?;
    }
    Ok(c)
}

/// Reads every `*.json` file of `dir` (sorted by name) into an [`ApiSet`].
/// A missing directory is an empty set; an unreadable one is an error.
pub fn load_apis(dir: &Path) -> Result<ApiSet, ApiError> {
    let err = |message: String| ApiError {
        api: dir.display().to_string(),
        message,
    };
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(err(format!("cannot read api_dir: {e}"))),
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
            .collect(),
    };
    files.sort();
    let mut apis = Vec::with_capacity(files.len());
    let mut read: Vec<(String, Vec<u8>)> = Vec::with_capacity(files.len());
    for f in files {
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = fs::read(&f).map_err(|e| ApiError {
            api: name.clone(),
            message: format!("cannot read {}: {e}", f.display()),
        })?;
        apis.push(Api::parse(&name, &bytes).map_err(|mut e| {
            e.message = format!("{}: {}", f.display(), e.message);
            e
        })?);
        read.push((name, bytes));
    }
    let mut set = ApiSet::new(apis)?;
    set.set_source_digest(crate::policy::api::source_digest(
        read.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
    ));
    Ok(set)
}

/// Reads the whole configuration: `ase.conf`, `abs.conf`, and the APIs.
pub fn load(path: &Path) -> Result<(Config, ApiSet), LoadError> {
    let c = load_config(path).map_err(LoadError::Config)?;
    let apis = load_apis(&c.api_dir).map_err(LoadError::Api)?;
    Ok((c, apis))
}
