//! Job events from the database: a thread with a connection of its own LISTENs on the jobs
//! channel and forwards each job id into the store's broadcast channel, reconnecting when the
//! connection drops. Writes from every process (this one included) arrive this way, in commit
//! order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use gallop_store::{StoreError, StoreResult};
use postgres::fallible_iterator::FallibleIterator;
use tokio::sync::broadcast;

use crate::schema::CHANNEL;

/// How often the thread looks up from waiting to see whether the store was dropped.
const POLL: Duration = Duration::from_millis(200);
/// After this long without a notification the connection is checked with a query.
const CHECK_QUIET: Duration = Duration::from_secs(10);
/// Longest wait between two reconnection attempts.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The listening thread; stops when dropped.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Starts listening and returns once the first LISTEN is in place, so no write committed
    /// after this returns goes unannounced.
    pub fn start(
        config: postgres::Config,
        events: broadcast::Sender<String>,
        connect_timeout: Duration,
    ) -> StoreResult<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("gallop-pg-listen".into())
                .spawn(move || run(config, events, stop, ready_tx))
                .map_err(|e| StoreError::Backend(format!("listener thread: {e}")))?
        };
        let mut listener = Listener {
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(connect_timeout) {
            Ok(Ok(())) => Ok(listener),
            Ok(Err(e)) => {
                listener.shut_down();
                Err(StoreError::Unavailable(format!("LISTEN {CHANNEL}: {e}")))
            }
            Err(_) => {
                listener.shut_down();
                Err(StoreError::Unavailable(format!(
                    "LISTEN {CHANNEL}: no connection within {connect_timeout:?}"
                )))
            }
        }
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn run(
    config: postgres::Config,
    events: broadcast::Sender<String>,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut retry = POLL;
    while !stop.load(Ordering::Relaxed) {
        let listening = config.connect(postgres::NoTls).and_then(|mut client| {
            client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
            Ok(client)
        });
        let mut client = match listening {
            Ok(client) => client,
            Err(e) => {
                // The first failure is the caller's to report; later ones are outages we wait out.
                match ready.take() {
                    Some(ready) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                    None => tracing::warn!("job events: reconnecting to PostgreSQL: {e}"),
                }
                sleep_unless_stopped(&stop, retry);
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
        };
        retry = POLL;
        match ready.take() {
            Some(ready) => {
                let _ = ready.send(Ok(()));
            }
            None => tracing::info!("job events: listening again"),
        }
        if let Err(e) = forward(&mut client, &events, &stop) {
            tracing::warn!("job events: connection lost: {e}");
        }
    }
}

/// Forwards notifications until the store is dropped (Ok) or the connection fails (Err).
fn forward(
    client: &mut postgres::Client,
    events: &broadcast::Sender<String>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut quiet = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let mut heard = false;
        {
            let mut notifications = client.notifications();
            let mut waiting = notifications.timeout_iter(POLL);
            while let Some(note) = waiting.next().map_err(|e| e.to_string())? {
                // No subscriber is fine.
                let _ = events.send(note.payload().to_string());
                heard = true;
            }
        }
        quiet = if heard { Duration::ZERO } else { quiet + POLL };
        // A silent connection may be a dead one (a server gone without closing the socket):
        // ask it something now and then.
        if client.is_closed() || quiet >= CHECK_QUIET {
            client.simple_query("").map_err(|e| e.to_string())?;
            quiet = Duration::ZERO;
        }
    }
    Ok(())
}

fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) {
    let mut left = total;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let nap = left.min(POLL);
        std::thread::sleep(nap);
        left -= nap;
    }
}
