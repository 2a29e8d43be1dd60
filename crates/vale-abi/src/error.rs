//! vale-abi's errors: what can go wrong creating, sizing or mapping a port region.

/// Errors from creating or mapping port memory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid port geometry: {0}")]
    Geometry(String),
    #[error("{0} failed: {1}")]
    Os(&'static str, #[source] std::io::Error),
    #[error("region file is {actual} bytes but the port geometry needs {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
}

pub type Result<T> = std::result::Result<T, Error>;
