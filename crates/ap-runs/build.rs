//! Links libtorch_cuda into the `ap` binary, examples and tests even though no symbol of
//! it is referenced: the linker's `--as-needed` would drop it, and libtorch then reports
//! no CUDA device (a known tch pitfall). Only when the libtorch in use has CUDA.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Some(dir) = std::env::var_os("LIBTORCH") {
        let lib = std::path::Path::new(&dir).join("lib");
        if lib.join("libtorch_cuda.so").exists() {
            println!(
                "cargo:rustc-link-arg=-Wl,--no-as-needed,-L{},-ltorch_cuda,--as-needed",
                lib.display()
            );
        }
    }
}
