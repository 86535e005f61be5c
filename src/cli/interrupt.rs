//! SIGINT and SIGTERM for commands that must clean up before they exit: the first one
//! is noted for the command to see between its steps, a second ends the process at
//! once (a command stuck in a call to an unreachable server can still be stopped).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

/// The first SIGINT or SIGTERM seen since `watch`, if any.
#[derive(Clone)]
pub struct Interrupts(Arc<AtomicI32>);

impl Interrupts {
    /// Starts watching for both signals (their default action, ending the process, is
    /// replaced from now on).
    pub fn watch() -> Result<Interrupts, String> {
        let mut int =
            signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch for SIGINT: {e}"))?;
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| format!("cannot watch for SIGTERM: {e}"))?;
        let seen = Arc::new(AtomicI32::new(0));
        let noted = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let number = tokio::select! {
                    _ = int.recv() => libc::SIGINT,
                    _ = term.recv() => libc::SIGTERM,
                };
                if noted
                    .compare_exchange(0, number, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    std::process::exit(128 + number);
                }
            }
        });
        Ok(Interrupts(seen))
    }

    /// The signal's number once one has come.
    pub fn seen(&self) -> Option<i32> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            number => Some(number),
        }
    }
}
