//! Exposes the committed C header to crates that link `ase` (`DEP_ASE_INCLUDE`).
//! The header is generated only by `make header`; building never needs cbindgen.

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    println!("cargo:include={}", dir.display());
    println!("cargo:rerun-if-changed=include/ase.h");
}
