//! The result codes of `include/ase.h` as a Rust enum, and their messages.

use super::abi_enum::abi_enum;
use super::types::*;

/// The result codes as a Rust enum, for their messages (`ase_result_str`).
/// The values are the `ASE_*` constants, so they are written once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ResultCode {
    /// `ASE_OK`.
    Ok = ASE_OK,
    /// `ASE_ERR_NULL_PARAMETER`.
    NullParameter = ASE_ERR_NULL_PARAMETER,
    /// `ASE_ERR_INVALID_UTF8`.
    InvalidUtf8 = ASE_ERR_INVALID_UTF8,
    /// `ASE_ERR_INVALID_ARGUMENT`.
    InvalidArgument = ASE_ERR_INVALID_ARGUMENT,
    /// `ASE_ERR_INVALID_CLIENT_IP`.
    InvalidClientIp = ASE_ERR_INVALID_CLIENT_IP,
    /// `ASE_ERR_INVALID_HEADER`.
    InvalidHeader = ASE_ERR_INVALID_HEADER,
    /// `ASE_ERR_INVALID_IDENTIFIER`.
    InvalidIdentifier = ASE_ERR_INVALID_IDENTIFIER,
    /// `ASE_ERR_NOT_FOUND`.
    NotFound = ASE_ERR_NOT_FOUND,
    /// `ASE_ERR_UNKNOWN_API`.
    UnknownApi = ASE_ERR_UNKNOWN_API,
    /// `ASE_ERR_CONFIG`.
    Config = ASE_ERR_CONFIG,
    /// `ASE_ERR_API_JSON`.
    ApiJson = ASE_ERR_API_JSON,
    /// `ASE_ERR_STORE`.
    Store = ASE_ERR_STORE,
    /// `ASE_ERR_ABS`.
    Abs = ASE_ERR_ABS,
    /// `ASE_ERR_PANIC`.
    Panic = ASE_ERR_PANIC,
}

abi_enum!(ResultCode as ase_result {
    ASE_OK => Ok,
    ASE_ERR_NULL_PARAMETER => NullParameter,
    ASE_ERR_INVALID_UTF8 => InvalidUtf8,
    ASE_ERR_INVALID_ARGUMENT => InvalidArgument,
    ASE_ERR_INVALID_CLIENT_IP => InvalidClientIp,
    ASE_ERR_INVALID_HEADER => InvalidHeader,
    ASE_ERR_INVALID_IDENTIFIER => InvalidIdentifier,
    ASE_ERR_NOT_FOUND => NotFound,
    ASE_ERR_UNKNOWN_API => UnknownApi,
    ASE_ERR_CONFIG => Config,
    ASE_ERR_API_JSON => ApiJson,
    ASE_ERR_STORE => Store,
    ASE_ERR_ABS => Abs,
    ASE_ERR_PANIC => Panic,
});

impl ResultCode {
    /// What `ase_result_str` returns: a static NUL-terminated message.
    pub fn message(self) -> &'static std::ffi::CStr {
        match self {
            ResultCode::Ok => c"ok",
            ResultCode::NullParameter => c"a required pointer was NULL",
            ResultCode::InvalidUtf8 => c"a string is not valid UTF-8",
            ResultCode::InvalidArgument => c"an argument is out of range",
            ResultCode::InvalidClientIp => c"the client address is not an IP address",
            ResultCode::InvalidHeader => c"a request header has a NULL name or value",
            ResultCode::InvalidIdentifier => {
                c"invalid identifier: empty value, bad IP or CIDR, or wrong name"
            }
            ResultCode::NotFound => c"no such entry",
            ResultCode::UnknownApi => c"no API has this name",
            ResultCode::Config => c"invalid configuration file",
            ResultCode::ApiJson => c"invalid API JSON file",
            ResultCode::Store => c"the state store failed",
            ResultCode::Abs => c"the ABS operation failed",
            ResultCode::Panic => c"internal error (panic caught); the call had no effect",
        }
    }
}
