//! One job row rendered in each API shape: gallop's own job object, Cloudflare's run state, and
//! DashScope's task. Pure functions of the row (plus the signed URL and queue position).

use gallop_api::ModelId;
use gallop_engine::render::image_field;
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

/// The request as stored, with long `data:` image uris shortened to their head and size, and
/// credentials in image uris (`user:pass@`, `?token=`) redacted.
pub fn request_summary(request: &Value) -> Value {
    let mut request = request.clone();
    if let Some(images) = request.get_mut("images").and_then(Value::as_array_mut) {
        for image in images {
            let Some(uri) = image.as_str() else {
                continue;
            };
            if uri.starts_with("data:") {
                if uri.len() > MAX_SHOWN_URI {
                    let head: String = uri.chars().take(40).collect();
                    *image = json!(format!("{head}... ({} characters)", uri.len()));
                }
            } else {
                *image = json!(gallop_api::redact_uri(uri));
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

/// `gatewayMetadata` of a Cloudflare answer: upstream's field plus which engine served. A job
/// routed to Model Studio says whose key paid (`BYOK` or `Unified`); local engines use no key
/// of the client's, which Cloudflare calls `Unified`.
pub fn gateway_metadata(job: &Job) -> Value {
    let key_source = job
        .engine
        .as_ref()
        .and_then(|e| e.get("key_source"))
        .and_then(Value::as_str)
        .unwrap_or("Unified");
    json!({
        "keySource": key_source,
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

pub use gallop_api::DASHSCOPE_KEY;

/// The Model Studio id of a job: as its client spelled it, or its model's own HappyHorse id.
pub fn dashscope_model_name(job: &Job) -> String {
    match job.request[DASHSCOPE_KEY]["model"].as_str() {
        Some(name) => name.to_string(),
        None => ModelId::parse(&job.model)
            .map_or_else(|| job.model.clone(), |m| m.dashscope_name().to_string()),
    }
}

/// Model Studio's failure code for a job's stored error code.
fn dashscope_failure_code(code: Option<&str>) -> &'static str {
    match code {
        Some(error_code::BAD_INPUT) => "InvalidParameter",
        Some(error_code::TIMEOUT) => "RequestTimeOut",
        Some(error_code::UPSTREAM_KEY) => "InvalidApiKey",
        _ => "InternalError",
    }
}

/// A failure message with the image fields named as the client sent them (`/input/media/0/url`,
/// `/input/img_url`) instead of the Cloudflare shape's (`/input/image`, `/input/images/0`).
fn dashscope_message(job: &Job, message: &str) -> String {
    let Some(model) = ModelId::parse(&job.model) else {
        return message.to_string();
    };
    let count = job.request["images"].as_array().map_or(0, Vec::len);
    let stored = job.request[DASHSCOPE_KEY]["image_fields"].as_array();
    let mut message = message.to_string();
    // Highest index first, so `/input/images/1` is never read inside `/input/images/10`.
    for i in (0..count).rev() {
        let theirs = stored
            .and_then(|f| f.get(i))
            .and_then(Value::as_str)
            .map_or_else(|| format!("/input/media/{i}/url"), str::to_string);
        message = message.replace(&image_field(model, i), &theirs);
    }
    message
}

/// `usage` of a succeeded task: seconds billed and made, one video, the resolution class and
/// (r2v) the ratio asked for.
fn dashscope_usage(job: &Job) -> Value {
    let duration = job.request.get("duration").cloned().unwrap_or(Value::Null);
    let sr = match job.request.get("resolution").and_then(Value::as_str) {
        Some("1080P") => 1080,
        _ => 720,
    };
    let mut usage = json!({
        "duration": duration,
        "output_video_duration": duration,
        "video_count": 1,
        "SR": sr,
    });
    if let Some(ratio) = job.request.get("ratio").filter(|r| r.is_string()) {
        usage["ratio"] = ratio.clone();
    }
    usage
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
            output["code"] = json!(dashscope_failure_code(job.error_code.as_deref()));
            let message = job.error_message.as_deref().unwrap_or("the job failed");
            output["message"] = json!(dashscope_message(job, message));
        }
        JobStatus::Running => {
            output["progress"] = json!({ "step": job.progress_step, "total": job.progress_total });
        }
        _ => {}
    }
    let mut answer = json!({ "request_id": job.id, "output": output });
    if job.status == JobStatus::Completed {
        answer["usage"] = dashscope_usage(job);
    }
    answer
}

/// One entry of DashScope's `GET /api/v1/tasks` list (times in unix milliseconds).
pub fn dashscope_list_item(job: &Job) -> Value {
    json!({
        "task_id": job.id,
        "request_id": job.id,
        "status": dashscope_status(job.status),
        "model_name": dashscope_model_name(job),
        "gmt_create": job.created_at_ms,
        "start_time": job.started_at_ms,
        "end_time": job.finished_at_ms,
    })
}

/// `YYYYMMDDhhmmss` (UTC), the list query's time format, to unix milliseconds.
pub fn parse_compact_time(s: &str) -> Option<i64> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let part = |from: usize, to: usize| s[from..to].parse::<i64>().ok();
    let (y, mo, d) = (part(0, 4)?, part(4, 6)?, part(6, 8)?);
    let (h, mi, sec) = (part(8, 10)?, part(10, 12)?, part(12, 14)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    Some(((days * 86_400) + h * 3600 + mi * 60 + sec) * 1000)
}

/// (year, month, day) to days since 1970-01-01, the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = y - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
        let request = json!({"images": ["https://u:secret@x/a.png?sig=s1"]});
        assert_eq!(
            request_summary(&request)["images"][0],
            "https://REDACTED@x/a.png?sig=REDACTED"
        );
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
        let mut upstream = job(JobStatus::Completed);
        upstream.engine = Some(json!({"engine": "upstream alibaba (happyhorse-1.0-i2v)",
                                      "key_source": "BYOK"}));
        let done = cloudflare_state(&upstream, &extras());
        assert_eq!(done["gatewayMetadata"]["keySource"], "BYOK");
        assert_eq!(
            done["gatewayMetadata"]["engine"],
            "upstream alibaba (happyhorse-1.0-i2v)"
        );
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
    fn dashscope_task_on_failure_has_model_studio_code_and_its_field_names() {
        let mut failed = job(JobStatus::Failed);
        failed.request = json!({"prompt": "p", "images": ["https://x/a.png"]});
        failed.error_message = Some("/input/image: https://x/a.png answered 404".into());
        let v = dashscope_task(&failed, &extras());
        assert_eq!(v["output"]["task_status"], "FAILED");
        assert_eq!(v["output"]["code"], "InvalidParameter");
        assert_eq!(
            v["output"]["message"],
            "/input/media/0/url: https://x/a.png answered 404"
        );
        assert_eq!(v["output"]["scheduled_time"], "1970-01-01 00:00:02.000");
        assert!(v.get("usage").is_none());

        failed.request[DASHSCOPE_KEY] = json!({"image_fields": ["/input/img_url"]});
        let v = dashscope_task(&failed, &extras());
        assert_eq!(
            v["output"]["message"],
            "/input/img_url: https://x/a.png answered 404"
        );
        failed.error_code = Some(error_code::TIMEOUT.into());
        assert_eq!(
            dashscope_task(&failed, &extras())["output"]["code"],
            "RequestTimeOut"
        );
    }

    #[test]
    fn r2v_image_fields_are_renamed_highest_index_first() {
        let mut failed = job(JobStatus::Failed);
        failed.model = "alibaba/hh1.1-r2v".into();
        let images: Vec<String> = (0..9).map(|i| format!("https://x/{i}.png")).collect();
        failed.request = json!({"images": images});
        failed.error_message = Some("/input/images/8 is too small; /input/images/0 too".into());
        let v = dashscope_task(&failed, &extras());
        assert_eq!(
            v["output"]["message"],
            "/input/media/8/url is too small; /input/media/0/url too"
        );
    }

    #[test]
    fn dashscope_usage_names_duration_resolution_and_ratio() {
        let mut done = job(JobStatus::Completed);
        done.request =
            json!({"prompt": "p", "duration": 3, "resolution": "1080P", "ratio": "9:16"});
        let v = dashscope_task(&done, &extras());
        assert_eq!(
            v["usage"],
            json!({"duration": 3, "output_video_duration": 3, "video_count": 1, "SR": 1080, "ratio": "9:16"})
        );
        assert_eq!(v["output"]["orig_prompt"], "p");
    }

    #[test]
    fn compact_times_parse_as_utc() {
        assert_eq!(parse_compact_time("19700101000000"), Some(0));
        assert_eq!(
            parse_compact_time("20250108164336"),
            Some(1_736_354_616_000)
        );
        assert_eq!(parse_compact_time("20000229000000"), Some(951_782_400_000));
        for bad in [
            "2025010816433",
            "2025-01-08 16:4",
            "20251308164336",
            "20250108246336",
        ] {
            assert_eq!(parse_compact_time(bad), None, "{bad}");
        }
    }
}
