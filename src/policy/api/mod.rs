//! API definitions (ASE's `api_metadata` JSON) and request-to-API matching.
//!
//! Every field of ASE's inline and sideband API JSON parses (unknown fields
//! are ignored, a field of the wrong type is an error naming the file and
//! the field); the fields that decide blocking are compiled into [`Api`].
//!
//! Matching, where ASE's documentation is silent (docs/design.md, Where
//! ASE's documentation is silent), takes the exact hostname
//! (case-insensitive, port ignored) before `*`, then the longest `url`
//! prefix on a `/` boundary. Paths compare case-sensitively, after the
//! query string is cut off and `%XX`, `//`, `.` and `..` are normalised, so
//! `/shop/../admin` and `/%61dmin` reach the same API as `/admin`.
//!
//! `definition.rs` holds [`Api`] and its checks, `json.rs` the JSON
//! shapes, `path.rs` the path normalisation, `index.rs` the lookup tables
//! of an [`ApiSet`].

mod definition;
mod index;
mod json;
mod path;

pub(crate) use definition::media_type;
pub use definition::{Api, ApiError, Decoy, Jwt, JwtLocation, Pattern, Redirect, Response, proto};
pub use index::{ApiSet, source_digest};
pub(crate) use path::NormPath;
