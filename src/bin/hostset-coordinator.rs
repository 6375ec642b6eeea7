//! `hostset-coordinator`: the fleet's coordinator. Everything lives in `hostset::coordinator`.

fn main() -> std::process::ExitCode {
    hostset::coordinator::main()
}
