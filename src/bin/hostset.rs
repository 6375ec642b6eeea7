//! `hostset`: the command line. Everything lives in `hostset::cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // `hostset get nodes | head` must end quietly, as Unix tools do, not panic on a
    // closed pipe: restore SIGPIPE's default action (Rust ignores it).
    // SAFETY: called first, before any other thread exists.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
    hostset::cli::run(hostset::cli::Cli::parse())
}
