//! Every byte the CLI prints goes through here. `println!` panics when stdout is a
//! closed pipe (`strom topic list | head -1`), and `eprintln!` when stderr is; here a
//! closed stdout ends the command quietly with status 0, as it does for `cat` and
//! `grep` (which die of SIGPIPE, a signal Rust ignores), and a closed stderr loses the
//! message rather than the command.

use std::fmt;
use std::io::{ErrorKind, Write};

/// Why a command ended before it finished its work.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// A failure, reported on stderr; the exit status is 1.
    Failed(String),
    /// Whoever read our stdout went away: a normal end, status 0.
    OutputClosed,
    /// SIGINT or SIGTERM (the number) ended the command after it cleaned up; the exit
    /// status is 128 plus the number, as a shell reports a process the signal killed.
    Interrupted(i32),
}

impl From<String> for Stop {
    fn from(message: String) -> Stop {
        Stop::Failed(message)
    }
}

impl From<&str> for Stop {
    fn from(message: &str) -> Stop {
        Stop::Failed(message.to_string())
    }
}

/// Writes `bytes` to stdout and flushes them: one write for a whole batch of lines,
/// since a line-buffered stdout would make a syscall per line.
pub fn write_out(bytes: &[u8]) -> Result<(), Stop> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::BrokenPipe => Err(Stop::OutputClosed),
        Err(err) => Err(Stop::Failed(format!(
            "cannot write to standard output: {err}"
        ))),
    }
}

/// Writes one line to stdout (see [`write_out`]).
pub fn line(args: fmt::Arguments) -> Result<(), Stop> {
    let mut text = args.to_string();
    text.push('\n');
    write_out(text.as_bytes())
}

/// Writes to stderr, best effort: a message nobody can read is not worth a panic, and
/// a lost progress line must not stop the work.
pub fn write_err(args: fmt::Arguments) {
    let _ = std::io::stderr().write_fmt(args);
}

/// `println!` that returns `Err(Stop::OutputClosed)` instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics.
macro_rules! noteln {
    () => {
        $crate::cli::output::write_err(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that never panics.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::cli::output::write_err(format_args!($($arg)*))
    };
}

pub(crate) use {note, noteln, outln};
