//! The calls: submit, read, cancel, download.

use std::time::Duration;

use futures_util::StreamExt;
use gallop_api::{GenerationRequest, ModelId, TaskAnswer};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};

use crate::error::UpstreamError;
use crate::key::ApiKey;

/// The path of video synthesis under a Model Studio base URL (`.../api/v1`).
const SYNTHESIS_PATH: &str = "/services/aigc/video-generation/video-synthesis";

/// One upstream Model Studio endpoint.
#[derive(Debug, Clone)]
pub struct Upstream {
    name: String,
    /// `https://dashscope-intl.aliyuncs.com/api/v1`, no trailing slash.
    base_url: String,
    http: reqwest::Client,
}

impl Upstream {
    /// `name` is the config's (`alibaba`); each call gives up after `timeout`.
    pub fn new(name: &str, base_url: &str, timeout: Duration) -> Upstream {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .expect("an HTTP client with timeouts builds");
        Upstream {
            name: name.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            http,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Creates an async task; returns upstream's task id.
    pub async fn submit(&self, key: &ApiKey, body: &Value) -> Result<String, UpstreamError> {
        let request = self
            .http
            .post(format!("{}{SYNTHESIS_PATH}", self.base_url))
            .header("X-DashScope-Async", "enable")
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let answer: TaskAnswer = self.call(key, request).await?;
        Ok(answer.output.task_id)
    }

    /// `GET /tasks/{id}`.
    pub async fn task(&self, key: &ApiKey, task_id: &str) -> Result<TaskAnswer, UpstreamError> {
        let request = self
            .http
            .get(format!("{}/tasks/{}", self.base_url, path_segment(task_id)));
        self.call(key, request).await
    }

    /// `POST /tasks/{id}/cancel`.
    pub async fn cancel(&self, key: &ApiKey, task_id: &str) -> Result<(), UpstreamError> {
        let request = self.http.post(format!(
            "{}/tasks/{}/cancel",
            self.base_url,
            path_segment(task_id)
        ));
        self.call::<Value>(key, request).await.map(drop)
    }

    /// Downloads a finished task's video (a signed URL: no key is sent), at most `max_bytes`.
    pub async fn download(&self, url: &str, max_bytes: usize) -> Result<Vec<u8>, UpstreamError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.unavailable(format!("downloading the video: {}", plain(e))))?;
        let status = response.status().as_u16();
        if status != 200 {
            let detail = format!("downloading the video: HTTP {status}");
            return Err(if status >= 500 || status == 429 {
                self.unavailable(detail)
            } else {
                self.protocol(detail)
            });
        }
        let mut bytes = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| self.unavailable(format!("downloading the video: {}", plain(e))))?;
            if bytes.len() + chunk.len() > max_bytes {
                return Err(self.protocol(format!("the video is larger than {max_bytes} bytes")));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// Sends with the key and reads a JSON answer, sorting failures into [`UpstreamError`].
    /// Upstream's own messages are passed on with the key scrubbed from them, in case one
    /// echoes it.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        key: &ApiKey,
        request: reqwest::RequestBuilder,
    ) -> Result<T, UpstreamError> {
        let response = request
            .header(AUTHORIZATION, format!("Bearer {}", key.expose()))
            .send()
            .await
            .map_err(|e| self.unavailable(plain(e)))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response
            .text()
            .await
            .map_err(|e| self.unavailable(format!("reading the answer: {}", plain(e))))?;
        let text = text.replace(key.expose(), "[redacted]");
        if status == 200 {
            return serde_json::from_str(&text)
                .map_err(|e| self.protocol(format!("{e} in {}", clip(&text))));
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let field = |k: &str| body[k].as_str().map(str::to_string);
        let code = field("code").unwrap_or_else(|| format!("HTTP {status}"));
        let message = field("message").unwrap_or_else(|| clip(&text));
        Err(UpstreamError::from_answer(
            &self.name,
            status,
            code,
            message,
            retry_after,
        ))
    }

    fn unavailable(&self, detail: String) -> UpstreamError {
        UpstreamError::Unavailable {
            upstream: self.name.clone(),
            detail,
        }
    }

    fn protocol(&self, detail: String) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.name.clone(),
            detail,
        }
    }
}

/// A reqwest error with its cause chain (connection refused, timed out), without the URL's
/// query (signed links carry signatures).
fn plain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// At most 300 characters of a body, for messages.
fn clip(text: &str) -> String {
    let clipped: String = text.chars().take(300).collect();
    if clipped.len() < text.len() {
        format!("{clipped}...")
    } else {
        clipped
    }
}

/// A task id as one path segment: ids are opaque, so anything that would change the path is
/// percent-encoded.
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The Model Studio body for `request` on `model`: `images` are the request's images in a form
/// upstream accepts (public URLs or `data:` URIs), `seed` the one in force, `prompt_extend` as
/// the client asked (absent: upstream's default).
pub fn synthesis_body(
    request: &GenerationRequest,
    model: &str,
    images: &[String],
    seed: u32,
    prompt_extend: Option<bool>,
) -> Value {
    let media_type = request.model.dashscope_media_type();
    let media: Vec<Value> = images
        .iter()
        .map(|url| json!({"type": media_type, "url": url}))
        .collect();
    let mut input = json!({ "media": media });
    if !request.prompt.is_empty() {
        input["prompt"] = json!(request.prompt);
    }
    if let Some(negative) = &request.negative_prompt {
        input["negative_prompt"] = json!(negative);
    }
    let mut parameters = json!({
        "resolution": request.resolution.as_str(),
        "duration": request.duration,
        "seed": seed,
        "watermark": request.watermark,
    });
    if let (ModelId::HhR2v, Some(ratio)) = (request.model, request.ratio) {
        parameters["ratio"] = json!(ratio.as_str());
    }
    if let Some(extend) = prompt_extend {
        parameters["prompt_extend"] = json!(extend);
    }
    json!({ "model": model, "input": input, "parameters": parameters })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gallop_api::{Ratio, Resolution};

    #[test]
    fn the_body_is_what_gallop_itself_accepts_as_model_studio() {
        let request = GenerationRequest {
            model: ModelId::HhR2v,
            prompt: "image 1 meets image 2".into(),
            negative_prompt: None,
            images: vec!["gallop://uploads/u1".into(), "https://x/b.png".into()],
            resolution: Resolution::P1080,
            ratio: Some(Ratio::R9x16),
            duration: 4,
            seed: None,
            watermark: false,
        };
        let images = vec![
            "data:image/png;base64,AAAA".to_string(),
            "https://x/b.png".to_string(),
        ];
        let body = synthesis_body(&request, "happyhorse-1.1-r2v", &images, 9, Some(false));
        assert_eq!(
            body,
            json!({"model": "happyhorse-1.1-r2v",
                   "input": {"prompt": "image 1 meets image 2", "media": [
                       {"type": "reference_image", "url": "data:image/png;base64,AAAA"},
                       {"type": "reference_image", "url": "https://x/b.png"}]},
                   "parameters": {"resolution": "1080P", "duration": 4, "seed": 9,
                                  "watermark": false, "ratio": "9:16", "prompt_extend": false}})
        );
        let parsed = gallop_api::parse_video_synthesis(&body).unwrap();
        assert_eq!(parsed.request.images, images);
        assert_eq!(parsed.request.seed, Some(9));
        assert_eq!(parsed.prompt_extend, Some(false));
    }

    #[test]
    fn task_ids_stay_one_path_segment() {
        assert_eq!(path_segment("abc-123_x.y"), "abc-123_x.y");
        assert_eq!(path_segment("../a b"), "..%2Fa%20b");
    }
}
