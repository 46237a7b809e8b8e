//! The `--config` file's tables as serde reads them. A `[models."ID"]` entry is a checkpoint
//! ([`WanSettings`]) unless it names an `upstream`, and each kind refuses keys it does not know,
//! so which kind an entry is must be known before it is read: a first pass finds the entries
//! with an `upstream` key, then the file is read once more with that knowledge (through a seed),
//! so every error still names its key and line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use gallop_wan::WanSettings;

use crate::encoder::{EncoderName, EncoderSettings};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};

/// The whole file.
pub(crate) struct ConfigFile {
    pub upstreams: BTreeMap<String, UpstreamTable>,
    pub models: BTreeMap<String, ModelEntry>,
    /// Top-level `encoder` and `ffmpeg`.
    pub encoder: EncoderSettings,
}

/// `[upstreams.NAME]`: a Model Studio-compatible endpoint.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamTable {
    pub base_url: String,
    /// The environment variable holding the server's own key (Unified).
    pub api_key_env: Option<String>,
    /// Seconds an unreachable, failing or throttling upstream is retried before a job fails.
    pub patience_secs: Option<f64>,
    /// Seconds between two reads of a running task.
    pub poll_interval_secs: Option<f64>,
}

/// A model id served upstream: `upstream = "NAME"`, `upstream_model = "happyhorse-1.0-i2v"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamEntry {
    pub upstream: String,
    pub upstream_model: Option<String>,
}

pub(crate) enum ModelEntry {
    Checkpoint(WanSettings),
    Upstream(UpstreamEntry),
}

const TOP_KEYS: &[&str] = &["encoder", "ffmpeg", "upstreams", "models"];

/// Reads the file; a value that breaks a rule is named by its key and line
/// (`models."alibaba/hh1-i2v".dtype: must be f32, bf16 or f16, got "fp16" (line 4)`).
pub(crate) fn parse(text: &str) -> Result<ConfigFile, String> {
    let routed = routed_ids(text)?;
    let deserializer = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
    let mut track = serde_path_to_error::Track::new();
    let wrapped = serde_path_to_error::Deserializer::new(deserializer, &mut track);
    FileSeed { routed: &routed }
        .deserialize(wrapped)
        .map_err(|e| describe(text, &track.path(), &e))
}

/// Ids of the `models` entries that have an `upstream` key.
fn routed_ids(text: &str) -> Result<BTreeSet<String>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let Some(toml::Value::Table(models)) = table.get("models") else {
        return Ok(BTreeSet::new());
    };
    Ok(models
        .iter()
        .filter(|(_, entry)| entry.get("upstream").is_some())
        .map(|(id, _)| id.clone())
        .collect())
}

/// `models."ID".key: message (line N)`.
fn describe(text: &str, path: &serde_path_to_error::Path, e: &toml::de::Error) -> String {
    let mut key = String::new();
    for (depth, segment) in path.iter().enumerate() {
        match segment {
            serde_path_to_error::Segment::Map { key: k } if depth == 1 => {
                key.push_str(&format!(".\"{k}\""))
            }
            serde_path_to_error::Segment::Map { key: k } => key.push_str(&format!(".{k}")),
            serde_path_to_error::Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            other => key.push_str(&format!(".{other}")),
        }
    }
    let key = key.trim_start_matches('.');
    let line = e
        .span()
        .map(|span| format!(" (line {})", text[..span.start].matches('\n').count() + 1))
        .unwrap_or_default();
    match key {
        "" => format!("{}{line}", e.message()),
        key => format!("{key}: {}{line}", e.message()),
    }
}

struct FileSeed<'a> {
    routed: &'a BTreeSet<String>,
}

impl<'de> DeserializeSeed<'de> for FileSeed<'_> {
    type Value = ConfigFile;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<ConfigFile, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FileSeed<'_> {
    type Value = ConfigFile;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("keys `encoder` and `ffmpeg`, tables `upstreams` and `models`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ConfigFile, A::Error> {
        let mut upstreams = None;
        let mut models = None;
        let mut encoder = EncoderSettings::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "encoder" => encoder.encoder = Some(map.next_value::<EncoderName>()?),
                "ffmpeg" => encoder.ffmpeg = Some(map.next_value()?),
                "upstreams" => upstreams = Some(map.next_value()?),
                "models" => models = Some(map.next_value_seed(ModelsSeed(self.routed))?),
                other => return Err(de::Error::unknown_field(other, TOP_KEYS)),
            }
        }
        Ok(ConfigFile {
            upstreams: upstreams.unwrap_or_default(),
            models: models.ok_or_else(|| de::Error::missing_field("models"))?,
            encoder,
        })
    }
}

/// The `models` table: each entry read as what it is.
struct ModelsSeed<'a>(&'a BTreeSet<String>);

impl<'de> DeserializeSeed<'de> for ModelsSeed<'_> {
    type Value = BTreeMap<String, ModelEntry>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ModelsSeed<'_> {
    type Value = BTreeMap<String, ModelEntry>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table per model id")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some(id) = map.next_key::<String>()? {
            let entry = match self.0.contains(&id) {
                true => ModelEntry::Upstream(map.next_value()?),
                false => ModelEntry::Checkpoint(map.next_value()?),
            };
            entries.insert(id, entry);
        }
        Ok(entries)
    }
}
