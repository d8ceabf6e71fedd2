//! The `roost` command line. Subcommands live in [`cli`].

mod alloc;
mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
