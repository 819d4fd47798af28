//! Declares the `loom` cfg so `cfg(loom)` code (the model tests of the shared-memory wake
//! protocol, see `src/sync.rs`) does not trip the `unexpected_cfgs` lint.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
