//! Validation of the seeds' `input` objects into a [`GenerationRequest`], with errors that name the
//! field (as a JSON pointer) and the rule it broke. The field readers take the pointer prefix as a
//! parameter so other shapes (DashScope's `/parameters/...`) share the same rules and messages.

use serde_json::{Map, Value};

use crate::request::{
    DEFAULT_DURATION, GenerationRequest, MAX_DURATION, MAX_IMAGES, MAX_PROMPT_CHARS, MAX_SEED,
    MIN_DURATION, ModelId, Ratio, Resolution,
};

/// One broken rule: `pointer` names the field (`/input/duration`), `rule` says what it must be
/// (`must be <= 15`). Displayed as `"{pointer} {rule}"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display(pointer, rule))]
pub struct ValidationError {
    pub pointer: String,
    pub rule: String,
}

fn display(pointer: &str, rule: &str) -> String {
    if pointer.is_empty() {
        rule.to_string()
    } else {
        format!("{pointer} {rule}")
    }
}

impl ValidationError {
    pub fn new(pointer: impl Into<String>, rule: impl Into<String>) -> Self {
        ValidationError {
            pointer: pointer.into(),
            rule: rule.into(),
        }
    }
}

/// Which image uris are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UriPolicy {
    /// What a server takes from clients: `https://`, `http://`, `data:image/...;base64,...` and
    /// `gallop://uploads/ID`. Never `file://`: a client must not name the server's files.
    #[default]
    Remote,
    /// Also `file://`, for the CLI, which reads its own user's files.
    AllowFiles,
}

/// Validates a Cloudflare-shape `input` object for `model`, with [`UriPolicy::Remote`].
pub fn parse_input(model: ModelId, input: &Value) -> Result<GenerationRequest, ValidationError> {
    parse_input_with(model, input, UriPolicy::Remote)
}

const I2V_FIELDS: &[&str] = &[
    "image",
    "prompt",
    "negative_prompt",
    "resolution",
    "duration",
    "seed",
    "watermark",
];
const R2V_FIELDS: &[&str] = &[
    "prompt",
    "images",
    "resolution",
    "ratio",
    "duration",
    "seed",
    "watermark",
];

/// Validates a Cloudflare-shape `input` object for `model` under a chosen uri policy.
pub fn parse_input_with(
    model: ModelId,
    input: &Value,
    policy: UriPolicy,
) -> Result<GenerationRequest, ValidationError> {
    let fields = Fields::new(input, "/input")?;
    match model {
        ModelId::HhI2v => {
            fields.refuse_unknown(I2V_FIELDS, Some((model, R2V_FIELDS)))?;
            let image = fields.required_uri("image", policy)?;
            let prompt = fields.text("prompt", 0)?.unwrap_or_default();
            let negative_prompt = fields.text("negative_prompt", 0)?;
            let settings = Settings::read(&fields, model)?;
            Ok(settings.into_request(model, prompt, negative_prompt, vec![image]))
        }
        ModelId::HhR2v => {
            fields.refuse_unknown(R2V_FIELDS, Some((model, I2V_FIELDS)))?;
            let prompt = fields.required_text("prompt", 1)?;
            let images = fields.required_uris("images", 1, MAX_IMAGES, policy)?;
            let settings = Settings::read(&fields, model)?;
            Ok(settings.into_request(model, prompt, None, images))
        }
    }
}

/// The generation settings every shape shares, wherever they sit in the body.
pub(crate) struct Settings {
    resolution: Resolution,
    ratio: Option<Ratio>,
    duration: u32,
    seed: Option<u32>,
    watermark: bool,
}

impl Settings {
    pub(crate) fn defaults(model: ModelId) -> Settings {
        Settings {
            resolution: Resolution::default(),
            ratio: (model == ModelId::HhR2v).then(Ratio::default),
            duration: DEFAULT_DURATION,
            seed: None,
            watermark: true,
        }
    }

    /// Reads `resolution`, `ratio` (r2v only), `duration`, `seed` and `watermark` from `fields`.
    pub(crate) fn read(fields: &Fields, model: ModelId) -> Result<Settings, ValidationError> {
        let defaults = Settings::defaults(model);
        let resolution = fields
            .one_of("resolution", &Resolution::ALL.map(|r| (r.as_str(), r)))?
            .unwrap_or(defaults.resolution);
        let ratio = match model {
            ModelId::HhR2v => Some(
                fields
                    .one_of("ratio", &Ratio::ALL.map(|r| (r.as_str(), r)))?
                    .unwrap_or_default(),
            ),
            ModelId::HhI2v => None,
        };
        let duration = fields
            .integer("duration", MIN_DURATION.into(), MAX_DURATION.into())?
            .map_or(defaults.duration, |d| d as u32);
        let seed = fields
            .integer("seed", 0, MAX_SEED.into())?
            .map(|s| s as u32);
        let watermark = fields.boolean("watermark")?.unwrap_or(defaults.watermark);
        Ok(Settings {
            resolution,
            ratio,
            duration,
            seed,
            watermark,
        })
    }

    pub(crate) fn into_request(
        self,
        model: ModelId,
        prompt: String,
        negative_prompt: Option<String>,
        images: Vec<String>,
    ) -> GenerationRequest {
        GenerationRequest {
            model,
            prompt,
            negative_prompt,
            images,
            resolution: self.resolution,
            ratio: self.ratio,
            duration: self.duration,
            seed: self.seed,
            watermark: self.watermark,
        }
    }
}

/// Typed reads of one JSON object's fields, each error naming `prefix/field`. A `null` value
/// counts as absent (SDKs often send unset options as null).
pub(crate) struct Fields<'a> {
    prefix: String,
    object: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// `value` must be an object; `prefix` is its own pointer ("" for the whole body).
    pub(crate) fn new(value: &'a Value, prefix: &str) -> Result<Fields<'a>, ValidationError> {
        match value {
            Value::Object(object) => Ok(Fields {
                prefix: prefix.to_string(),
                object,
            }),
            _ if prefix.is_empty() => Err(ValidationError::new(
                "",
                "the request body must be a JSON object",
            )),
            _ => Err(ValidationError::new(prefix, "must be an object")),
        }
    }

    pub(crate) fn pointer(&self, key: &str) -> String {
        // JSON pointer escaping, so a field named "a/b" reads as one field.
        format!(
            "{}/{}",
            self.prefix,
            key.replace('~', "~0").replace('/', "~1")
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.object.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.object.contains_key(key)
    }

    /// Refuses the first field not in `allowed`. When `other_model` also lists the field, the
    /// rule says which model refuses it (e.g. `ratio` given to i2v).
    pub(crate) fn refuse_unknown(
        &self,
        allowed: &[&str],
        other_model: Option<(ModelId, &[&str])>,
    ) -> Result<(), ValidationError> {
        let Some(key) = self.object.keys().find(|k| !allowed.contains(&k.as_str())) else {
            return Ok(());
        };
        let rule = match other_model {
            Some((model, theirs)) if theirs.contains(&key.as_str()) => {
                format!("is not allowed for {model}")
            }
            _ => "is not allowed".to_string(),
        };
        Err(ValidationError::new(self.pointer(key), rule))
    }

    pub(crate) fn required(&self, key: &str) -> Result<&'a Value, ValidationError> {
        self.get(key)
            .ok_or_else(|| ValidationError::new(self.pointer(key), "is required"))
    }

    pub(crate) fn object(&self, key: &str) -> Result<Option<Fields<'a>>, ValidationError> {
        self.get(key)
            .map(|v| Fields::new(v, &self.pointer(key)))
            .transpose()
    }

    pub(crate) fn string(&self, key: &str) -> Result<Option<&'a str>, ValidationError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ValidationError::new(self.pointer(key), "must be a string")),
        }
    }

    /// A string of `min_chars..=MAX_PROMPT_CHARS` characters (Unicode scalar values, as JSON
    /// schema counts them); when some are required, not only whitespace.
    pub(crate) fn text(
        &self,
        key: &str,
        min_chars: usize,
    ) -> Result<Option<String>, ValidationError> {
        let Some(s) = self.string(key)? else {
            return Ok(None);
        };
        let chars = s.chars().count();
        // A required text of only spaces and newlines says nothing: refuse it like an empty one.
        if min_chars > 0 && chars > 0 && s.trim().is_empty() {
            return Err(ValidationError::new(
                self.pointer(key),
                "must not be only whitespace",
            ));
        }
        if chars < min_chars {
            let rule = if min_chars == 1 {
                "must not be empty".to_string()
            } else {
                format!("must have at least {min_chars} characters")
            };
            return Err(ValidationError::new(self.pointer(key), rule));
        }
        if chars > MAX_PROMPT_CHARS {
            return Err(ValidationError::new(
                self.pointer(key),
                format!("must have at most {MAX_PROMPT_CHARS} characters"),
            ));
        }
        Ok(Some(s.to_string()))
    }

    pub(crate) fn required_text(
        &self,
        key: &str,
        min_chars: usize,
    ) -> Result<String, ValidationError> {
        self.required(key)?;
        Ok(self.text(key, min_chars)?.expect("present: checked above"))
    }

    /// A whole number in `min..=max`. `5.0` counts as 5; `5.5` is not an integer.
    pub(crate) fn integer(
        &self,
        key: &str,
        min: i64,
        max: i64,
    ) -> Result<Option<i64>, ValidationError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let not_integer = || ValidationError::new(self.pointer(key), "must be an integer");
        let Value::Number(n) = value else {
            return Err(not_integer());
        };
        // i128 holds every i64 and u64; larger floats saturate, which still fails the range.
        let whole: i128 = if let Some(i) = n.as_i64() {
            i.into()
        } else if let Some(u) = n.as_u64() {
            u.into()
        } else {
            let f = n.as_f64().ok_or_else(not_integer)?;
            if !f.is_finite() || f.fract() != 0.0 {
                return Err(not_integer());
            }
            f as i128
        };
        if whole < min.into() {
            return Err(ValidationError::new(
                self.pointer(key),
                format!("must be >= {min}"),
            ));
        }
        if whole > max.into() {
            return Err(ValidationError::new(
                self.pointer(key),
                format!("must be <= {max}"),
            ));
        }
        Ok(Some(whole as i64))
    }

    pub(crate) fn boolean(&self, key: &str) -> Result<Option<bool>, ValidationError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ValidationError::new(self.pointer(key), "must be a boolean")),
        }
    }

    /// A string from a fixed list, spelled exactly.
    pub(crate) fn one_of<T: Copy>(
        &self,
        key: &str,
        options: &[(&str, T)],
    ) -> Result<Option<T>, ValidationError> {
        let Some(s) = self.string(key)? else {
            return Ok(None);
        };
        match options.iter().find(|(name, _)| *name == s) {
            Some((_, value)) => Ok(Some(*value)),
            None => {
                let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
                Err(ValidationError::new(
                    self.pointer(key),
                    format!("must be one of {}", names.join(", ")),
                ))
            }
        }
    }

    pub(crate) fn required_uri(
        &self,
        key: &str,
        policy: UriPolicy,
    ) -> Result<String, ValidationError> {
        let pointer = self.pointer(key);
        match self.required(key)? {
            Value::String(s) => check_uri(s, policy)
                .map(|()| s.clone())
                .map_err(|rule| ValidationError::new(pointer, rule)),
            _ => Err(ValidationError::new(pointer, "must be a string")),
        }
    }

    /// An array of `min..=max` uris.
    pub(crate) fn required_uris(
        &self,
        key: &str,
        min: usize,
        max: usize,
        policy: UriPolicy,
    ) -> Result<Vec<String>, ValidationError> {
        let items = self.array(key, min, max)?;
        let pointer = self.pointer(key);
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item_pointer = format!("{pointer}/{i}");
                match item {
                    Value::String(s) => check_uri(s, policy)
                        .map(|()| s.clone())
                        .map_err(|rule| ValidationError::new(item_pointer, rule)),
                    _ => Err(ValidationError::new(item_pointer, "must be a string")),
                }
            })
            .collect()
    }

    /// A required array of `min..=max` items.
    pub(crate) fn array(
        &self,
        key: &str,
        min: usize,
        max: usize,
    ) -> Result<&'a Vec<Value>, ValidationError> {
        let pointer = self.pointer(key);
        let Value::Array(items) = self.required(key)? else {
            return Err(ValidationError::new(pointer, "must be an array"));
        };
        let plural = |n: usize| if n == 1 { "item" } else { "items" };
        if items.len() < min {
            return Err(ValidationError::new(
                pointer,
                format!("must have at least {min} {}", plural(min)),
            ));
        }
        if items.len() > max {
            return Err(ValidationError::new(
                pointer,
                format!("must have at most {max} {}", plural(max)),
            ));
        }
        Ok(items)
    }
}

/// Checks a uri against the policy; the error is the rule to report.
pub(crate) fn check_uri(uri: &str, policy: UriPolicy) -> Result<(), String> {
    let accepted = || match policy {
        UriPolicy::Remote => {
            "must be a uri: https://, http://, data:image/...;base64,... or gallop://uploads/ID"
        }
        UriPolicy::AllowFiles => {
            "must be a uri: https://, http://, data:image/...;base64,..., gallop://uploads/ID or file://"
        }
    };
    let lower = uri.get(..16).unwrap_or(uri).to_ascii_lowercase();
    let valid = if lower.starts_with("https://") || lower.starts_with("http://") {
        let rest = &uri[uri.find("://").expect("scheme checked") + 3..];
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !uri.chars().any(|c| c.is_whitespace() || c.is_control())
    } else if lower.starts_with("data:") {
        is_image_data_uri(uri)
    } else if lower.starts_with("gallop://") {
        uri.strip_prefix("gallop://uploads/").is_some_and(|id| {
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    } else if lower.starts_with("file://") {
        if policy == UriPolicy::Remote {
            return Err(
                "must not be a file:// uri; upload the file and pass gallop://uploads/ID"
                    .to_string(),
            );
        }
        uri.len() > "file://".len()
    } else {
        false
    };
    if valid {
        Ok(())
    } else {
        Err(accepted().to_string())
    }
}

/// `data:image/<type>;base64,<payload>`: the payload is only checked for base64 characters here;
/// decoding it is the fetcher's job.
fn is_image_data_uri(uri: &str) -> bool {
    let Some((header, payload)) = uri.split_once(',') else {
        return false;
    };
    let Some(media_type) = header
        .get(..11)
        .filter(|p| p.eq_ignore_ascii_case("data:image/"))
        .and_then(|_| header[11..].strip_suffix(";base64"))
    else {
        return false;
    };
    !media_type.is_empty()
        && media_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !payload.is_empty()
        && payload
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b))
}
