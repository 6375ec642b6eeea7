//! `hostset`: the command line. Everything lives in `hostset::cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    hostset::cli::run(hostset::cli::Cli::parse())
}
