//! gallop-wan's one error type. A caller acts on what went wrong without downcasting:
//! [`Error::Cancelled`] and [`Error::Sink`] come from the caller's own run context,
//! [`Error::Invalid`] names a setting, input or checkpoint file and the rule it breaks, and the
//! rest are failures underneath (tensor operations, files), with what was being done around them.

use std::fmt::Display;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's cancel flag was set; the run stopped between steps.
    #[error("cancelled")]
    Cancelled,
    /// The caller's frame sink refused a frame (a full disk, a failed encoder).
    #[error("frame sink failed: {0}")]
    Sink(String),
    /// A setting, an input or a checkpoint breaks a rule; the message names which and the rule.
    #[error("{0}")]
    Invalid(String),
    /// An operator's setting the checkpoint or this build cannot honour.
    #[error(transparent)]
    Setting(#[from] crate::settings::SettingError),
    /// A LoRA file that does not fit the checkpoint; the message names the file and the key.
    #[error(transparent)]
    Lora(#[from] crate::lora::LoraError),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Safetensors(#[from] safetensors::SafeTensorError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    /// Frame interpolation or resizing of the output refused its frames.
    #[error(transparent)]
    Media(#[from] gallop_media::MediaError),
    /// The tokenizer library's own error.
    #[error("{0}")]
    Tokenizer(#[from] tokenizers::Error),
    /// A failure underneath, with what was being done when it happened.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The innermost error, under every layer of context.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            other => other,
        }
    }

    /// Whether the run stopped because the caller asked it to.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.root(), Error::Cancelled)
    }
}

/// The two ways a caller's run context stops a pipeline: its cancel flag and its frame sink.
impl From<gallop_engine::EngineError> for Error {
    fn from(e: gallop_engine::EngineError) -> Self {
        match e {
            gallop_engine::EngineError::Cancelled => Error::Cancelled,
            gallop_engine::EngineError::Sink(message) => Error::Sink(message),
            other => Error::Invalid(other.to_string()),
        }
    }
}

/// What was being done when an error happened, as `crate::error::Context` says it, for typed errors.
pub trait Context<T> {
    fn context<C: Display>(self, context: C) -> Result<T>;
    fn with_context<C: Display, F: FnOnce() -> C>(self, context: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.map_err(|e| wrap(context.to_string(), e.into()))
    }

    fn with_context<C: Display, F: FnOnce() -> C>(self, context: F) -> Result<T> {
        self.map_err(|e| wrap(context().to_string(), e.into()))
    }
}

/// A missing value is an invalid input or checkpoint; the context says which.
impl<T> Context<T> for Option<T> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(context.to_string()))
    }

    fn with_context<C: Display, F: FnOnce() -> C>(self, context: F) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(context().to_string()))
    }
}

fn wrap(context: String, source: Error) -> Error {
    Error::Context {
        context,
        source: Box::new(source),
    }
}

/// Returns [`Error::Invalid`] with the formatted message.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::Invalid(format!($($arg)*)))
    };
}

/// Returns [`Error::Invalid`] with the formatted message unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::error::bail!($($arg)*);
        }
    };
}

pub(crate) use {bail, ensure};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_reads_outside_in_and_keeps_the_root() {
        let inner: Result<()> = Err(Error::Cancelled);
        let err = inner.context("denoising").context("step 3").unwrap_err();
        assert_eq!(err.to_string(), "step 3: denoising: cancelled");
        assert!(err.is_cancelled());
        let missing: Option<u8> = None;
        let err = missing
            .context("model_index.json has no `transformer`")
            .unwrap_err();
        assert!(matches!(err, Error::Invalid(m) if m == "model_index.json has no `transformer`"));
    }

    #[test]
    fn ensure_and_bail_name_the_rule() {
        fn steps(n: usize) -> Result<usize> {
            ensure!(n >= 1, "steps must be >= 1, got {n}");
            if n > 1000 {
                bail!("steps must be <= 1000, got {n}");
            }
            Ok(n)
        }
        assert_eq!(steps(4).unwrap(), 4);
        assert_eq!(
            steps(0).unwrap_err().to_string(),
            "steps must be >= 1, got 0"
        );
        assert_eq!(
            steps(2000).unwrap_err().to_string(),
            "steps must be <= 1000, got 2000"
        );
    }
}
