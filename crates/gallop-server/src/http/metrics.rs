//! Prometheus text for `/metrics`: HTTP requests by route and status (counted by a middleware),
//! job durations (observed as jobs end), and jobs by status read from the store at scrape time.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;

use crate::store::JobStatus;

/// Upper bounds (seconds) of the job-duration histogram buckets: previews take seconds, neural
/// runs minutes.
const DURATION_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// How many ended job ids are remembered so a job is observed once.
const SEEN_CAP: usize = 10_000;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    durations: Mutex<DurationHistogram>,
}

#[derive(Default)]
struct DurationHistogram {
    /// Per status (`completed`, `failed`, `cancelled`): bucket counts, sum, count.
    by_status: BTreeMap<&'static str, ([u64; DURATION_BUCKETS.len()], f64, u64)>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
}

impl Metrics {
    /// Counts one answered request. `route` is the matched route pattern (never the raw path, so
    /// ids do not explode the label set); a method outside HTTP's standard ones counts as
    /// `other`, so a client inventing method names cannot grow the label set either.
    pub fn count_request(&self, method: &str, route: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((method_label(method).to_string(), route.to_string(), status))
            .or_default() += 1;
    }

    /// Records how long an ended job ran (start to end), once per job id.
    pub fn observe_job_end(&self, job_id: &str, status: JobStatus, seconds: f64) {
        let mut h = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        if !h.seen.insert(job_id.to_string()) {
            return;
        }
        h.seen_order.push_back(job_id.to_string());
        if h.seen_order.len() > SEEN_CAP
            && let Some(old) = h.seen_order.pop_front()
        {
            h.seen.remove(&old);
        }
        let entry = h.by_status.entry(status.as_str()).or_default();
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                entry.0[i] += 1;
            }
        }
        entry.1 += seconds;
        entry.2 += 1;
    }

    /// The whole exposition. `jobs` comes from the store at scrape time.
    pub fn render(&self, jobs: &[(JobStatus, u64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP gallop_jobs Jobs in the store by status.\n# TYPE gallop_jobs gauge\n");
        for status in [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            let n = jobs
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "gallop_jobs{{status=\"{}\"}} {n}", status.as_str());
        }
        let queued = jobs
            .iter()
            .find(|(s, _)| *s == JobStatus::Queued)
            .map_or(0, |(_, n)| *n);
        out.push_str("# HELP gallop_queue_depth Jobs waiting for a worker.\n# TYPE gallop_queue_depth gauge\n");
        let _ = writeln!(out, "gallop_queue_depth {queued}");

        out.push_str("# HELP gallop_http_requests_total HTTP requests answered, by route and status.\n# TYPE gallop_http_requests_total counter\n");
        for ((method, route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "gallop_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape_label(route)
            );
        }

        out.push_str("# HELP gallop_job_duration_seconds Time from a job's start to its end.\n# TYPE gallop_job_duration_seconds histogram\n");
        let h = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        for (status, (buckets, sum, count)) in &h.by_status {
            for (bound, n) in DURATION_BUCKETS.iter().zip(buckets) {
                let _ = writeln!(
                    out,
                    "gallop_job_duration_seconds_bucket{{status=\"{status}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "gallop_job_duration_seconds_bucket{{status=\"{status}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "gallop_job_duration_seconds_sum{{status=\"{status}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "gallop_job_duration_seconds_count{{status=\"{status}\"}} {count}"
            );
        }
        out
    }
}

/// The standard HTTP methods (RFC 9110 and PATCH) by name; anything else is `other`.
fn method_label(method: &str) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    STANDARD
        .into_iter()
        .find(|m| *m == method)
        .unwrap_or("other")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        let m = Metrics::default();
        for i in 0..100 {
            m.count_request(&format!("JUNK{i}"), "unmatched", 405);
        }
        m.count_request("get", "unmatched", 405); // methods are case-sensitive: not GET
        let text = m.render(&[]);
        assert!(text.contains(
            "gallop_http_requests_total{method=\"other\",route=\"unmatched\",status=\"405\"} 101\n"
        ), "{text}");
        assert!(!text.contains("JUNK"), "{text}");
    }

    #[test]
    fn renders_counters_gauges_and_histogram() {
        let m = Metrics::default();
        m.count_request("GET", "/v1/jobs/{id}", 200);
        m.count_request("GET", "/v1/jobs/{id}", 200);
        m.observe_job_end("a", JobStatus::Completed, 3.0);
        m.observe_job_end("a", JobStatus::Completed, 3.0); // same job: counted once
        m.observe_job_end("b", JobStatus::Completed, 100.0);
        let text = m.render(&[(JobStatus::Queued, 4), (JobStatus::Completed, 2)]);
        assert!(
            text.contains("gallop_jobs{status=\"queued\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("gallop_jobs{status=\"running\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("gallop_queue_depth 4\n"), "{text}");
        assert!(text.contains(
            "gallop_http_requests_total{method=\"GET\",route=\"/v1/jobs/{id}\",status=\"200\"} 2\n"
        ));
        assert!(
            text.contains("gallop_job_duration_seconds_bucket{status=\"completed\",le=\"5\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "gallop_job_duration_seconds_bucket{status=\"completed\",le=\"120\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("gallop_job_duration_seconds_count{status=\"completed\"} 2\n"));
        assert!(text.contains("gallop_job_duration_seconds_sum{status=\"completed\"} 103\n"));
    }
}
