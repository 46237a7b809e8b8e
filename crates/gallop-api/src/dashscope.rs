//! The Alibaba Model Studio (DashScope) shape: the video-synthesis request, mapped to the same
//! [`GenerationRequest`] through the same rules, and its task and error answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::request::{GenerationRequest, MAX_IMAGES, ModelId};
use crate::validate::{Fields, Settings, UriPolicy, ValidationError};

/// Model Studio's HappyHorse ids and the seed model that does each job.
pub const DASHSCOPE_MODELS: [(&str, ModelId); 4] = [
    ("happyhorse-1.0-i2v", ModelId::HhI2v),
    ("happyhorse-1.1-i2v", ModelId::HhI2v),
    ("happyhorse-1.0-r2v", ModelId::HhR2v),
    ("happyhorse-1.1-r2v", ModelId::HhR2v),
];

/// The model ids of this shape, for error messages.
const SERVED: &str = "happyhorse-1.0-i2v, happyhorse-1.1-i2v, happyhorse-1.0-r2v, \
                      happyhorse-1.1-r2v, alibaba/hh1-i2v, alibaba/hh1.1-r2v";

/// What the SDK puts in `input.function` for this API.
const FUNCTION: &str = "video-synthesis";

impl ModelId {
    /// The id's own HappyHorse model on Model Studio: `happyhorse-1.0-i2v` or
    /// `happyhorse-1.1-r2v` (the seeds' versions).
    pub fn dashscope_name(self) -> &'static str {
        match self {
            ModelId::HhI2v => "happyhorse-1.0-i2v",
            ModelId::HhR2v => "happyhorse-1.1-r2v",
        }
    }

    /// A Model Studio id or a Cloudflare id.
    pub fn parse_dashscope(s: &str) -> Option<ModelId> {
        DASHSCOPE_MODELS
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, m)| *m)
            .or_else(|| ModelId::parse(s))
    }

    /// The `media` type each model takes: `first_frame` or `reference_image`.
    pub fn dashscope_media_type(self) -> &'static str {
        match self {
            ModelId::HhI2v => "first_frame",
            ModelId::HhR2v => "reference_image",
        }
    }

    /// The `input` fields besides `media` that carry this model's images, as the SDK's calling
    /// styles send them (`img_url=`, `first_frame_url=`, `reference_urls=`).
    fn url_fields(self) -> &'static [&'static str] {
        match self {
            ModelId::HhI2v => &["img_url", "first_frame_url"],
            ModelId::HhR2v => &["reference_urls"],
        }
    }
}

/// A validated `video-synthesis` body: the request every shape maps to, plus what only this
/// shape carries.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoSynthesis {
    pub request: GenerationRequest,
    /// The model id as the client spelled it (`happyhorse-1.1-i2v`), for task lists.
    pub model_name: String,
    /// `parameters.prompt_extend`: Model Studio rewrites the prompt before generating when true.
    pub prompt_extend: Option<bool>,
    /// Where each image came from in the body (`/input/media/0/url`, `/input/img_url`), so
    /// errors found later name the field the client sent.
    pub image_fields: Vec<String>,
}

/// Parses and validates a `video-synthesis` body (uris under the server's policy). Errors point
/// into the body: `/input/media/0/url`, `/parameters/duration`.
pub fn parse_video_synthesis(body: &Value) -> Result<VideoSynthesis, ApiError> {
    let fields = Fields::new(body, "")?;
    fields.refuse_unknown(&["model", "input", "parameters"], None)?;
    let (model, model_name) = match fields.string("model")? {
        Some(name) => match ModelId::parse_dashscope(name) {
            Some(model) => (model, name.to_string()),
            None => {
                return Err(ApiError::NoSuchModel {
                    given: Some(name.to_string()),
                    served: SERVED,
                });
            }
        },
        None => {
            return Err(ApiError::NoSuchModel {
                given: None,
                served: SERVED,
            });
        }
    };

    fields.required("input")?;
    let input = fields.object("input")?.expect("present: checked above");
    let mut allowed = vec!["prompt", "media", "extend_prompt", "function"];
    if model == ModelId::HhI2v {
        allowed.push("negative_prompt");
    }
    allowed.extend(model.url_fields());
    input.refuse_unknown(&allowed, None)?;
    // The SDK always sends these two; neither changes the video (`extend_prompt` is the SDK's
    // deprecated spelling, superseded by `parameters.prompt_extend`).
    input.boolean("extend_prompt")?;
    if let Some(function) = input.string("function")?
        && function != FUNCTION
    {
        let rule = format!("must be {FUNCTION}");
        return Err(ValidationError::new(input.pointer("function"), rule).into());
    }
    let prompt = match model {
        ModelId::HhI2v => input.text("prompt", 0)?.unwrap_or_default(),
        ModelId::HhR2v => input.required_text("prompt", 1)?,
    };
    let negative_prompt = input.text("negative_prompt", 0)?;
    let (images, image_fields) = read_images(&input, model, &model_name)?;

    let (settings, prompt_extend) = match fields.object("parameters")? {
        Some(parameters) => read_parameters(&parameters, model, &model_name)?,
        None => (Settings::defaults(model), None),
    };
    Ok(VideoSynthesis {
        request: settings.into_request(model, prompt, negative_prompt, images),
        model_name,
        prompt_extend,
        image_fields,
    })
}

/// `parameters`: the shared settings plus `prompt_extend`; parameters of other Model Studio
/// video models are refused with the one HappyHorse uses instead.
fn read_parameters(
    parameters: &Fields,
    model: ModelId,
    model_name: &str,
) -> Result<(Settings, Option<bool>), ValidationError> {
    if parameters.contains("size") {
        let rule = format!("is not a parameter of {model_name}: use resolution (720P or 1080P)");
        return Err(ValidationError::new(parameters.pointer("size"), rule));
    }
    if model == ModelId::HhI2v && parameters.contains("ratio") {
        let rule = format!("is not allowed for {model_name}: the image sets the aspect ratio");
        return Err(ValidationError::new(parameters.pointer("ratio"), rule));
    }
    let allowed: &[&str] = match model {
        ModelId::HhI2v => &[
            "resolution",
            "duration",
            "seed",
            "watermark",
            "prompt_extend",
        ],
        ModelId::HhR2v => &[
            "resolution",
            "ratio",
            "duration",
            "seed",
            "watermark",
            "prompt_extend",
        ],
    };
    parameters.refuse_unknown(allowed, None)?;
    let prompt_extend = parameters.boolean("prompt_extend")?;
    Ok((Settings::read(parameters, model)?, prompt_extend))
}

/// The images, from `input.media` or one of the SDK's url fields (exactly one of them), with
/// the pointer of each.
fn read_images(
    input: &Fields,
    model: ModelId,
    model_name: &str,
) -> Result<(Vec<String>, Vec<String>), ValidationError> {
    let given: Vec<&str> = std::iter::once("media")
        .chain(model.url_fields().iter().copied())
        .filter(|k| input.get(k).is_some())
        .collect();
    match given.as_slice() {
        [] | ["media"] => read_media(input, model, model_name),
        [one] => {
            let pointer = input.pointer(one);
            if *one == "reference_urls" {
                let urls = input.required_uris(one, 1, MAX_IMAGES, UriPolicy::Remote)?;
                let fields = (0..urls.len()).map(|i| format!("{pointer}/{i}")).collect();
                Ok((urls, fields))
            } else {
                Ok((
                    vec![input.required_uri(one, UriPolicy::Remote)?],
                    vec![pointer],
                ))
            }
        }
        [first, second, ..] => {
            let rule = format!(
                "is not allowed with {}: give the images once",
                input.pointer(first)
            );
            Err(ValidationError::new(input.pointer(second), rule))
        }
    }
}

/// `input.media`: 1..=max items of `{"type", "url"}`, each of the model's media type.
fn read_media(
    input: &Fields,
    model: ModelId,
    model_name: &str,
) -> Result<(Vec<String>, Vec<String>), ValidationError> {
    let max = match model {
        ModelId::HhI2v => 1,
        ModelId::HhR2v => MAX_IMAGES,
    };
    let items = input.array("media", 1, max)?;
    let media_pointer = input.pointer("media");
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let item = Fields::new(item, &format!("{media_pointer}/{i}"))?;
            item.refuse_unknown(&["type", "url"], None)?;
            let wanted = model.dashscope_media_type();
            if item.string("type")? != Some(wanted) {
                item.required("type")?;
                let rule = format!("must be {wanted} for {model_name}");
                return Err(ValidationError::new(item.pointer("type"), rule));
            }
            let url = item.required_uri("url", UriPolicy::Remote)?;
            Ok((url, item.pointer("url")))
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
    /// Also any status this version does not know.
    #[serde(other)]
    Unknown,
}

impl TaskStatus {
    /// Succeeded, failed, canceled or unknown: polling it again changes nothing.
    pub fn is_final(self) -> bool {
        !matches!(self, TaskStatus::Pending | TaskStatus::Running)
    }
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
    /// The prompt after Model Studio rewrote it (`prompt_extend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_prompt: Option<String>,
    /// gallop's extra while running: `step` of `total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<TaskProgress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskProgress {
    pub step: u32,
    pub total: u32,
}

/// `usage` of a succeeded task: seconds billed, seconds of video made, how many videos, the
/// resolution class (720 or 1080) and the aspect ratio.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUsage {
    pub duration: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_video_duration: Option<u32>,
    pub video_count: u32,
    #[serde(rename = "SR", default, skip_serializing_if = "Option::is_none")]
    pub sr: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<String>,
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
            actual_prompt: None,
            progress: None,
        }
    }
}

/// `{"output": {...}, "request_id": "..."}`: the submit answer and `GET /api/v1/tasks/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAnswer {
    pub output: TaskOutput,
    #[serde(default)]
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
    /// A task that cannot be cancelled (it already ended).
    UnsupportedOperation,
    InternalError,
}

impl DashScopeErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            DashScopeErrorCode::InvalidParameter => 400,
            DashScopeErrorCode::InvalidApiKey => 401,
            DashScopeErrorCode::ModelNotFound => 404,
            DashScopeErrorCode::ThrottlingRateQuota => 429,
            DashScopeErrorCode::UnsupportedOperation => 400,
            DashScopeErrorCode::InternalError => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DashScopeErrorCode::InvalidParameter => "InvalidParameter",
            DashScopeErrorCode::InvalidApiKey => "InvalidApiKey",
            DashScopeErrorCode::ModelNotFound => "ModelNotFound",
            DashScopeErrorCode::ThrottlingRateQuota => "Throttling.RateQuota",
            DashScopeErrorCode::UnsupportedOperation => "UnsupportedOperation",
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

/// Key of a job's stored request under which the DashScope route keeps what only that shape
/// carries: `model` (as the client spelled it), `prompt_extend` and `image_fields`; the worker
/// reads `prompt_extend` back when it routes the job upstream.
pub const DASHSCOPE_KEY: &str = "dashscope";
