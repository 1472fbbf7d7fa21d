//! [`abi_enum!`]: ties a Rust enum to the `uint32_t` constants that stand for
//! it in C, in the manner of rustls-ffi's `u32_enum_builder!`.
//!
//! cbindgen writes into `include/ase.h` only the `pub const` items it reads in
//! the source, and it does not expand macros (its `[parse.expand]` option
//! would, but only by compiling the crate with a nightly `rustc`, which `make
//! header` and CI should not need). So each C constant stays a literal `pub
//! const` line with its doc comment, and one invocation of this macro per enum
//! lists the pairs (C constant, Rust variant). From that list follow:
//!
//! - `From<Enum> for u32`, an exhaustive `match`: a variant added to the Rust
//!   enum without a C constant does not compile;
//! - `TryFrom<u32> for Enum`, rejecting any other value with
//!   `ASE_ERR_INVALID_ARGUMENT` (C may pass any integer; a Rust enum holding an
//!   undeclared value would be undefined behaviour);
//! - compile-time checks that each constant equals its variant's
//!   discriminant, and, with `count`, that the given counts equal the number
//!   of variants and that every value is below it (so the value indexes a
//!   per-variant array, as `ase_stats` does with reasons).

/// See the module documentation.
macro_rules! abi_enum {
    (
        $rust:ident as $c:ty, count: [$($count:expr),+] {
            $($konst:ident => $variant:ident),+ $(,)?
        }
    ) => {
        const _: () = {
            let n = [$($konst),+].len();
            $(assert!($count == n);)+
            $(assert!(($konst as usize) < n);)+
        };
        abi_enum!($rust as $c { $($konst => $variant),+ });
    };
    (
        $rust:ident as $c:ty {
            $($konst:ident => $variant:ident),+ $(,)?
        }
    ) => {
        const _: () = {
            $(assert!($konst == $rust::$variant as $c);)+
        };

        impl From<$rust> for $c {
            fn from(v: $rust) -> $c {
                match v {
                    $($rust::$variant => $konst,)+
                }
            }
        }

        impl TryFrom<$c> for $rust {
            type Error = $crate::ffi::types::ase_result;

            /// The variant for a C value; `ASE_ERR_INVALID_ARGUMENT` for any other.
            fn try_from(v: $c) -> Result<$rust, Self::Error> {
                match v {
                    $($konst => Ok($rust::$variant),)+
                    _ => Err($crate::ffi::types::ASE_ERR_INVALID_ARGUMENT),
                }
            }
        }
    };
}

pub(crate) use abi_enum;
