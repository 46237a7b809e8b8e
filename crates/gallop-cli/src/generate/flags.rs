//! Errors said the way the user gave the input: the request parser names API fields
//! (`/input/duration must be <= 15`), but whoever typed `gallop generate --duration 20` should
//! read `--duration must be 3..15`. A value that came from the `--input` file keeps its API path,
//! prefixed by the file, since that is where the user wrote it.

use gallop_api::{MAX_DURATION, MAX_IMAGES, MAX_SEED, MIN_DURATION, ModelId, ValidationError};

use serde_json::{Map, Value};

use super::Args;

/// Says a request error in terms of the command line the user typed.
pub(super) struct FlagNames<'a> {
    args: &'a Args,
    model: ModelId,
    /// The fields the `--input` file set (non-null), before flags were laid over them.
    file_fields: Vec<String>,
}

impl<'a> FlagNames<'a> {
    pub(super) fn new(args: &'a Args, model: ModelId, file: &Map<String, Value>) -> Self {
        let file_fields = file
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k.clone())
            .collect();
        FlagNames {
            args,
            model,
            file_fields,
        }
    }

    /// A broken request rule: `--image is required for alibaba/hh1-i2v`.
    pub(super) fn validation(&self, error: &ValidationError) -> anyhow::Error {
        let key = field_key(&error.pointer);
        let subject = self.subject(&error.pointer);
        if subject.starts_with("--input") {
            return anyhow::anyhow!("{subject} {}", error.rule);
        }
        let given = self.args.images.len();
        let rule = match (key, error.rule.as_str()) {
            // Several --image for i2v reach the parser as an array where a string belongs.
            ("image", "must be a string") if given > 1 => format!(
                "was given {given} times; {} takes one image{}",
                self.model,
                self.suggestion()
            ),
            (_, "is required") => format!("is required for {}", self.model),
            ("duration", rule)
                if rule.starts_with("must be >=") || rule.starts_with("must be <=") =>
            {
                format!("must be {MIN_DURATION}..{MAX_DURATION} (whole seconds)")
            }
            ("seed", rule) if rule.starts_with("must be >=") || rule.starts_with("must be <=") => {
                format!("must be 0..{MAX_SEED}")
            }
            (_, rule) if rule.starts_with("is not allowed for") => {
                format!("{rule}{}", self.suggestion())
            }
            (_, rule) => rule.to_string(),
        };
        anyhow::anyhow!("{subject} {rule}")
    }

    /// A bad image (unreadable, too small, not an image), by its position in the request:
    /// `--image small.png: image is 64x32 px; ...`.
    pub(super) fn image(&self, pointer: &str, message: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{}: {message}", self.subject(pointer))
    }

    /// The flag (or `--input FILE: /input/...`) that holds the field at `pointer`.
    fn subject(&self, pointer: &str) -> String {
        let key = field_key(pointer);
        match flag(key) {
            Some(_) if self.from_input_file(key) => self.in_file(pointer),
            Some("--image") => self.image_flag(pointer),
            Some(flag) => flag.to_string(),
            None => self.in_file(pointer),
        }
    }

    fn in_file(&self, pointer: &str) -> String {
        match &self.args.input {
            Some(file) => format!("--input {}: {pointer}", file.display()),
            None => format!("--input: {pointer}"),
        }
    }

    /// `--image` with the value the user typed, numbered when there are several:
    /// `--image #2 (city.png)`.
    fn image_flag(&self, pointer: &str) -> String {
        let images = &self.args.images;
        let index = pointer
            .strip_prefix("/input/images/")
            .and_then(|i| i.parse::<usize>().ok());
        match (images.len(), index) {
            (1, _) => format!("--image {}", images[0]),
            (_, Some(i)) if i < images.len() => format!("--image #{} ({})", i + 1, images[i]),
            _ => "--image".to_string(),
        }
    }

    /// Whether the field's value came from the `--input` file rather than a flag.
    fn from_input_file(&self, key: &str) -> bool {
        let a = self.args;
        let flag_given = match key {
            "image" | "images" => !a.images.is_empty(),
            "prompt" => a.prompt.is_some(),
            "negative_prompt" => a.negative_prompt.is_some(),
            "resolution" => a.resolution.is_some(),
            "ratio" => a.ratio.is_some(),
            "duration" => a.duration.is_some(),
            "seed" => a.seed.is_some(),
            "watermark" => a.watermark.is_some() || a.no_watermark,
            _ => false,
        };
        !flag_given && self.file_fields.iter().any(|k| k == key)
    }

    /// `; did you mean --model OTHER?` when the images given fit the other model.
    fn suggestion(&self) -> String {
        let n = self.args.images.len();
        let other = match self.model {
            ModelId::HhI2v if (1..=MAX_IMAGES).contains(&n) => ModelId::HhR2v,
            ModelId::HhR2v if n == 1 => ModelId::HhI2v,
            _ => return String::new(),
        };
        format!("; did you mean --model {other}?")
    }
}

/// The top-level field of an `/input/...` pointer: `/input/images/2` -> `images`.
fn field_key(pointer: &str) -> &str {
    let rest = pointer.strip_prefix("/input/").unwrap_or("");
    rest.split('/').next().unwrap_or("")
}

/// The flag that sets an input field.
fn flag(key: &str) -> Option<&'static str> {
    Some(match key {
        "image" | "images" => "--image",
        "prompt" => "--prompt",
        "negative_prompt" => "--negative-prompt",
        "resolution" => "--resolution",
        "ratio" => "--ratio",
        "duration" => "--duration",
        "seed" => "--seed",
        "watermark" => "--watermark",
        _ => return None,
    })
}
