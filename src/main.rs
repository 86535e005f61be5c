//! The `strom` command: see `strom --help`, and `src/cli/` for each subcommand.

fn main() -> std::process::ExitCode {
    strom::cli::main()
}
