//! The program's entry point as a library call, shared by the `adanorm-onnx` binary and the
//! Python package's console script (which runs it in the Python process): arguments in, exit
//! status out — 0 on success, 1 on a `verify` mismatch, 2 on any error (printed with its cause
//! chain, naming the file and node), 141 when stdout's reader went away.

use std::ffi::OsString;

use clap::Parser;

thread_local! {
    /// The last panic's message and place, for the one-line report below.
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Parses `args` (the program name first) and runs the command; never panics or exits.
pub fn main_with<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    // Panics are caught (below, and around tract in `run`/`verify`) and reported as one error
    // line; the default hook would print them first, as if the process had crashed. The hook
    // is the caller's again afterwards (a Python process keeps its own).
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
    }));
    let code = parse_and_run(args);
    std::panic::set_hook(previous);
    code
}

fn parse_and_run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match crate::cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match std::panic::catch_unwind(|| crate::cli::run(cli)) {
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
                return 141;
            }
            eprintln!(
                "error: internal error (a bug in adanorm-onnx; please report it with the model): {what}"
            );
            2
        }
    }
}
