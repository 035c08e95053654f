use which::which;

/// The kernel object is linked by `bpf-linker`; rebuild when the linker found on PATH changes.
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not on PATH: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
