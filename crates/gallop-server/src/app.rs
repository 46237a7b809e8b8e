//! Building and running one gallop server: open the store and storage, make the first token,
//! start the worker, bind, and serve the router until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{ServerConfig, public_base};
use crate::http::metrics::Metrics;
use crate::http::{AppState, SharedState, router};
use crate::keys::KeyVault;
use crate::signing::UrlSigner;
use crate::storage::Storage;
use crate::store::{JobStore, SqliteStore, StoreConfig};
use crate::worker::{Worker, WorkerConfig};
use gallop_fetch::FetchPolicy;

/// How long a shutdown waits for answers in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The account of the token made when a server starts with none.
pub const FIRST_ACCOUNT: &str = "local";

/// A server that is listening and working.
pub struct RunningServer {
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    /// Base of the URLs handed out.
    pub public_url: String,
    /// The token made for account `local` when the store had none; shown once.
    pub first_token: Option<String>,
    pub state: SharedState,
    worker: Worker,
    shutdown: oneshot::Sender<()>,
    serve: JoinHandle<std::io::Result<()>>,
    observer: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, lets answers in flight finish, and hands running jobs back to the queue.
    pub async fn shutdown(self) {
        self.state.closing.send_replace(true);
        let _ = self.shutdown.send(());
        // Answers in flight get a few seconds; a client that keeps a connection open does
        // not keep the process alive.
        let abort = self.serve.abort_handle();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.serve)
            .await
            .is_err()
        {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}: closing them");
            abort.abort();
        }
        self.observer.abort();
        self.worker.stop().await;
    }

    /// A new token for `account` (tests and tools).
    pub fn create_token(&self, account: &str) -> anyhow::Result<String> {
        Ok(self.state.store.create_token(account)?)
    }
}

/// Opens the data directory's job store (the one `gallop serve` and `gallop token` share).
pub fn open_store(config: &ServerConfig) -> anyhow::Result<SqliteStore> {
    let limit = u32::try_from(config.queue_limit).unwrap_or(u32::MAX);
    let per_account = u32::try_from(config.queue_limit_per_account).unwrap_or(u32::MAX);
    let store_config = StoreConfig {
        max_queued_total: limit,
        max_queued_per_account: per_account.min(limit),
        default_max_attempts: config.max_attempts,
        backoff_base_ms: i64::try_from(config.retry_backoff.as_millis()).unwrap_or(i64::MAX),
        ..StoreConfig::default()
    };
    SqliteStore::open(&config.data_dir, store_config)
        .with_context(|| format!("opening the job store in {}", config.data_dir.display()))
}

/// Binds, starts the worker and serves in the background.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding {}", config.addr))?;
    let addr = listener.local_addr()?;
    let public_url = public_base(config.public_url.as_deref(), addr);
    if config.public_url.is_none() && addr.ip().is_unspecified() {
        tracing::warn!(
            "listening on {addr} without --public-url: result links will name {public_url}, \
             which clients elsewhere cannot reach; pass --public-url"
        );
    }

    let store: Arc<dyn JobStore> = Arc::new(open_store(&config)?);
    let first_token = if store.token_count()? == 0 {
        Some(store.create_token(FIRST_ACCOUNT)?)
    } else {
        None
    };
    let storage = match &config.storage {
        Some(storage) => storage.clone(),
        None => Storage::local(&config.data_dir)?,
    };
    let signer = UrlSigner::load_or_create(&config.data_dir, &public_url)
        .with_context(|| format!("signing key in {}", config.data_dir.display()))?;

    let vault = Arc::new(KeyVault::load_or_create(&config.data_dir)?);
    let worker = Worker::spawn(
        store.clone(),
        storage.clone(),
        config.engines.clone(),
        WorkerConfig {
            concurrency: config.workers.max(1),
            job_timeout: config.job_timeout,
            fetch: FetchPolicy {
                allow_private: config.allow_private_fetch,
                ..FetchPolicy::default()
            },
            result_ttl: config.url_ttl,
            upload_ttl: config.upload_ttl,
            upstreams: config.upstreams.clone(),
            vault: vault.clone(),
            ..WorkerConfig::default()
        },
    );

    let state: SharedState = Arc::new(AppState {
        store,
        storage,
        presign_downloads: config.presign_downloads,
        signer,
        metrics: Metrics::default(),
        public_url: public_url.clone(),
        sync_wait: config.sync_wait,
        body_limit: config.body_limit,
        url_ttl: config.url_ttl,
        upload_ttl: config.upload_ttl,
        uploads: config.uploads,
        upload_lock: tokio::sync::Mutex::new(()),
        engines: config.engines.clone(),
        upstreams: config.upstreams.clone(),
        vault,
        closing: tokio::sync::watch::channel(false).0,
    });
    let observer = tokio::spawn(observe_job_ends(state.clone()));

    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let app = router(state.clone());
    let limits = config.connections;
    let serve = tokio::spawn(crate::connections::serve(
        listener,
        app,
        limits,
        async move {
            let _ = shutdown_rx.await;
        },
    ));
    tracing::info!(%addr, %public_url, data_dir = %config.data_dir.display(), storage = %state.storage.describe(), "gallop serving");
    Ok(RunningServer {
        addr,
        public_url,
        first_token,
        state,
        worker,
        shutdown,
        serve,
        observer,
    })
}

/// `gallop serve`: runs until Ctrl-C (or SIGTERM), printing the first token once.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let server = start(config).await?;
    if let Some(token) = &server.first_token {
        println!(
            "Created the first API token, for account \"{FIRST_ACCOUNT}\" (shown only this once):\n\
             GALLOP_TOKEN={token}"
        );
    }
    println!(
        "gallop is listening on http://{} (public URL {})",
        server.addr, server.public_url
    );
    wait_for_signal().await;
    tracing::info!("shutting down: running jobs go back to the queue");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Feeds the job-duration histogram: every write wakes this; ended jobs are observed once.
async fn observe_job_ends(state: SharedState) {
    let mut changes = state.store.subscribe();
    loop {
        let id = match changes.recv().await {
            Ok(id) => id,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Ok(Some(job)) = crate::http::with_store(&state, move |s| s.get(&id)).await else {
            continue;
        };
        if let (true, Some(start), Some(end)) = (
            job.status.is_terminal(),
            job.started_at_ms,
            job.finished_at_ms,
        ) {
            let seconds = (end - start).max(0) as f64 / 1000.0;
            state.metrics.observe_job_end(&job.id, job.status, seconds);
        }
    }
}
