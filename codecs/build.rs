//! Links Debian's AMR-WB libraries found with pkg-config: opencore-amrwb (decoder) and
//! vo-amrwbenc (encoder). No vendored C: a missing `-dev` package is a build error that names it.

fn main() {
    for (lib, package) in [("opencore-amrwb", "libopencore-amrwb-dev"), ("vo-amrwbenc", "libvo-amrwbenc-dev")] {
        if let Err(err) = pkg_config::Config::new().probe(lib) {
            panic!("pkg-config could not find {lib} (install the Debian package {package}): {err}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
