//! The Cloudflare shape: the `/ai/run` body and answers, the classic route's answer, and the v4
//! envelope with the error codes Cloudflare's users know.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::request::{GenerationRequest, ModelId};
use crate::validate::{Fields, ValidationError, parse_input};

/// The model ids of this shape, for error messages.
const SERVED: &str = "alibaba/hh1-i2v, alibaba/hh1.1-r2v";

/// What a POST to `/ai/run` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum RunBody {
    /// `{"model", "input", "queueRequest"?}`: run (or queue, when `queue_request`) a generation.
    Submit {
        request: GenerationRequest,
        queue_request: bool,
    },
    /// `{"request_id"}`: the current state of a queued request.
    Poll { request_id: String },
}

/// Parses and validates a `/ai/run` body (uris under the server's policy).
pub fn parse_run_body(body: &Value) -> Result<RunBody, ApiError> {
    let fields = Fields::new(body, "")?;
    if fields.contains("request_id") {
        if let Some(other) = ["model", "input", "queueRequest"]
            .into_iter()
            .find(|k| fields.contains(k))
        {
            return Err(ValidationError::new(
                fields.pointer(other),
                "is not allowed with /request_id",
            )
            .into());
        }
        fields.refuse_unknown(&["request_id"], None)?;
        let request_id = fields.required_text("request_id", 1)?;
        return Ok(RunBody::Poll { request_id });
    }
    fields.refuse_unknown(&["model", "input", "queueRequest"], None)?;
    let model = resolve_model(fields.string("model")?)?;
    let input = fields.required("input")?;
    let queue_request = fields.boolean("queueRequest")?.unwrap_or(false);
    let request = parse_input(model, input)?;
    Ok(RunBody::Submit {
        request,
        queue_request,
    })
}

/// The model of a body or of the classic route's path (already percent-decoded).
pub fn resolve_model(model: Option<&str>) -> Result<ModelId, ApiError> {
    let no_such_model = |given: Option<&str>| ApiError::NoSuchModel {
        given: given.map(str::to_string),
        served: SERVED,
    };
    let model = model.ok_or_else(|| no_such_model(None))?;
    ModelId::parse(model).ok_or_else(|| no_such_model(Some(model)))
}

/// Cloudflare's error codes, with the HTTP status each travels with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfErrorCode {
    BadInput,
    NoSuchModel,
    Authentication,
    TooLarge,
    Timeout,
    OutOfCapacity,
}

impl CfErrorCode {
    pub fn code(self) -> u32 {
        match self {
            CfErrorCode::BadInput => 5006,
            CfErrorCode::NoSuchModel => 5007,
            CfErrorCode::Authentication => 10000,
            CfErrorCode::TooLarge => 3006,
            CfErrorCode::Timeout => 3007,
            CfErrorCode::OutOfCapacity => 3040,
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            CfErrorCode::BadInput | CfErrorCode::NoSuchModel => 400,
            CfErrorCode::Authentication => 401,
            CfErrorCode::TooLarge => 413,
            CfErrorCode::Timeout => 408,
            CfErrorCode::OutOfCapacity => 429,
        }
    }

    /// Cloudflare's wording, for errors that carry no detail of their own.
    pub fn default_message(self) -> &'static str {
        match self {
            CfErrorCode::BadInput => "Bad input",
            CfErrorCode::NoSuchModel => "No such model",
            CfErrorCode::Authentication => "Authentication error",
            CfErrorCode::TooLarge => "Request is too large",
            CfErrorCode::Timeout => "Request timeout",
            CfErrorCode::OutOfCapacity => "Out of capacity",
        }
    }
}

impl ApiError {
    pub fn cloudflare_code(&self) -> CfErrorCode {
        match self {
            ApiError::BadInput(_) => CfErrorCode::BadInput,
            ApiError::NoSuchModel { .. } => CfErrorCode::NoSuchModel,
        }
    }

    /// The v4 error envelope for this error (send with `cloudflare_code().http_status()`).
    pub fn to_cloudflare(&self) -> Envelope<Value> {
        Envelope::error(self.cloudflare_code(), self.to_string())
    }
}

/// One entry of `errors` or `messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CfMessage {
    pub code: u32,
    pub message: String,
}

/// Cloudflare's v4 envelope: `{"result", "success", "errors", "messages"}`. `result` is null on
/// errors. The classic route answers `Envelope<VideoResult>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub result: Option<T>,
    pub success: bool,
    pub errors: Vec<CfMessage>,
    pub messages: Vec<CfMessage>,
}

impl<T> Envelope<T> {
    pub fn ok(result: T) -> Self {
        Envelope {
            result: Some(result),
            success: true,
            errors: Vec::new(),
            messages: Vec::new(),
        }
    }

    pub fn error(code: CfErrorCode, message: impl Into<String>) -> Self {
        Envelope {
            result: None,
            success: false,
            errors: vec![CfMessage {
                code: code.code(),
                message: message.into(),
            }],
            messages: Vec::new(),
        }
    }
}

/// `{"video": URL}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoResult {
    pub video: String,
}

/// Beside a completed answer. `keySource` is what Cloudflare sends; the rest is gallop's extra.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayMetadata {
    #[serde(rename = "keySource")]
    pub key_source: String,
    #[serde(rename = "requestId", default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The engine that served (`preview` or `wan`), so a preview is never taken for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The seed used, so the run can be repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u32>,
}

impl GatewayMetadata {
    /// `{"keySource": "Unified"}`: gallop holds no client keys.
    pub fn unified() -> Self {
        GatewayMetadata {
            key_source: "Unified".to_string(),
            request_id: None,
            engine: None,
            seed: None,
        }
    }
}

/// Work done so far: `step` of `total`, and the same as a percentage when the server adds it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunProgress {
    pub step: u32,
    pub total: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
}

/// `{"code", "message"}` of a job that failed after it was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFailure {
    pub code: String,
    pub message: String,
}

/// The answers of `/ai/run`, tagged by `state`. The optional fields are gallop's extras.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum RunAnswer {
    Queued {
        request_id: String,
        model: ModelId,
        /// Jobs ahead of this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queue_position: Option<u64>,
    },
    Running {
        request_id: String,
        model: ModelId,
        progress: RunProgress,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eta_seconds: Option<u64>,
    },
    Completed {
        result: VideoResult,
        #[serde(rename = "gatewayMetadata")]
        gateway_metadata: GatewayMetadata,
    },
    Failed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<ModelId>,
        error: RunFailure,
    },
}
