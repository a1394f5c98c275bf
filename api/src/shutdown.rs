//! Stopping on SIGINT/SIGTERM, for the servers and the operator tools alike.
//!
//! The first signal asks every role and tool to stop cleanly: servers drain what is in flight,
//! tools keep their checkpoint or progress and say how to resume (they end with
//! [`Interrupted`], exit code 130). A second signal ends the process at once, also with 130.
//!
//! Shutdown follows mini-redis: one signal future fans out through a watch channel; every task
//! holds a clone of [`Shutdown`] and either waits for it or checks it between units of work.

use tokio::sync::watch;

/// The exit code of a process stopped by a signal (128 + SIGINT), cleanly or at once.
pub const INTERRUPTED_EXIT: i32 = 130;

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    Signals::install().next().await;
}

/// SIGINT and SIGTERM, installed once so that no signal is missed between two waits.
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        {
            let interrupt = async {
                match self.interrupt.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let terminate = async {
                match self.terminate.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! { _ = interrupt => {}, _ = terminate => {} }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A shutdown that several tasks can wait for or check.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A shutdown triggered when `signal` resolves.
    pub fn on(signal: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            signal.await;
            let _ = tx.send(true);
        });
        Self(rx)
    }

    /// The process's shutdown: requested by the first SIGINT/SIGTERM; the second one ends the
    /// process at once with [`INTERRUPTED_EXIT`].
    pub fn on_signals() -> Self {
        let (tx, rx) = watch::channel(false);
        let mut signals = Signals::install();
        tokio::spawn(async move {
            signals.next().await;
            tracing::warn!("shutdown requested, stopping cleanly (a second signal exits at once)");
            let _ = tx.send(true);
            signals.next().await;
            eprintln!("member: second signal, exiting at once");
            std::process::exit(INTERRUPTED_EXIT);
        });
        Self(rx)
    }

    /// A shutdown that is never requested (library callers and tests that stop by other means).
    pub fn never() -> Self {
        Self::on(std::future::pending())
    }

    /// Whether the shutdown was requested (for loops that check between units of work).
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the shutdown is requested.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    /// Resolves once the shutdown is requested, without consuming this handle.
    pub async fn requested(&self) {
        self.clone().wait().await;
    }
}

/// The error a tool ends with when a signal stopped it cleanly: says what was kept and how to
/// resume. `main` prints it and exits with [`INTERRUPTED_EXIT`].
#[derive(Debug, thiserror::Error)]
#[error("stopped by a signal: {resume}")]
pub struct Interrupted {
    /// What was kept and how to go on, for the operator.
    pub resume: String,
}

impl Interrupted {
    pub fn new(resume: impl Into<String>) -> Self {
        Self {
            resume: resume.into(),
        }
    }
}
