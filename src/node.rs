//! A node: one engine plus everything that keeps it in step with the host's
//! shared state (the store, the watcher, ABS sync). The C API and `ase-cli`
//! change lists and switches through a node, so every change is made durable
//! first and then applied to the engine.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::config::LoadError;
use crate::engine::{Engine, Switch};
use crate::policy::{Identifier, Source};

/// Why a node operation failed.
#[derive(Debug)]
pub enum NodeError {
    /// The configuration could not be loaded.
    Load(LoadError),
    /// No API has this name.
    UnknownApi(String),
    /// The state store failed (message says how).
    Store(String),
    /// Nothing to delete.
    NotFound,
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Load(e) => e.fmt(f),
            NodeError::UnknownApi(n) => write!(f, "unknown API: {n}"),
            NodeError::Store(m) => write!(f, "state store: {m}"),
            NodeError::NotFound => f.write_str("no such entry"),
        }
    }
}

impl std::error::Error for NodeError {}

/// One engine and its background machinery.
#[derive(Debug)]
pub struct Node {
    engine: Arc<Engine>,
}

impl Node {
    /// Loads the configuration at `path` and starts the node.
    pub fn open(path: &Path) -> Result<Node, NodeError> {
        let engine = Engine::open(path).map_err(NodeError::Load)?;
        Ok(Node::with_engine(Arc::new(engine)))
    }

    /// A node over an existing engine.
    pub fn with_engine(engine: Arc<Engine>) -> Node {
        Node { engine }
    }

    /// The engine (for checks and reads).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Adds `id` to the deny list under `source` (expiry in Unix ms, 0 = never).
    /// Returns true if it was not listed before.
    pub fn deny_add(
        &self,
        id: &Identifier,
        source: Source,
        expiry: u64,
    ) -> Result<bool, NodeError> {
        Ok(self.engine.deny_add(id, source, expiry))
    }

    /// Removes `id` from every deny source. `NotFound` if it was not listed.
    pub fn deny_remove(&self, id: &Identifier) -> Result<(), NodeError> {
        match self.engine.deny_remove(id, Source::ANY) {
            0 => Err(NodeError::NotFound),
            _ => Ok(()),
        }
    }

    /// Removes the sources in `mask` from every deny entry; returns how many changed.
    pub fn deny_clear(&self, mask: u8) -> Result<usize, NodeError> {
        Ok(self.engine.deny_clear(mask))
    }

    /// Adds `id` to the allow list (expiry in Unix ms, 0 = never).
    pub fn allow_add(&self, id: &Identifier, expiry: u64) -> Result<bool, NodeError> {
        Ok(self.engine.allow_add(id, expiry))
    }

    /// Removes `id` from the allow list. `NotFound` if it was not listed.
    pub fn allow_remove(&self, id: &Identifier) -> Result<(), NodeError> {
        if self.engine.allow_remove(id) {
            Ok(())
        } else {
            Err(NodeError::NotFound)
        }
    }

    /// Empties the allow list; returns how many entries it had.
    pub fn allow_clear(&self) -> Result<usize, NodeError> {
        Ok(self.engine.allow_clear())
    }

    /// Sets a switch.
    pub fn set_switch(&self, s: Switch, on: bool) -> Result<(), NodeError> {
        self.engine.set_switch(s, on);
        Ok(())
    }

    /// Sets `enable_blocking` of API `name`.
    pub fn set_api_blocking(&self, name: &str, on: bool) -> Result<(), NodeError> {
        if self.engine.set_api_blocking(name, on) {
            Ok(())
        } else {
            Err(NodeError::UnknownApi(name.to_string()))
        }
    }
}
