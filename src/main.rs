//! `adanorm-onnx`: exit 0 on success, 1 on a `verify` mismatch, 2 on any error (printed with its
//! cause chain, naming the file and node).

use clap::Parser;

thread_local! {
    /// The last panic's message and place, for the one-line report below.
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn main() {
    // Panics are caught (below, and around tract in `run`/`verify`) and reported as one error
    // line; the default hook would print them first, as if the process had crashed.
    std::panic::set_hook(Box::new(|info| {
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
    }));
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
            let what = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_default();
            // `adanorm-onnx inspect m.onnx | head`: the reader went away. Not a bug; end quietly
            // with the status a shell gives a process killed by SIGPIPE.
            if what.contains("failed printing to stdout") && what.contains("Broken pipe") {
                std::process::exit(141);
            }
            eprintln!(
                "error: internal error (a bug in adanorm-onnx; please report it with the model): {what}"
            );
            2
        }
    };
    std::process::exit(code);
}
