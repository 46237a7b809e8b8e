//! Which H.264 encoder makes every video, declared once: `gallop generate` and `gallop serve`
//! flatten [`EncoderSettings`] into their flags (`--encoder`, `--ffmpeg`), and the serve config
//! file reads the same fields as top-level keys:
//!
//! ```toml
//! encoder = "ffmpeg"          # openh264 (built in, the default) or ffmpeg
//! ffmpeg = "/usr/bin/ffmpeg"  # optional: the program (a path, or a name on PATH); default ffmpeg
//! ```
//!
//! ffmpeg is checked when the setting is opened (it runs and lists libx264), so a missing or
//! unsuitable program fails at startup, naming the flag or the key, not at the first video.

use std::path::PathBuf;

use gallop_media::{Ffmpeg, MediaError, VideoEncoder};
use serde::Deserialize;

/// The encoders an operator can name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderName {
    /// openh264, built into gallop.
    #[default]
    Openh264,
    /// The system's ffmpeg with libx264, run as a separate program.
    Ffmpeg,
}

/// The operator's encoder settings; `None` is the default.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
pub struct EncoderSettings {
    /// The H.264 encoder: openh264 (built in) or ffmpeg (the system's ffmpeg with libx264, run
    /// as a separate program: half the bytes and cleaner moving edges; the operator takes on
    /// ffmpeg's and x264's licences, see README.md) [default: openh264].
    #[arg(long, value_enum)]
    pub encoder: Option<EncoderName>,
    /// With --encoder ffmpeg: the ffmpeg program, a path or a name looked up on PATH
    /// [default: ffmpeg].
    #[arg(long, value_name = "PATH")]
    pub ffmpeg: Option<PathBuf>,
}

/// How the settings were given, for messages: as flags or as config keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    Flags,
    Keys,
}

impl Spelling {
    fn name(self, key: &str) -> String {
        match self {
            Spelling::Flags => format!("--{key}"),
            Spelling::Keys => key.to_string(),
        }
    }
}

impl EncoderSettings {
    /// Nothing set: the built-in encoder.
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }

    /// The encoder these settings name, ffmpeg probed. Errors name the flag or key given
    /// (`--ffmpeg /opt/ffmpeg: ffmpeg /opt/ffmpeg has no libx264 encoder ...`).
    pub fn open(&self, spelling: Spelling) -> Result<VideoEncoder, String> {
        let (encoder, ffmpeg) = (spelling.name("encoder"), spelling.name("ffmpeg"));
        match self.encoder.unwrap_or_default() {
            EncoderName::Openh264 => match &self.ffmpeg {
                Some(_) => Err(format!(
                    "{ffmpeg} only applies with {encoder} ffmpeg (the encoder is openh264)"
                )),
                None => Ok(VideoEncoder::OpenH264),
            },
            EncoderName::Ffmpeg => {
                let program = self.ffmpeg.clone().unwrap_or_else(|| "ffmpeg".into());
                Ffmpeg::probe(&program)
                    .map(VideoEncoder::Ffmpeg)
                    .map_err(|e| match (&self.ffmpeg, e) {
                        (None, e @ MediaError::FfmpegUnavailable { .. }) => format!(
                            "{encoder} ffmpeg: {e}; install ffmpeg or name it with {ffmpeg}"
                        ),
                        (None, e) => format!("{encoder} ffmpeg: {e}"),
                        (Some(path), e) => format!("{ffmpeg} {}: {e}", path.display()),
                    })
            }
        }
    }
}
