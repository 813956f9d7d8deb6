//! `adanorm-onnx`: the command line; `entry::main_with` does the work and chooses the status.

fn main() {
    std::process::exit(adanorm_onnx::entry::main_with(std::env::args_os()));
}
