//! `kong.log`: write to Kong's error log.

use super::Kong;
use crate::error::PdkResult;

/// `kong.log`, from [`Kong::log`].
pub struct Log<'k> {
    pub(crate) kong: &'k Kong,
}

impl Log<'_> {
    /// `kong.log.err(message)`. All phases.
    pub async fn err(&self, message: &str) -> PdkResult<()> {
        self.kong.call_unit("kong.log.err", &(message,)).await
    }

    /// `kong.log.warn(message)`. All phases.
    pub async fn warn(&self, message: &str) -> PdkResult<()> {
        self.kong.call_unit("kong.log.warn", &(message,)).await
    }

    /// `kong.log.info(message)`. All phases.
    pub async fn info(&self, message: &str) -> PdkResult<()> {
        self.kong.call_unit("kong.log.info", &(message,)).await
    }

    /// `kong.log.debug(message)`. All phases.
    pub async fn debug(&self, message: &str) -> PdkResult<()> {
        self.kong.call_unit("kong.log.debug", &(message,)).await
    }
}
