//! Why a submitted body was refused, before any shape turns it into its own error body.

use crate::validate::ValidationError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// A field broke a rule. Cloudflare: 5006; DashScope: InvalidParameter.
    #[error("Bad input: {0}")]
    BadInput(#[from] ValidationError),
    /// No model, or one gallop does not serve. Cloudflare: 5007; DashScope: ModelNotFound.
    #[error("{}", no_such_model(given.as_deref(), served))]
    NoSuchModel {
        /// What the client asked for; None when it named no model.
        given: Option<String>,
        /// The ids this shape accepts, comma separated, for the message.
        served: &'static str,
    },
}

fn no_such_model(given: Option<&str>, served: &str) -> String {
    match given {
        Some(model) => format!("No such model: {model} (served: {served})"),
        None => format!("No model given: /model is required (served: {served})"),
    }
}
