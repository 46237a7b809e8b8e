//! The Alibaba Model Studio (DashScope) shape: the video-synthesis request, mapped to the same
//! [`GenerationRequest`] through the same rules, and its task and error answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::request::{GenerationRequest, MAX_IMAGES, ModelId};
use crate::validate::{Fields, Settings, UriPolicy, ValidationError};

/// The model ids of this shape, for error messages.
const SERVED: &str = "happyhorse-1.0-i2v, happyhorse-1.1-r2v, alibaba/hh1-i2v, alibaba/hh1.1-r2v";

impl ModelId {
    /// The Model Studio name: `happyhorse-1.0-i2v` or `happyhorse-1.1-r2v`.
    pub fn dashscope_name(self) -> &'static str {
        match self {
            ModelId::HhI2v => "happyhorse-1.0-i2v",
            ModelId::HhR2v => "happyhorse-1.1-r2v",
        }
    }

    /// A Model Studio name or a Cloudflare id.
    pub fn parse_dashscope(s: &str) -> Option<ModelId> {
        ModelId::ALL
            .into_iter()
            .find(|m| m.dashscope_name() == s)
            .or_else(|| ModelId::parse(s))
    }

    /// The `media` type each model takes.
    fn media_type(self) -> &'static str {
        match self {
            ModelId::HhI2v => "first_frame",
            ModelId::HhR2v => "reference_image",
        }
    }
}

/// Parses and validates a `video-synthesis` body (uris under the server's policy). Errors point
/// into the body: `/input/media/0/url`, `/parameters/duration`.
pub fn parse_video_synthesis(body: &Value) -> Result<GenerationRequest, ApiError> {
    let fields = Fields::new(body, "")?;
    fields.refuse_unknown(&["model", "input", "parameters"], None)?;
    let model = match fields.string("model")? {
        Some(name) => ModelId::parse_dashscope(name).ok_or_else(|| ApiError::NoSuchModel {
            given: Some(name.to_string()),
            served: SERVED,
        })?,
        None => {
            return Err(ApiError::NoSuchModel {
                given: None,
                served: SERVED,
            });
        }
    };

    fields.required("input")?;
    let input = fields.object("input")?.expect("present: checked above");
    let (allowed, max_media): (&[&str], usize) = match model {
        ModelId::HhI2v => (&["prompt", "negative_prompt", "media"], 1),
        ModelId::HhR2v => (&["prompt", "media"], MAX_IMAGES),
    };
    input.refuse_unknown(allowed, None)?;
    let prompt = match model {
        ModelId::HhI2v => input.text("prompt", 0)?.unwrap_or_default(),
        ModelId::HhR2v => input.required_text("prompt", 1)?,
    };
    let negative_prompt = input.text("negative_prompt", 0)?;
    let images = read_media(&input, model, max_media)?;

    let settings = match fields.object("parameters")? {
        Some(parameters) => {
            let allowed: &[&str] = match model {
                ModelId::HhI2v => &["resolution", "duration", "seed", "watermark"],
                ModelId::HhR2v => &["resolution", "ratio", "duration", "seed", "watermark"],
            };
            parameters.refuse_unknown(allowed, None)?;
            Settings::read(&parameters, model)?
        }
        None => Settings::defaults(model),
    };
    Ok(settings.into_request(model, prompt, negative_prompt, images))
}

/// `input.media`: 1..=`max` items of `{"type", "url"}`, each of the model's media type.
fn read_media(input: &Fields, model: ModelId, max: usize) -> Result<Vec<String>, ValidationError> {
    let items = input.array("media", 1, max)?;
    let media_pointer = input.pointer("media");
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let item = Fields::new(item, &format!("{media_pointer}/{i}"))?;
            item.refuse_unknown(&["type", "url"], None)?;
            let wanted = model.media_type();
            if item.string("type")? != Some(wanted) {
                item.required("type")?;
                let rule = format!("must be {wanted} for {}", model.dashscope_name());
                return Err(ValidationError::new(item.pointer("type"), rule));
            }
            item.required_uri("url", UriPolicy::Remote)
        })
        .collect()
}

/// `task_status` of a Model Studio task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Canceled,
    Unknown,
}

/// `output` of a task answer. Times are Model Studio's `YYYY-MM-DD HH:MM:SS.mmm`; `video_url` is
/// set on success, `code` and `message` on failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutput {
    pub task_id: String,
    pub task_status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The prompt as submitted, on success (Model Studio echoes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orig_prompt: Option<String>,
    /// gallop's extra while running: `step` of `total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<TaskProgress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskProgress {
    pub step: u32,
    pub total: u32,
}

/// `usage` of a succeeded task: seconds of video made and how many videos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUsage {
    pub duration: u32,
    pub video_count: u32,
}

impl TaskOutput {
    /// Only an id and a status, as the submit answer carries.
    pub fn new(task_id: impl Into<String>, task_status: TaskStatus) -> Self {
        TaskOutput {
            task_id: task_id.into(),
            task_status,
            submit_time: None,
            scheduled_time: None,
            end_time: None,
            video_url: None,
            code: None,
            message: None,
            orig_prompt: None,
            progress: None,
        }
    }
}

/// `{"output": {...}, "request_id": "..."}`: the submit answer and `GET /api/v1/tasks/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAnswer {
    pub output: TaskOutput,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TaskUsage>,
}

/// Model Studio's error codes, with the HTTP status each travels with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DashScopeErrorCode {
    InvalidParameter,
    InvalidApiKey,
    ModelNotFound,
    #[serde(rename = "Throttling.RateQuota")]
    ThrottlingRateQuota,
    InternalError,
}

impl DashScopeErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            DashScopeErrorCode::InvalidParameter => 400,
            DashScopeErrorCode::InvalidApiKey => 401,
            DashScopeErrorCode::ModelNotFound => 404,
            DashScopeErrorCode::ThrottlingRateQuota => 429,
            DashScopeErrorCode::InternalError => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DashScopeErrorCode::InvalidParameter => "InvalidParameter",
            DashScopeErrorCode::InvalidApiKey => "InvalidApiKey",
            DashScopeErrorCode::ModelNotFound => "ModelNotFound",
            DashScopeErrorCode::ThrottlingRateQuota => "Throttling.RateQuota",
            DashScopeErrorCode::InternalError => "InternalError",
        }
    }
}

/// `{"code", "message", "request_id"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashScopeError {
    pub code: DashScopeErrorCode,
    pub message: String,
    pub request_id: String,
}

impl ApiError {
    pub fn dashscope_code(&self) -> DashScopeErrorCode {
        match self {
            ApiError::BadInput(_) => DashScopeErrorCode::InvalidParameter,
            ApiError::NoSuchModel { .. } => DashScopeErrorCode::ModelNotFound,
        }
    }

    /// The error body for this error (send with `dashscope_code().http_status()`).
    pub fn to_dashscope(&self, request_id: impl Into<String>) -> DashScopeError {
        DashScopeError {
            code: self.dashscope_code(),
            message: self.to_string(),
            request_id: request_id.into(),
        }
    }
}
