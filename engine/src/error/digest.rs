//! The errors of replica digests ([`crate::digest`]), kept here so that every layer can
//! return them through [`crate::EngineError`].

/// Number of key buckets per table.
pub const BUCKETS: u16 = 64;

/// A digest received from elsewhere that cannot be right.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// Not JSON, or not of the digest's shape.
    #[error("replica digest: {0}")]
    Json(#[from] serde_json::Error),
    /// A hash is not 32 hex digits.
    #[error("replica digest of table {table:?}: {what} is not 32 hex digits")]
    Hash {
        /// The table.
        table: String,
        /// Which hash (`xor`, or `bucket N`).
        what: String,
    },
    /// A bucket is not a decimal number below [`BUCKETS`].
    #[error("replica digest of table {table:?}: bucket {bucket:?} is not a number below {BUCKETS}")]
    Bucket {
        /// The table.
        table: String,
        /// The bucket as written.
        bucket: String,
    },
    /// A bucket is listed with no rows (only non-empty buckets are listed).
    #[error("replica digest of table {table:?}: bucket {bucket} is listed with no rows")]
    EmptyBucket {
        /// The table.
        table: String,
        /// The bucket.
        bucket: u16,
    },
    /// The buckets' counts or hashes do not add up to the table's.
    #[error("replica digest of table {table:?}: the buckets do not add up to the table ({reason})")]
    Sum {
        /// The table.
        table: String,
        /// What does not add up.
        reason: String,
    },
}
