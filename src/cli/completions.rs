//! `hostset completions SHELL`: the shell's completion script for `hostset`, on stdout.
//!
//! The packages ship the bash and zsh scripts this prints (generated at package build time
//! by `packaging/build`), so the script always matches the binary beside it.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

/// Print the completion script for SHELL on stdout.
///
/// The .deb and .rpm packages install the bash and zsh scripts already; this is for
/// installs from source and other shells.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hostset completions bash > /usr/share/bash-completion/completions/hostset
  hostset completions zsh > /usr/local/share/zsh/site-functions/_hostset
  source <(hostset completions bash)          # this shell only")]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Generated into memory first: clap_complete panics on a failed write (a closed pipe),
    // and a write error here should be an error message, not a panic.
    let mut script = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut super::Cli::command(),
        "hostset",
        &mut script,
    );
    std::io::stdout()
        .lock()
        .write_all(&script)
        .context("writing the completion script to stdout")?;
    Ok(ExitCode::SUCCESS)
}
