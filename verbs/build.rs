//! Compiles the C shim over libibverbs' static-inline verbs and links libibverbs.
//! Needs Debian's `libibverbs-dev` (headers and the unversioned library link).

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.c");
    if !std::path::Path::new("/usr/include/infiniband/verbs.h").exists() {
        println!(
            "cargo:warning=infiniband/verbs.h not found: install libibverbs-dev \
             (apt-get install libibverbs-dev), or build without the `rdma` feature"
        );
    }
    cc::Build::new().file("csrc/shim.c").warnings(true).extra_warnings(true).compile("bwverbs");
    println!("cargo:rustc-link-lib=ibverbs");
}
