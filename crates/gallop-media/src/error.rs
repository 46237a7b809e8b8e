//! The one error type of this crate. Messages never name a request field: the caller
//! prefixes the field (`image: image is 200x200 px; ...`).

/// Everything that can go wrong while reading an image or writing/reading a video.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MediaError {
    #[error("image is {bytes} bytes; at most {max} bytes ({max_mb} MB) are allowed", max_mb = max / 1_000_000)]
    TooManyBytes { bytes: usize, max: usize },

    #[error("image format is not recognised; only JPEG, PNG, WebP and BMP are accepted")]
    UnknownFormat,

    #[error("image is {width}x{height} px; each side must be at most {max} px")]
    TooLarge { width: u32, height: u32, max: u32 },

    #[error(
        "image is {width}x{height} px ({mp:.1} megapixels); at most {max_mp:.1} megapixels are allowed",
        mp = f64::from(*width) * f64::from(*height) / 1e6,
        max_mp = *max_pixels as f64 / 1e6
    )]
    TooManyPixels {
        width: u32,
        height: u32,
        max_pixels: u64,
    },

    #[error(
        "image is {width}x{height} px and needs {needed_mb:.0} MB to decode in its sample type; at most {budget_mb:.0} MB are allowed",
        needed_mb = *needed as f64 / 1e6,
        budget_mb = *budget as f64 / 1e6
    )]
    OverMemoryBudget {
        width: u32,
        height: u32,
        needed: u64,
        budget: u64,
    },

    #[error(
        "image metadata (colour profile, EXIF, XMP or text chunks) needs more than {budget_mb:.1} MB to decode; refused",
        budget_mb = *budget as f64 / 1e6
    )]
    MetadataOverBudget { budget: u64 },

    #[error("image is {width}x{height} px; each side must be at least {min} px")]
    TooSmall { width: u32, height: u32, min: u32 },

    #[error("image is {width}x{height} px; the short side must be at least {min} px")]
    ShortSideTooSmall { width: u32, height: u32, min: u32 },

    #[error(
        "image is {width}x{height} px (aspect {aspect:.2}:1); the aspect ratio must be between 1:{max} and {max}:1"
    )]
    ExtremeAspect {
        width: u32,
        height: u32,
        aspect: f32,
        max: f32,
    },

    #[error("image file is truncated: {0}")]
    Truncated(String),

    #[error("image could not be decoded: {0}")]
    Corrupt(String),

    #[error("video size {width}x{height} px is not allowed: {rule}")]
    BadVideoSize {
        width: u32,
        height: u32,
        rule: &'static str,
    },

    #[error("frame rate {0} is not allowed: it must be between 1 and 240")]
    BadFrameRate(u32),

    #[error(
        "frame {index} is {width}x{height} px; this video is {expected_width}x{expected_height} px"
    )]
    FrameSizeMismatch {
        index: usize,
        width: u32,
        height: u32,
        expected_width: u32,
        expected_height: u32,
    },

    #[error("video has no frames; push at least one frame before finishing")]
    NoFrames,

    #[error("H.264 encoder failed: {0}")]
    Encoder(String),

    #[error("cannot run ffmpeg {program}: {reason}")]
    FfmpegUnavailable { program: String, reason: String },

    #[error(
        "ffmpeg {program} has no libx264 encoder (`{program} -encoders` does not list it); use an ffmpeg built with --enable-libx264, as Debian's and Ubuntu's are"
    )]
    FfmpegWithoutX264 { program: String },

    #[error("ffmpeg failed: {0}")]
    Ffmpeg(String),

    #[error("MP4 muxer failed: {0}")]
    Muxer(String),

    #[error("MP4 could not be read: {0}")]
    Mp4Read(String),

    #[error("H.264 decoder failed: {0}")]
    Decoder(String),
}
