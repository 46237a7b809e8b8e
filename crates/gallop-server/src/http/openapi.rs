//! The OpenAPI 3 document served at `/openapi.json`, written by hand from [`ROUTES`], the one list
//! of every route the router serves (a test checks each is routed).

use serde_json::{Map, Value, json};

/// One route: method, OpenAPI path, summary, whether it needs the bearer token, and the success
/// status with its media type.
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub bearer: bool,
    pub success: (&'static str, &'static str),
    /// The JSON request body's schema name under components, if any.
    pub body: Option<&'static str>,
}

const JSON: &str = "application/json";

const DASHSCOPE_SYNTHESIS: &str = "/api/v1/services/aigc/video-generation/video-synthesis";

pub const ROUTES: &[RouteDoc] = &[
    RouteDoc {
        method: "get",
        path: "/",
        summary: "The web page: sign in with a token, make videos, follow them, see the history",
        bearer: false,
        success: ("200", "text/html"),
        body: None,
    },
    RouteDoc {
        method: "get",
        path: "/app.js",
        summary: "The web page's script",
        bearer: false,
        success: ("200", "text/javascript"),
        body: None,
    },
    RouteDoc {
        method: "get",
        path: "/app.css",
        summary: "The web page's style sheet",
        bearer: false,
        success: ("200", "text/css"),
        body: None,
    },
    RouteDoc {
        method: "post",
        path: "/client/v4/accounts/{account_id}/ai/run",
        summary: "Cloudflare shape: run a model (waits for the video by default), queue it with \
                  queueRequest, or poll a queued run with {\"request_id\"}",
        bearer: true,
        success: ("200", JSON),
        body: Some("CloudflareRun"),
    },
    RouteDoc {
        method: "post",
        path: "/client/v4/accounts/{account_id}/ai/run/{model}",
        summary: "Cloudflare classic Workers AI route: the body is the input object; the model id \
                  may be raw (alibaba/hh1-i2v) or percent-encoded (alibaba%2Fhh1-i2v)",
        bearer: true,
        success: ("200", JSON),
        body: Some("ModelInput"),
    },
    RouteDoc {
        method: "post",
        path: DASHSCOPE_SYNTHESIS,
        summary: "Alibaba Model Studio (DashScope) shape: create an async task; requires \
                  X-DashScope-Async: enable",
        bearer: true,
        success: ("200", JSON),
        body: Some("DashScopeSynthesis"),
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/tasks/{task_id}",
        summary: "Alibaba Model Studio (DashScope) shape: a task's status, times, video_url and \
                  usage; UNKNOWN for an unknown or expired id",
        bearer: true,
        success: ("200", JSON),
        body: None,
    },
    RouteDoc {
        method: "post",
        path: "/api/v1/tasks/{task_id}/cancel",
        summary: "Alibaba Model Studio (DashScope) shape: cancel a pending (or running) task",
        bearer: true,
        success: ("200", JSON),
        body: None,
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/tasks",
        summary: "Alibaba Model Studio (DashScope) shape: the token's tasks, newest first; \
                  ?status, model_name, start_time, end_time (YYYYMMDDhhmmss UTC), page_no, \
                  page_size",
        bearer: true,
        success: ("200", JSON),
        body: None,
    },
    RouteDoc {
        method: "post",
        path: "/v1/jobs",
        summary: "Create a job (202 with its id). Idempotency-Key: the same key and body return \
                  the same job; another body answers 422",
        bearer: true,
        success: ("202", JSON),
        body: Some("JobSubmit"),
    },
    RouteDoc {
        method: "get",
        path: "/v1/jobs",
        summary: "The token's jobs, newest first; ?limit=N (1-100, default 20) and \
                  ?cursor=ID (the next_cursor of the previous page)",
        bearer: true,
        success: ("200", JSON),
        body: None,
    },
    RouteDoc {
        method: "get",
        path: "/v1/jobs/{id}",
        summary: "A job: status, queue position, progress step/total, ETA, seed used, timings, \
                  engine, result URL or error",
        bearer: true,
        success: ("200", JSON),
        body: None,
    },
    RouteDoc {
        method: "post",
        path: "/v1/jobs/{id}/cancel",
        summary: "Cancel a job: a queued job ends at once, a running one at its next step",
        bearer: true,
        success: ("200", JSON),
        body: None,
    },
    RouteDoc {
        method: "get",
        path: "/v1/jobs/{id}/events",
        summary: "Server-sent events: one `job` event per change (progress, status) until the \
                  job ends; resumes with Last-Event-ID",
        bearer: true,
        success: ("200", "text/event-stream"),
        body: None,
    },
    RouteDoc {
        method: "get",
        path: "/v1/files/{id}",
        summary: "Download a result video through its signed link (?exp&sig, no bearer token); \
                  supports HTTP Range",
        bearer: false,
        success: ("200", "video/mp4"),
        body: None,
    },
    RouteDoc {
        method: "post",
        path: "/v1/uploads",
        summary: "Upload an input image (raw image body, or multipart with one file part), \
                  checked against a job image's rules (400 naming the rule); answers the uri \
                  gallop://uploads/{id}, which any number of the account's jobs may use until \
                  expires_at (24 h after the upload by default), and the models it fits",
        bearer: true,
        success: ("201", JSON),
        body: None,
    },
    RouteDoc {
        method: "put",
        path: "/v1/keys/{provider}",
        summary: "Store the token's own account's upstream key (BYOK) for provider alibaba: \
                  {\"api_key\": \"sk-...\"}; sealed at rest, never returned",
        bearer: true,
        success: ("200", JSON),
        body: Some("ProviderKey"),
    },
    RouteDoc {
        method: "delete",
        path: "/v1/keys/{provider}",
        summary: "Remove the account's own upstream key; its jobs then use the server's (Unified)",
        bearer: true,
        success: ("200", JSON),
        body: None,
    },
    RouteDoc {
        method: "get",
        path: "/v1/uploads/{id}",
        summary: "An uploaded image of the token's account, as uploaded",
        bearer: true,
        success: ("200", "image/*"),
        body: None,
    },
    RouteDoc {
        method: "get",
        path: "/v1/models",
        summary: "Each model id with the engine, checkpoint and compute (device, precision) that \
                  serve it (preview or wan); \
                  an id with no checkpoint configured has served: false and is refused at submit",
        bearer: true,
        success: ("200", JSON),
        body: None,
    },
    RouteDoc {
        method: "get",
        path: "/openapi.json",
        summary: "This document",
        bearer: false,
        success: ("200", JSON),
        body: None,
    },
    RouteDoc {
        method: "get",
        path: "/healthz",
        summary: "Liveness: the process answers",
        bearer: false,
        success: ("200", "text/plain"),
        body: None,
    },
    RouteDoc {
        method: "get",
        path: "/readyz",
        summary: "Readiness: the job store answers",
        bearer: false,
        success: ("200", "text/plain"),
        body: None,
    },
    RouteDoc {
        method: "get",
        path: "/metrics",
        summary: "Prometheus text: jobs by status, queue depth, HTTP requests by route and \
                  status, job durations",
        bearer: false,
        success: ("200", "text/plain"),
        body: None,
    },
];

/// The OpenAPI document, with `server_url` as its one server.
pub fn document(server_url: &str) -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.path)
            .or_insert_with(|| Value::Object(Map::new()));
        entry[route.method] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "gallop",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-hosted image-to-video and reference-to-video generation. \
                            Errors outside the DashScope routes use Cloudflare's v4 envelope. \
                            Auth: `Authorization: Bearer TOKEN`, each token bound to one account. \
                            No or unknown token: 401 (code 10000). A token used on another \
                            account's `/accounts/{account_id}/` path: 401 (code 10000). Another \
                            account's jobs: 404 (code 7003); DashScope answers task_status \
                            UNKNOWN. Result files need no token: the signed link is the \
                            capability; expired or tampered links answer 403 (code 10001), a \
                            missing signature 404."
        },
        "servers": [{ "url": server_url }],
        "paths": paths,
        "components": components_with_nullable_optionals(),
    })
}

fn operation(route: &RouteDoc) -> Value {
    let mut parameters: Vec<Value> = path_params(route.path)
        .map(|name| {
            let schema = if name == "model" {
                json!({"type": "string", "enum": ["alibaba/hh1-i2v", "alibaba/hh1.1-r2v"]})
            } else {
                json!({"type": "string"})
            };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    if route.path == "/v1/files/{id}" {
        for name in ["exp", "sig"] {
            parameters.push(json!({"name": name, "in": "query", "required": true, "schema": {"type": "string"}}));
        }
    }
    if route.path == DASHSCOPE_SYNTHESIS {
        // The server answers 400 without it: only async tasks are served.
        parameters.push(
            json!({"name": "X-DashScope-Async", "in": "header", "required": true,
            "schema": {"type": "string", "enum": ["enable"]}}),
        );
    }
    let (status, media) = route.success;
    let mut op = json!({
        "summary": route.summary,
        "parameters": parameters,
        "responses": {
            status: { "description": "Success", "content": { media: { "schema": {} } } },
            "4XX": { "description": "Error envelope", "content": { JSON: { "schema": { "$ref": "#/components/schemas/ErrorEnvelope" } } } }
        },
    });
    if route.path == "/v1/jobs/{id}/cancel" {
        op["responses"]["202"] = json!({
            "description": "Cancel requested: the running job stops at its next step",
            "content": { JSON: { "schema": {} } }
        });
    }
    if route.bearer {
        op["security"] = json!([{ "bearer": [] }]);
    } else {
        op["security"] = json!([]);
    }
    if route.path == "/v1/uploads" {
        // An empty body is refused (400): the image bytes, raw or as a multipart file part.
        op["requestBody"] = json!({
            "required": true,
            "content": {
                "image/*": { "schema": { "type": "string", "format": "binary", "minLength": 1 } },
                "multipart/form-data": { "schema": { "type": "object", "required": ["file"],
                    "properties": { "file": { "type": "string", "format": "binary" } } } }
            }
        });
    }
    if let Some(schema) = route.body {
        op["requestBody"] = json!({
            "required": true,
            "content": { JSON: { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
        });
    }
    op
}

/// `{name}` segments of a path.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// The request bodies' readers take a null field as absent: every optional property of a
/// request schema says so (schemathesis sent `"watermark": null` and it was accepted).
fn components_with_nullable_optionals() -> Value {
    let mut components = components();
    for (name, schema) in components["schemas"].as_object_mut().unwrap() {
        if name != "ErrorEnvelope" {
            nullable_optionals(schema);
        }
    }
    components
}

fn nullable_optionals(schema: &mut Value) {
    let required: Vec<Value> = schema["required"].as_array().cloned().unwrap_or_default();
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for (key, property) in properties.iter_mut() {
            if !required.contains(&Value::from(key.as_str())) && property.get("$ref").is_none() {
                property["nullable"] = Value::Bool(true);
                // A validator checks enum before nullable: null must be listed too.
                if let Some(options) = property.get_mut("enum").and_then(Value::as_array_mut) {
                    options.push(Value::Null);
                }
            }
            nullable_optionals(property);
        }
    }
    if let Some(items) = schema.get_mut("items") {
        nullable_optionals(items);
    }
    for key in ["oneOf", "anyOf"] {
        for branch in schema
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            nullable_optionals(branch);
        }
    }
}

/// A model's input object: its own fields (`own`) and the settings every model takes; fields
/// not listed are refused.
fn input_schema(required: &[&str], mut own: Value) -> Value {
    let settings = json!({
        "resolution": { "type": "string", "enum": ["720P", "1080P"] },
        "duration": { "type": "integer", "minimum": 3, "maximum": 15 },
        "seed": { "type": "integer", "minimum": 0, "maximum": 2147483647 },
        "watermark": { "type": "boolean" }
    });
    for (key, schema) in settings.as_object().unwrap() {
        own[key] = schema.clone();
    }
    json!({ "type": "object", "required": required, "properties": own, "additionalProperties": false })
}

/// A Cloudflare run body of one model: its id and its input.
fn run_schema(model: &str, input: &str) -> Value {
    json!({
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": { "type": "string", "enum": [model] },
            "input": { "$ref": format!("#/components/schemas/{input}") },
            "queueRequest": { "type": "boolean" }
        },
        "additionalProperties": false
    })
}

fn components() -> Value {
    json!({
        "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        "schemas": {
            "ModelInput": {
                "type": "object",
                "description": "alibaba/hh1-i2v: image (uri, required), prompt, negative_prompt, resolution, duration, seed, watermark. alibaba/hh1.1-r2v: prompt (1-2500 chars, required), images (1-9 uris, required), resolution, ratio, duration, seed, watermark. Unknown fields are refused.",
                "properties": {
                    "image": { "type": "string", "format": "uri" },
                    "images": { "type": "array", "minItems": 1, "maxItems": 9, "items": { "type": "string", "format": "uri" } },
                    "prompt": { "type": "string", "maxLength": 2500 },
                    "negative_prompt": { "type": "string" },
                    "resolution": { "type": "string", "enum": ["720P", "1080P"] },
                    "ratio": { "type": "string", "enum": ["16:9", "9:16", "3:4", "4:3", "1:1", "21:9", "9:21", "5:4", "4:5"] },
                    "duration": { "type": "integer", "minimum": 3, "maximum": 15 },
                    "seed": { "type": "integer", "minimum": 0, "maximum": 2147483647 },
                    "watermark": { "type": "boolean" }
                },
                "additionalProperties": false
            },
            "I2vInput": input_schema(&["image"], json!({
                "image": { "$ref": "#/components/schemas/ImageUri" },
                "prompt": { "type": "string", "maxLength": 2500 },
                "negative_prompt": { "type": "string" }
            })),
            "R2vInput": input_schema(&["prompt", "images"], json!({
                "images": { "type": "array", "minItems": 1, "maxItems": 9, "items": { "$ref": "#/components/schemas/ImageUri" } },
                "prompt": { "type": "string", "minLength": 1, "maxLength": 2500, "pattern": "\\S" },
                "ratio": { "type": "string", "enum": ["16:9", "9:16", "3:4", "4:3", "1:1", "21:9", "9:21", "5:4", "4:5"] }
            })),
            "ImageUri": {
                "type": "string",
                "description": "https:// or http:// (fetched by the worker), data:image/...;base64,... or gallop://uploads/ID",
                "pattern": "^(?:[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#\\u0000-\\u001f\\u007f-\\u009f]+[^\\s\\u0000-\\u001f\\u007f-\\u009f]*|gallop://uploads/[A-Za-z0-9_-]+|[Dd][Aa][Tt][Aa]:[Ii][Mm][Aa][Gg][Ee]/[A-Za-z0-9+.-]+;base64,[A-Za-z0-9+/=_-]+)$"
            },
            "I2vRun": run_schema("alibaba/hh1-i2v", "I2vInput"),
            "R2vRun": run_schema("alibaba/hh1.1-r2v", "R2vInput"),
            "JobSubmit": {
                "description": "A model and its input; the job is always queued",
                "oneOf": [
                    { "$ref": "#/components/schemas/I2vRun" },
                    { "$ref": "#/components/schemas/R2vRun" }
                ]
            },
            "CloudflareRun": {
                "description": "A run (waits for the video unless queueRequest), or {\"request_id\"} alone to poll a queued run",
                "oneOf": [
                    { "$ref": "#/components/schemas/I2vRun" },
                    { "$ref": "#/components/schemas/R2vRun" },
                    { "type": "object", "required": ["request_id"], "additionalProperties": false,
                      "properties": { "request_id": { "type": "string", "minLength": 1 } } }
                ]
            },
            "DashScopeSynthesis": {
                "type": "object",
                "required": ["model", "input"],
                "properties": {
                    "model": { "type": "string" },
                    "input": {
                        "type": "object",
                        "properties": {
                            "prompt": { "type": "string" },
                            "negative_prompt": { "type": "string" },
                            "media": { "type": "array", "items": { "type": "object", "properties": {
                                "type": { "type": "string", "enum": ["first_frame", "reference_image"] },
                                "url": { "type": "string" } }, "additionalProperties": false } },
                            "img_url": { "type": "string" },
                            "first_frame_url": { "type": "string" },
                            "reference_urls": { "type": "array", "items": { "type": "string" } },
                            "extend_prompt": { "type": "boolean" },
                            "function": { "type": "string", "enum": ["video-synthesis"] }
                        },
                        "additionalProperties": false
                    },
                    "parameters": { "type": "object", "properties": {
                        "resolution": { "type": "string", "enum": ["720P", "1080P"] },
                        "ratio": { "type": "string" },
                        "duration": { "type": "integer", "minimum": 3, "maximum": 15 },
                        "seed": { "type": "integer", "minimum": 0, "maximum": 2147483647 },
                        "watermark": { "type": "boolean" },
                        "prompt_extend": { "type": "boolean" } }, "additionalProperties": false }
                },
                "additionalProperties": false
            },
            "ProviderKey": {
                "type": "object",
                "required": ["api_key"],
                "properties": { "api_key": { "type": "string", "minLength": 1, "maxLength": 512 } }
            },
            "ErrorEnvelope": {
                "type": "object",
                "properties": {
                    "success": { "type": "boolean" },
                    "errors": { "type": "array", "items": { "type": "object", "properties": {
                        "code": { "type": "integer" }, "message": { "type": "string" } } } },
                    "messages": { "type": "array" },
                    "result": {}
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_with_its_path_parameters() {
        let doc = document("http://127.0.0.1:8080");
        assert_eq!(doc["openapi"], "3.0.3");
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method];
            assert!(op.is_object(), "{} {} missing", route.method, route.path);
            let params = op["parameters"].as_array().unwrap();
            for name in path_params(route.path) {
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{} lacks path parameter {name}",
                    route.path
                );
            }
        }
    }
}
