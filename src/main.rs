//! `adanorm-onnx`: exit 0 on success, 1 on a `verify` mismatch, 2 on any error (printed with its
//! cause chain, naming the file and node).

use clap::Parser;

fn main() {
    let cli = match adanorm_onnx::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match std::panic::catch_unwind(|| adanorm_onnx::cli::run(cli)) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            2
        }
        Err(_) => {
            eprintln!(
                "error: internal error (a bug in adanorm-onnx; please report it with the model)"
            );
            2
        }
    };
    std::process::exit(code);
}
