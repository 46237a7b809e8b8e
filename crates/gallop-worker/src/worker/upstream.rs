//! A job of a model routed to an upstream Model Studio endpoint. The worker submits the request
//! upstream (`X-DashScope-Async: enable`) with the key that pays (the account's own, else the
//! server's) and records the upstream task id in the job's engine record before it polls, so an
//! attempt after a restart follows the same task instead of submitting, and paying, again. It
//! polls until the task ends, downloads the video into gallop's storage and completes the job
//! with it. While it waits it renews the lease every `progress_interval` with upstream's
//! progress and watches for cancel (forwarded upstream), the time limit, and shutdown (the task
//! is left running upstream for the next attempt to resume).
//!
//! Throttling and an unreachable or failing upstream are retried with backoff (upstream's
//! `Retry-After` honoured) within the route's patience; a refused key or input ends the job.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gallop_api::{GenerationRequest, TaskOutput, TaskStatus};
use gallop_engine::render::image_field;
use gallop_upstream::{
    ApiKey, Backoff, KeySource, UpstreamError, UpstreamRoute, is_bad_input_code, synthesis_body,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Ending, Shared, final_failure, read_upload, retryable, store_result};
use crate::upstreams::{KeyError, choose_key, how_to_set, key_of_source};
use gallop_api::DASHSCOPE_KEY;
use gallop_storage::upload_id_of_uri;
use gallop_store::{Job, Lease, LeaseState, error_code};

/// Largest video taken from upstream.
const MAX_VIDEO_BYTES: usize = 512 * 1024 * 1024;
/// Longest wait between two tries of a failing call (a longer `Retry-After` still wins).
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
/// Tries of a cancel forwarded upstream before the job ends cancelled anyway.
const CANCEL_TRIES: u32 = 3;

/// The job's engine record (`jobs.engine`): what `/v1/jobs` and `gatewayMetadata` report and,
/// once submitted, the upstream task the job follows.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    engine: String,
    checkpoint: Option<String>,
    compute: Option<String>,
    key_source: String,
    upstream: String,
    upstream_model: String,
    upstream_task_id: Option<String>,
}

impl Record {
    fn new(route: &UpstreamRoute, source: KeySource) -> Record {
        Record {
            engine: route.describe(),
            checkpoint: None,
            compute: None,
            key_source: source.as_str().to_string(),
            upstream: route.upstream.name().to_string(),
            upstream_model: route.model.clone(),
            upstream_task_id: None,
        }
    }

    /// The record of an earlier attempt that submitted a task to this route's upstream.
    fn submitted_before(job: &Job, route: &UpstreamRoute) -> Option<Record> {
        let record: Record = serde_json::from_value(job.engine.clone()?).ok()?;
        (record.upstream_task_id.is_some() && record.upstream == route.upstream.name())
            .then_some(record)
    }
}

/// Why waiting stopped early.
enum Interrupt {
    Cancel,
    Lost,
    Shutdown,
    TimedOut,
}

/// Runs one attempt of `job` on `route`.
pub(super) async fn attempt(
    shared: &Arc<Shared>,
    lease: &Lease,
    job: &Job,
    route: &Arc<UpstreamRoute>,
    stop: &watch::Receiver<bool>,
) -> Ending {
    let run = match Run::new(shared, lease, job, route, stop.clone()).await {
        Ok(run) => run,
        Err(ending) => return ending,
    };
    match run.execute().await {
        Ok(ending) | Err(ending) => ending,
    }
}

struct Run<'a> {
    shared: &'a Shared,
    lease: &'a Lease,
    job: &'a Job,
    route: &'a UpstreamRoute,
    key: ApiKey,
    record: Record,
    started: Instant,
    stop: watch::Receiver<bool>,
    /// Upstream's last progress report, written with each lease renewal.
    step: AtomicU32,
    total: AtomicU32,
}

impl<'a> Run<'a> {
    /// Opens the key: the one an earlier attempt submitted with, else the one that pays now.
    async fn new(
        shared: &'a Shared,
        lease: &'a Lease,
        job: &'a Job,
        route: &'a Arc<UpstreamRoute>,
        stop: watch::Receiver<bool>,
    ) -> Result<Run<'a>, Ending> {
        let earlier = Record::submitted_before(job, route);
        let source = earlier
            .as_ref()
            .and_then(|r| KeySource::parse(&r.key_source));
        let (source, key) = open_key(shared, &job.account, route, source).await?;
        Ok(Run {
            shared,
            lease,
            job,
            route,
            key,
            record: earlier.unwrap_or_else(|| Record::new(route, source)),
            started: Instant::now(),
            stop,
            step: AtomicU32::new(0),
            total: AtomicU32::new(0),
        })
    }

    async fn execute(mut self) -> Result<Ending, Ending> {
        let task = match self.record.upstream_task_id.clone() {
            Some(task) => {
                tracing::info!(job = %self.job.id, task = %task, engine = %self.record.engine,
                    key_source = %self.record.key_source, "following the upstream task submitted before");
                task
            }
            None => self.submit().await?,
        };
        let url = self.follow(&task).await?;
        let mp4 = self
            .patiently("downloading the video", || {
                self.route.upstream.download(&url, MAX_VIDEO_BYTES)
            })
            .await?;
        tracing::info!(job = %self.job.id, task = %task, bytes = mp4.len(), "upstream video stored");
        Ok(store_result(self.shared, self.lease, mp4).await)
    }

    /// Submits the task and records its id before anything else happens to it.
    async fn submit(&mut self) -> Result<String, Ending> {
        let request: GenerationRequest =
            serde_json::from_value(self.job.request.clone()).map_err(|e| {
                final_failure(
                    error_code::BAD_INPUT,
                    format!("stored request is not valid: {e}"),
                )
            })?;
        let seed = request
            .seed
            .unwrap_or_else(gallop_engine::render::random_seed);
        self.write_record(seed).await?;
        let images = self.images(&request).await?;
        let prompt_extend = self.job.request[DASHSCOPE_KEY]["prompt_extend"].as_bool();
        let body = synthesis_body(&request, &self.route.model, &images, seed, prompt_extend);
        let task = self
            .patiently("submitting the task", || {
                self.route.upstream.submit(&self.key, &body)
            })
            .await?;
        self.record.upstream_task_id = Some(task.clone());
        if let Err(ending) = self.write_record(seed).await {
            // Unrecorded, no later attempt could follow it: it must not run on unwatched.
            self.cancel_upstream().await;
            return Err(ending);
        }
        tracing::info!(job = %self.job.id, task = %task, engine = %self.record.engine,
            key_source = %self.record.key_source, "submitted upstream");
        Ok(task)
    }

    /// The request's images as upstream takes them: uris as they are (upstream fetches public
    /// URLs itself; `data:` URIs are accepted as they are), uploads as `data:` URIs.
    async fn images(&self, request: &GenerationRequest) -> Result<Vec<String>, Ending> {
        let mut images = Vec::with_capacity(request.images.len());
        for (i, uri) in request.images.iter().enumerate() {
            images.push(match upload_id_of_uri(uri) {
                Some(id) => {
                    let field = image_field(request.model, i);
                    data_uri(&read_upload(self.shared, &self.job.account, &field, id).await?)
                }
                None => uri.clone(),
            });
        }
        Ok(images)
    }

    /// Seed and engine record into the row; the lease must still be ours.
    async fn write_record(&self, seed: u32) -> Result<(), Ending> {
        let record = serde_json::to_value(&self.record).unwrap_or_default();
        let (store, lease) = (self.shared.store.clone(), self.lease.clone());
        match tokio::task::spawn_blocking(move || store.set_run_info(&lease, seed, &record)).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(Ending::Lost),
            Ok(Err(e)) => Err(retryable(format!("job store: {e}"))),
            Err(e) => Err(retryable(format!("job store panicked: {e}"))),
        }
    }

    /// Polls `task` until it ends; the video's URL when it succeeded.
    async fn follow(&self, task: &str) -> Result<String, Ending> {
        loop {
            let answer = self
                .patiently("reading the task", || {
                    self.route.upstream.task(&self.key, task)
                })
                .await?;
            let output = answer.output;
            match output.task_status {
                TaskStatus::Pending | TaskStatus::Running => self.note_progress(&output),
                TaskStatus::Succeeded => {
                    return output.video_url.ok_or_else(|| {
                        self.failed(format!("task {task} succeeded without a video_url"))
                    });
                }
                _ => return Err(self.task_ended(task, &output)),
            }
            self.pause(self.route.poll_interval).await?;
        }
    }

    fn note_progress(&self, output: &TaskOutput) {
        if let Some(p) = output.progress {
            self.step.store(p.step, Ordering::Relaxed);
            self.total.store(p.total, Ordering::Relaxed);
        }
    }

    /// A task that ended upstream without a video.
    fn task_ended(&self, task: &str, output: &TaskOutput) -> Ending {
        let code = output.code.as_deref().unwrap_or("unknown");
        let message = output.message.as_deref().unwrap_or("no message");
        match output.task_status {
            TaskStatus::Failed if is_bad_input_code(code) => self.bad_input(code, message),
            TaskStatus::Failed => self.failed(format!("task {task} failed ({code}): {message}")),
            TaskStatus::Canceled => self.failed(format!("task {task} was cancelled upstream")),
            _ => self.failed(format!(
                "upstream no longer knows task {task} (task ids live 24 h, and only the key \
                 that created a task can read it)"
            )),
        }
    }

    fn failed(&self, what: String) -> Ending {
        let name = self.route.upstream.name();
        final_failure(
            error_code::UPSTREAM_FAILED,
            format!("upstream {name}: {what}"),
        )
    }

    /// Upstream refused the input: the message names the field as this job's request has it.
    fn bad_input(&self, code: &str, message: &str) -> Ending {
        let mut message = message.to_string();
        if let Ok(request) = serde_json::from_value::<GenerationRequest>(self.job.request.clone()) {
            for i in (0..request.images.len()).rev() {
                let upstream_field = format!("/input/media/{i}/url");
                message = message.replace(&upstream_field, &image_field(request.model, i));
            }
        }
        let name = self.route.upstream.name();
        final_failure(
            error_code::BAD_INPUT,
            format!("{message} (refused by upstream {name}: {code})"),
        )
    }

    /// Runs `call` until it succeeds, retrying throttling and outages with backoff for as long
    /// as the route's patience; anything else ends the job.
    async fn patiently<T, F>(&self, what: &str, mut call: impl FnMut() -> F) -> Result<T, Ending>
    where
        F: Future<Output = Result<T, UpstreamError>>,
    {
        let since = Instant::now();
        let backoff = Backoff {
            first: self.route.poll_interval.min(Duration::from_secs(2)),
            max: MAX_RETRY_WAIT,
        };
        let mut tries = 0;
        loop {
            let e = match call().await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if !e.is_transient() {
                return Err(self.refused(what, e));
            }
            if since.elapsed() >= self.route.patience {
                return Err(self.gave_up(what, &e));
            }
            let wait = backoff.wait(tries, e.retry_after());
            tries += 1;
            tracing::warn!(job = %self.job.id, "{what}: {e}; trying again in {:.1} s",
                wait.as_secs_f32());
            self.pause(wait).await?;
        }
    }

    /// A call upstream will not take from this key or with this input.
    fn refused(&self, what: &str, e: UpstreamError) -> Ending {
        match e {
            UpstreamError::KeyRefused { .. } => final_failure(
                error_code::UPSTREAM_KEY,
                format!(
                    "{what}: {e}. The job used the {} key. {}",
                    self.record.key_source,
                    how_to_set(&self.job.account, self.route)
                ),
            ),
            UpstreamError::Refused { code, message, .. } if is_bad_input_code(&code) => {
                self.bad_input(&code, &message)
            }
            other => self.failed(format!("{what}: {other}")),
        }
    }

    fn gave_up(&self, what: &str, e: &UpstreamError) -> Ending {
        final_failure(
            error_code::UPSTREAM_UNAVAILABLE,
            format!(
                "{what}: upstream {} stayed unavailable for {} s, so the job gave up; last \
                 error: {e}",
                self.route.upstream.name(),
                self.route.patience.as_secs()
            ),
        )
    }

    /// Waits `wait`, renewing the lease about every `progress_interval`; a cancel, a lost
    /// lease, the time limit or shutdown ends the wait (and the attempt) at once.
    async fn pause(&self, wait: Duration) -> Result<(), Ending> {
        let until = Instant::now() + wait;
        loop {
            if let Some(why) = self.interruption().await {
                return Err(self.interrupted(why).await);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(left.min(self.shared.config.progress_interval)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Renews the lease with upstream's progress; says what stops the attempt, if anything.
    async fn interruption(&self) -> Option<Interrupt> {
        if *self.stop.borrow() {
            return Some(Interrupt::Shutdown);
        }
        if self.started.elapsed() > self.shared.config.job_timeout {
            return Some(Interrupt::TimedOut);
        }
        let (step, total) = (
            self.step.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        );
        let (store, lease) = (self.shared.store.clone(), self.lease.clone());
        match tokio::task::spawn_blocking(move || store.progress(&lease, step, total)).await {
            Ok(Ok(LeaseState::Held {
                cancel_requested: true,
            })) => Some(Interrupt::Cancel),
            Ok(Ok(LeaseState::Lost)) => Some(Interrupt::Lost),
            Ok(Ok(LeaseState::Held { .. })) => None,
            // A store hiccup: the lease is long, the next renewal retries.
            Ok(Err(e)) => {
                tracing::warn!(job = %self.job.id, "progress write: {e}");
                None
            }
            Err(e) => {
                tracing::warn!(job = %self.job.id, "progress write panicked: {e}");
                None
            }
        }
    }

    /// Ends the attempt. A lost lease or a shutdown leaves the task running upstream: the
    /// attempt that follows resumes it. A cancel or the time limit cancels it there too.
    async fn interrupted(&self, why: Interrupt) -> Ending {
        match why {
            Interrupt::Lost => Ending::Lost,
            Interrupt::Shutdown => Ending::Released,
            Interrupt::Cancel => {
                self.cancel_upstream().await;
                Ending::Cancelled
            }
            Interrupt::TimedOut => {
                self.cancel_upstream().await;
                final_failure(
                    error_code::TIMEOUT,
                    format!(
                        "the job ran longer than the time limit of {} s",
                        self.shared.config.job_timeout.as_secs_f32()
                    ),
                )
            }
        }
    }

    /// Forwards a cancel of the submitted task, if any. Model Studio cancels only tasks still
    /// PENDING; one already running finishes there (and is billed), which the log says.
    async fn cancel_upstream(&self) {
        let Some(task) = &self.record.upstream_task_id else {
            return;
        };
        for _ in 0..CANCEL_TRIES {
            match self.route.upstream.cancel(&self.key, task).await {
                Ok(()) => {
                    tracing::info!(job = %self.job.id, task = %task, "cancelled upstream");
                    return;
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(job = %self.job.id, task = %task, "cancelling upstream: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::warn!(job = %self.job.id, task = %task,
                        "upstream did not cancel the task (it may run to its end there): {e}");
                    return;
                }
            }
        }
    }
}

/// The key a job uses: of `source` when an earlier attempt chose it, else the one that pays
/// now (the account's own, else the server's). No key at all fails the job, saying how to set
/// one.
async fn open_key(
    shared: &Shared,
    account: &str,
    route: &Arc<UpstreamRoute>,
    source: Option<KeySource>,
) -> Result<(KeySource, ApiKey), Ending> {
    let (store, vault) = (shared.store.clone(), shared.config.vault.clone());
    let (account, route) = (account.to_string(), route.clone());
    let opened = tokio::task::spawn_blocking(move || match source {
        Some(s) => key_of_source(store.as_ref(), &vault, &account, &route, s).map(|k| (s, k)),
        None => choose_key(store.as_ref(), &vault, &account, &route),
    })
    .await;
    match opened {
        Ok(Ok(chosen)) => Ok(chosen),
        Ok(Err(KeyError::Missing(why))) => Err(final_failure(error_code::UPSTREAM_KEY, why)),
        Ok(Err(e)) => Err(retryable(format!("opening the upstream key: {e}"))),
        Err(e) => Err(retryable(format!("opening the upstream key panicked: {e}"))),
    }
}

/// An uploaded image as a `data:` URI, which Model Studio takes in place of a URL.
fn data_uri(bytes: &[u8]) -> String {
    let mime = image::guess_format(bytes)
        .map(|f| f.to_mime_type())
        .unwrap_or("application/octet-stream");
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!("data:{mime};base64,{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_become_data_uris_with_their_type() {
        let png = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n', 0, 0];
        assert_eq!(data_uri(&png), "data:image/png;base64,iVBORw0KGgoAAA==");
    }
}
