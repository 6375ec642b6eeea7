//! `hostsetd`: the node agent. Everything lives in `hostset::agent`.

fn main() -> std::process::ExitCode {
    hostset::agent::main()
}
