//! What can go wrong talking to upstream, typed by what the caller does about it.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// HTTP 429 or a `Throttling*` code: wait (at least `retry_after`) and try again.
    #[error("upstream {upstream} is throttling requests ({code}): {message}")]
    Throttled {
        upstream: String,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// HTTP 401/403, or a code that says the key is not good (`InvalidApiKey`, `AccessDenied`,
    /// `Arrearage`): retrying with the same key cannot help.
    #[error("upstream {upstream} refused the API key ({code}): {message}")]
    KeyRefused {
        upstream: String,
        code: String,
        message: String,
    },
    /// Any other 4xx: the request itself is refused (`InvalidParameter` names the field).
    #[error("upstream {upstream} refused the request ({code}): {message}")]
    Refused {
        upstream: String,
        code: String,
        message: String,
    },
    /// Unreachable, timed out, or a 5xx: worth retrying for a while.
    #[error("upstream {upstream} is unavailable: {detail}")]
    Unavailable { upstream: String, detail: String },
    /// An answer that is not what Model Studio sends.
    #[error("upstream {upstream} answered something unreadable: {detail}")]
    Protocol { upstream: String, detail: String },
}

impl UpstreamError {
    /// Throttling or an unavailable upstream: the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Throttled { .. } | UpstreamError::Unavailable { .. }
        )
    }

    /// A refusal of the request's content (`InvalidParameter`, a failed content inspection):
    /// the client's input, not gallop's or upstream's fault.
    pub fn is_bad_input(&self) -> bool {
        match self {
            UpstreamError::Refused { code, .. } => is_bad_input_code(code),
            _ => false,
        }
    }

    /// How long upstream asked to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Sorts an error answer by its HTTP status and Model Studio code.
    pub(crate) fn from_answer(
        upstream: &str,
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    ) -> UpstreamError {
        let upstream = upstream.to_string();
        if status == 429 || code.starts_with("Throttling") {
            UpstreamError::Throttled {
                upstream,
                code,
                message,
                retry_after,
            }
        } else if status == 401 || status == 403 || is_key_code(&code) {
            UpstreamError::KeyRefused {
                upstream,
                code,
                message,
            }
        } else if status >= 500 {
            UpstreamError::Unavailable {
                upstream,
                detail: format!("HTTP {status} ({code}): {message}"),
            }
        } else {
            UpstreamError::Refused {
                upstream,
                code,
                message,
            }
        }
    }
}

/// Model Studio's codes for a key that cannot pay for or reach the model.
fn is_key_code(code: &str) -> bool {
    ["InvalidApiKey", "AccessDenied", "Arrearage"]
        .iter()
        .any(|c| code.starts_with(c))
}

/// Model Studio's codes for input it will not take (also used in a failed task's `code`).
pub fn is_bad_input_code(code: &str) -> bool {
    [
        "InvalidParameter",
        "DataInspectionFailed",
        "IPInfringementSuspect",
    ]
    .iter()
    .any(|c| code.starts_with(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sort(status: u16, code: &str) -> UpstreamError {
        UpstreamError::from_answer("alibaba", status, code.into(), "m".into(), None)
    }

    #[test]
    fn answers_sort_by_status_and_code() {
        assert!(matches!(
            sort(429, "Throttling.RateQuota"),
            UpstreamError::Throttled { .. }
        ));
        assert!(matches!(
            sort(400, "Throttling.AllocationQuota"),
            UpstreamError::Throttled { .. }
        ));
        assert!(matches!(
            sort(401, "InvalidApiKey"),
            UpstreamError::KeyRefused { .. }
        ));
        assert!(matches!(
            sort(400, "Arrearage"),
            UpstreamError::KeyRefused { .. }
        ));
        assert!(matches!(
            sort(503, "InternalError"),
            UpstreamError::Unavailable { .. }
        ));
        let bad = sort(400, "InvalidParameter");
        assert!(bad.is_bad_input() && !bad.is_transient());
        assert!(sort(429, "x").is_transient() && sort(502, "x").is_transient());
        assert!(!sort(401, "InvalidApiKey").is_transient());
        assert_eq!(
            sort(401, "InvalidApiKey").to_string(),
            "upstream alibaba refused the API key (InvalidApiKey): m"
        );
    }
}
