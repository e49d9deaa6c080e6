//! What every scenario keeps while its connections open and run: how many
//! opened and how many failed (with a wake-up for each), and the errors,
//! counted, with the first one kept for the report.

use std::cell::{Cell, RefCell};
use std::fmt::Display;

use tokio::sync::Notify;

use crate::Error;

/// Connections opened and failed, and the errors of a run (one thread).
#[derive(Default)]
pub(crate) struct Tally {
    ready: Cell<usize>,
    failed: Cell<usize>,
    changed: Notify,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
}

impl Tally {
    /// A connection is open and ready.
    pub(crate) fn opened(&self) {
        self.ready.set(self.ready.get() + 1);
        self.changed.notify_one();
    }

    /// A connection could not be opened: `why` counts as an error.
    pub(crate) fn failed(&self, why: impl Display) {
        self.error(why);
        self.failed.set(self.failed.get() + 1);
        self.changed.notify_one();
    }

    /// Counts an error; the first is kept for the report.
    pub(crate) fn error(&self, what: impl Display) {
        self.errors.set(self.errors.get() + 1);
        self.first_error
            .borrow_mut()
            .get_or_insert_with(|| what.to_string());
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.get()
    }

    pub(crate) fn first_error(&self) -> Option<String> {
        self.first_error.borrow().clone()
    }

    /// Connections that could not be opened.
    pub(crate) fn failures(&self) -> usize {
        self.failed.get()
    }

    /// Waits until each of `total` connections opened or failed; returns how
    /// many opened, or an error naming the first failure when none did.
    pub(crate) async fn settled(&self, total: usize, none: &str) -> Result<usize, Error> {
        while self.ready.get() + self.failed.get() < total {
            self.changed.notified().await;
        }
        match self.ready.get() {
            0 => Err(Error::Setup(
                self.first_error().unwrap_or_else(|| none.to_string()),
            )),
            ready => Ok(ready),
        }
    }
}
