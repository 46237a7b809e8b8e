//! One job row rendered in each API shape: gallop's own job object, Cloudflare's run state, and
//! DashScope's task. Pure functions of the row (plus the signed URL and queue position).

use serde_json::{Value, json};

use crate::store::{Job, JobStatus, error_code};

/// What a view needs besides the row.
pub struct JobExtras {
    /// Signed absolute URL of the result, when completed.
    pub video_url: Option<String>,
    /// 1-based, when queued.
    pub queue_position: Option<u32>,
    /// Database-clock "now" is not at hand; the server's clock is close enough for an ETA.
    pub now_ms: i64,
}

/// gallop's own job object (`GET /v1/jobs/{id}`, list entries, SSE data).
pub fn job_json(job: &Job, extras: &JobExtras) -> Value {
    json!({
        "id": job.id,
        "model": job.model,
        "status": job.status,
        "queue_position": extras.queue_position,
        "progress": { "step": job.progress_step, "total": job.progress_total },
        "eta_seconds": eta_seconds(job, extras.now_ms),
        "seed": job.seed.or_else(|| requested_seed(job)),
        "engine": job.engine,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested,
        "timings": {
            "created_at_ms": job.created_at_ms,
            "started_at_ms": job.started_at_ms,
            "finished_at_ms": job.finished_at_ms,
            "queued_ms": job.started_at_ms.map(|s| s - job.created_at_ms),
            "run_ms": match (job.started_at_ms, job.finished_at_ms) {
                (Some(s), Some(f)) => Some(f - s),
                _ => None,
            },
        },
        "result": extras.video_url.as_ref().map(|url| json!({ "video": url })),
        "error": error_json(job),
        "request": request_summary(&job.request),
    })
}

/// Longest image uri shown as is; a `data:` uri is mostly base64 and is shortened past it so
/// polls stay small.
const MAX_SHOWN_URI: usize = 200;

/// The request as stored, with long `data:` image uris shortened to their head and size.
pub fn request_summary(request: &Value) -> Value {
    let mut request = request.clone();
    if let Some(images) = request.get_mut("images").and_then(Value::as_array_mut) {
        for image in images {
            if let Some(uri) = image.as_str()
                && uri.starts_with("data:")
                && uri.len() > MAX_SHOWN_URI
            {
                let head: String = uri.chars().take(40).collect();
                *image = json!(format!("{head}... ({} characters)", uri.len()));
            }
        }
    }
    request
}

/// Seconds left, from the pace so far: elapsed / steps done * steps left. None before the first step.
pub fn eta_seconds(job: &Job, now_ms: i64) -> Option<f64> {
    if job.status != JobStatus::Running || job.progress_step == 0 || job.progress_total == 0 {
        return None;
    }
    let started = job.started_at_ms?;
    let elapsed = (now_ms - started).max(0) as f64 / 1000.0;
    let left = job.progress_total.saturating_sub(job.progress_step) as f64;
    Some((elapsed / job.progress_step as f64 * left * 10.0).round() / 10.0)
}

fn requested_seed(job: &Job) -> Option<u32> {
    job.request
        .get("seed")
        .and_then(Value::as_u64)
        .map(|s| s as u32)
}

fn error_json(job: &Job) -> Value {
    match job.status {
        JobStatus::Failed => json!({
            "code": job.error_code.as_deref().unwrap_or(error_code::INTERNAL),
            "message": job.error_message.as_deref().unwrap_or("the job failed"),
        }),
        JobStatus::Cancelled => json!({
            "code": "cancelled",
            "message": "the job was cancelled",
        }),
        _ => Value::Null,
    }
}

/// `gatewayMetadata` of a Cloudflare answer: upstream's field plus which engine served.
pub fn gateway_metadata(job: &Job) -> Value {
    json!({
        "keySource": "Unified",
        "requestId": job.id,
        "engine": job.engine.as_ref().and_then(|e| e.get("engine")).cloned().unwrap_or(Value::Null),
        "seed": job.seed,
    })
}

/// Cloudflare's `/ai/run` state object for a job.
pub fn cloudflare_state(job: &Job, extras: &JobExtras) -> Value {
    match job.status {
        JobStatus::Queued => json!({
            "state": "Queued",
            "request_id": job.id,
            "model": job.model,
            "queue_position": extras.queue_position,
        }),
        JobStatus::Running => json!({
            "state": "Running",
            "request_id": job.id,
            "model": job.model,
            "progress": {
                "step": job.progress_step,
                "total": job.progress_total,
                "percent": percent(job),
            },
            "eta_seconds": eta_seconds(job, extras.now_ms),
        }),
        JobStatus::Completed => json!({
            "state": "Completed",
            "result": { "video": extras.video_url },
            "gatewayMetadata": gateway_metadata(job),
        }),
        JobStatus::Failed | JobStatus::Cancelled => json!({
            "state": "Failed",
            "request_id": job.id,
            "model": job.model,
            "error": error_json(job),
        }),
    }
}

fn percent(job: &Job) -> f64 {
    if job.progress_total == 0 {
        0.0
    } else {
        (job.progress_step as f64 * 1000.0 / job.progress_total as f64).round() / 10.0
    }
}

/// DashScope's `task_status` for a job.
pub fn dashscope_status(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "PENDING",
        JobStatus::Running => "RUNNING",
        JobStatus::Completed => "SUCCEEDED",
        JobStatus::Failed => "FAILED",
        JobStatus::Cancelled => "CANCELED",
    }
}

/// DashScope's `GET /api/v1/tasks/{id}` answer.
pub fn dashscope_task(job: &Job, extras: &JobExtras) -> Value {
    let mut output = json!({
        "task_id": job.id,
        "task_status": dashscope_status(job.status),
        "submit_time": dashscope_time(job.created_at_ms),
    });
    if let Some(t) = job.started_at_ms {
        output["scheduled_time"] = json!(dashscope_time(t));
    }
    if let Some(t) = job.finished_at_ms {
        output["end_time"] = json!(dashscope_time(t));
    }
    match job.status {
        JobStatus::Completed => {
            output["video_url"] = json!(extras.video_url);
            output["orig_prompt"] = job.request.get("prompt").cloned().unwrap_or(Value::Null);
        }
        JobStatus::Failed => {
            output["code"] = json!(job.error_code.as_deref().unwrap_or(error_code::INTERNAL));
            output["message"] = json!(job.error_message.as_deref().unwrap_or("the job failed"));
        }
        JobStatus::Running => {
            output["progress"] = json!({ "step": job.progress_step, "total": job.progress_total });
        }
        _ => {}
    }
    json!({
        "request_id": job.id,
        "output": output,
        "usage": if job.status == JobStatus::Completed {
            json!({
                "duration": job.request.get("duration").cloned().unwrap_or(Value::Null),
                "video_count": 1,
            })
        } else {
            Value::Null
        },
    })
}

/// DashScope's time format: `2025-01-08 16:43:36.318` (UTC here).
pub fn dashscope_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{millis:03}",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: JobStatus) -> Job {
        Job {
            id: "j1".into(),
            account: "acme".into(),
            model: "alibaba/hh1-i2v".into(),
            request: json!({"prompt": "p", "duration": 3, "seed": 7}),
            status,
            priority: 0,
            attempt: 1,
            max_attempts: 3,
            cancel_requested: false,
            progress_step: 10,
            progress_total: 40,
            seed: Some(7),
            engine: Some(json!({"engine": "preview", "checkpoint": null})),
            result_key: None,
            error_code: Some("bad_input".into()),
            error_message: Some("image uri x: 404".into()),
            created_at_ms: 1_000,
            started_at_ms: Some(2_000),
            finished_at_ms: None,
            version: 3,
            updated_at_ms: 0,
        }
    }

    fn extras() -> JobExtras {
        JobExtras {
            video_url: Some("http://h/v1/files/j1?exp=1&sig=ab".into()),
            queue_position: None,
            now_ms: 12_000,
        }
    }

    #[test]
    fn long_data_uris_are_shortened_in_views() {
        let long = format!("data:image/png;base64,{}", "A".repeat(5000));
        let request = json!({"images": [long, "https://x/a.png"], "prompt": "p"});
        let shown = request_summary(&request);
        assert_eq!(
            shown["images"][0],
            format!(
                "data:image/png;base64,AAAAAAAAAAAAAAAAAA... ({} characters)",
                5022
            )
        );
        assert_eq!(shown["images"][1], "https://x/a.png");
        assert_eq!(shown["prompt"], "p");
    }

    #[test]
    fn eta_follows_the_pace_so_far() {
        // 10 of 40 steps in 10 s: 30 steps left take 30 s.
        assert_eq!(eta_seconds(&job(JobStatus::Running), 12_000), Some(30.0));
        assert_eq!(eta_seconds(&job(JobStatus::Queued), 12_000), None);
    }

    #[test]
    fn cloudflare_states_carry_what_clients_read() {
        let running = cloudflare_state(&job(JobStatus::Running), &extras());
        assert_eq!(running["state"], "Running");
        assert_eq!(running["progress"]["percent"], 25.0);
        let done = cloudflare_state(&job(JobStatus::Completed), &extras());
        assert_eq!(done["state"], "Completed");
        assert_eq!(done["result"]["video"], "http://h/v1/files/j1?exp=1&sig=ab");
        assert_eq!(done["gatewayMetadata"]["keySource"], "Unified");
        assert_eq!(done["gatewayMetadata"]["engine"], "preview");
        let failed = cloudflare_state(&job(JobStatus::Failed), &extras());
        assert_eq!(failed["error"]["code"], "bad_input");
        let cancelled = cloudflare_state(&job(JobStatus::Cancelled), &extras());
        assert_eq!(cancelled["state"], "Failed");
        assert_eq!(cancelled["error"]["code"], "cancelled");
    }

    #[test]
    fn dashscope_time_is_utc_calendar_time() {
        assert_eq!(dashscope_time(0), "1970-01-01 00:00:00.000");
        // 2025-01-08 16:43:36.318 UTC
        assert_eq!(dashscope_time(1_736_354_616_318), "2025-01-08 16:43:36.318");
        assert_eq!(dashscope_time(951_782_400_000), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn dashscope_task_on_failure_has_code_and_message() {
        let v = dashscope_task(&job(JobStatus::Failed), &extras());
        assert_eq!(v["output"]["task_status"], "FAILED");
        assert_eq!(v["output"]["code"], "bad_input");
        assert_eq!(v["output"]["scheduled_time"], "1970-01-01 00:00:02.000");
    }
}
