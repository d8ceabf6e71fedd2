//! The `roost` command line. Subcommands live in [`cli`].

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
