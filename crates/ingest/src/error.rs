//! The one error type of the ingest crate, with the stable codes the API answers with.

/// Why a delivery was refused or could not be normalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// A header the platform always sends is absent; the name is the canonical spelling.
    #[error("missing required header `{0}`")]
    MissingHeader(&'static str),
    /// No signature (or configured auth header) matched the body under the store's secret.
    #[error("the webhook signature does not match the body")]
    InvalidSignature,
    /// A Standard Webhooks timestamp more than five minutes away from now (either side).
    #[error("the webhook timestamp is outside the allowed tolerance")]
    StaleTimestamp,
    /// An authenticated body we cannot turn into an order; the server dead-letters it.
    #[error("unprocessable payload: {0}")]
    Malformed(String),
}

impl IngestError {
    /// The stable, machine-readable code for the API's `{"error": {"code": ...}}`.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::MissingHeader(_) => "missing_header",
            IngestError::InvalidSignature => "invalid_signature",
            IngestError::StaleTimestamp => "stale_timestamp",
            IngestError::Malformed(_) => "unprocessable_payload",
        }
    }

    pub(crate) fn malformed(what: impl Into<String>) -> Self {
        IngestError::Malformed(what.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_snake_case() {
        assert_eq!(IngestError::MissingHeader("X").code(), "missing_header");
        assert_eq!(IngestError::InvalidSignature.code(), "invalid_signature");
        assert_eq!(IngestError::StaleTimestamp.code(), "stale_timestamp");
        assert_eq!(IngestError::malformed("x").code(), "unprocessable_payload");
    }
}
