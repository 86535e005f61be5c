//! The `strom` command: see `strom --help`, and `src/cli/` for each subcommand.

/// mimalloc rather than the system allocator: produce and fetch move megabyte buffers,
/// which glibc's malloc hands out as fresh mmaps, page-faulted in and unmapped again on
/// every request. mimalloc reuses them (see BENCHMARKS.md for the measured difference).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    strom::cli::main()
}
