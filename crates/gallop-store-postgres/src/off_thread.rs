//! Dropping the store's connections safely from anywhere.
//!
//! The synchronous `postgres` client closes its connection with a `block_on` of its own
//! runtime, which panics on a thread that already runs a tokio runtime ("Cannot start a
//! runtime from within a runtime"). A store is often dropped on such a thread (an `Arc` held by
//! an async server, a `#[tokio::test]`), so what holds connections goes to a plain thread to be
//! dropped there.

use std::ops::Deref;

/// Holds `T`; when dropped inside a tokio runtime, drops `T` on a new plain thread instead.
pub(crate) struct DropOffThread<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> DropOffThread<T> {
    pub(crate) fn new(value: T) -> Self {
        DropOffThread(Some(value))
    }
}

impl<T: Send + 'static> Deref for DropOffThread<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0
            .as_ref()
            .expect("the value is taken only when dropped")
    }
}

impl<T: Send + 'static> Drop for DropOffThread<T> {
    fn drop(&mut self) {
        let Some(value) = self.0.take() else { return };
        // Outside any runtime the client's own block_on is fine: drop here, synchronously.
        if tokio::runtime::Handle::try_current().is_err() {
            return drop(value);
        }
        // The value is sent only once the thread runs: a failed spawn must not drop it here.
        let (send, receive) = std::sync::mpsc::channel::<T>();
        let spawned = std::thread::Builder::new()
            .name("gallop-pg-close".into())
            .spawn(move || drop(receive.recv()));
        match spawned {
            Ok(_) => {
                let _ = send.send(value);
            }
            Err(e) => {
                // Leaking the connections (the server closes them when the process ends) is
                // better than the panic.
                tracing::warn!("PostgreSQL connections left open: no thread to close them: {e}");
                std::mem::forget(value);
            }
        }
    }
}
