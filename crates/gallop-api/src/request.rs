//! The internal request every API shape maps to. Validation lives beside the shapes that are parsed.

use serde::{Deserialize, Serialize};

/// The model ids gallop serves, spelled as the seeds spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModelId {
    /// `alibaba/hh1-i2v`: animate one image.
    #[serde(rename = "alibaba/hh1-i2v")]
    HhI2v,
    /// `alibaba/hh1.1-r2v`: 1-9 reference images choreographed by a prompt.
    #[serde(rename = "alibaba/hh1.1-r2v")]
    HhR2v,
}

impl ModelId {
    pub const ALL: [ModelId; 2] = [ModelId::HhI2v, ModelId::HhR2v];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelId::HhI2v => "alibaba/hh1-i2v",
            ModelId::HhR2v => "alibaba/hh1.1-r2v",
        }
    }

    pub fn parse(s: &str) -> Option<ModelId> {
        ModelId::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Resolution {
    /// Self-hosted default: a 5 s 720P video is what a single machine makes in reasonable time.
    #[default]
    #[serde(rename = "720P")]
    P720,
    #[serde(rename = "1080P")]
    P1080,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Ratio {
    #[default]
    #[serde(rename = "16:9")]
    R16x9,
    #[serde(rename = "9:16")]
    R9x16,
    #[serde(rename = "3:4")]
    R3x4,
    #[serde(rename = "4:3")]
    R4x3,
    #[serde(rename = "1:1")]
    R1x1,
    #[serde(rename = "21:9")]
    R21x9,
    #[serde(rename = "9:21")]
    R9x21,
    #[serde(rename = "5:4")]
    R5x4,
    #[serde(rename = "4:5")]
    R4x5,
}

impl Resolution {
    pub const ALL: [Resolution; 2] = [Resolution::P720, Resolution::P1080];

    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::P720 => "720P",
            Resolution::P1080 => "1080P",
        }
    }

    /// Exact spelling only, as the schema's enum.
    pub fn parse(s: &str) -> Option<Resolution> {
        Resolution::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Ratio {
    /// In the seed schema's order.
    pub const ALL: [Ratio; 9] = [
        Ratio::R16x9,
        Ratio::R9x16,
        Ratio::R3x4,
        Ratio::R4x3,
        Ratio::R1x1,
        Ratio::R21x9,
        Ratio::R9x21,
        Ratio::R5x4,
        Ratio::R4x5,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Ratio::R16x9 => "16:9",
            Ratio::R9x16 => "9:16",
            Ratio::R3x4 => "3:4",
            Ratio::R4x3 => "4:3",
            Ratio::R1x1 => "1:1",
            Ratio::R21x9 => "21:9",
            Ratio::R9x21 => "9:21",
            Ratio::R5x4 => "5:4",
            Ratio::R4x5 => "4:5",
        }
    }

    /// Exact spelling only, as the schema's enum.
    pub fn parse(s: &str) -> Option<Ratio> {
        Ratio::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// (width part, height part), e.g. (16, 9).
    pub fn parts(self) -> (u32, u32) {
        match self {
            Ratio::R16x9 => (16, 9),
            Ratio::R9x16 => (9, 16),
            Ratio::R3x4 => (3, 4),
            Ratio::R4x3 => (4, 3),
            Ratio::R1x1 => (1, 1),
            Ratio::R21x9 => (21, 9),
            Ratio::R9x21 => (9, 21),
            Ratio::R5x4 => (5, 4),
            Ratio::R4x5 => (4, 5),
        }
    }

    /// Width over height.
    pub fn value(self) -> f64 {
        let (w, h) = self.parts();
        w as f64 / h as f64
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Output frames per second, fixed by the seeds.
pub const FPS: u32 = 24;
pub const DEFAULT_DURATION: u32 = 5;
pub const MIN_DURATION: u32 = 3;
pub const MAX_DURATION: u32 = 15;
pub const MAX_SEED: u32 = 2_147_483_647;
pub const MAX_PROMPT_CHARS: usize = 2500;
pub const MAX_IMAGES: usize = 9;

/// One generation, whatever shape it arrived in. Already validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    pub model: ModelId,
    /// May be empty for i2v.
    pub prompt: String,
    pub negative_prompt: Option<String>,
    /// Image uris in the order given: exactly one for i2v, 1-9 for r2v.
    pub images: Vec<String>,
    pub resolution: Resolution,
    /// r2v only; i2v follows the input image's aspect.
    pub ratio: Option<Ratio>,
    /// Whole seconds, 3..=15.
    pub duration: u32,
    /// None: the worker picks one and reports it.
    pub seed: Option<u32>,
    pub watermark: bool,
}

/// The exact output of a run: even width and height, 24 fps, 24 x duration frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub frames: u32,
}
