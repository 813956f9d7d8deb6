//! The one error type of the library: every failure names the file it concerns and, where there
//! is one, the node, so a user of a model nobody here has seen can find the culprit.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Error {
    pub file: Option<PathBuf>,
    pub node: Option<String>,
    pub message: String,
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn msg(message: impl Into<String>) -> Self {
        Error {
            file: None,
            node: None,
            message: message.into(),
            source: None,
        }
    }

    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            source: Some(Box::new(source)),
            ..Error::msg(message)
        }
    }

    /// Sets the file unless an inner layer already named a more precise one (an external-data
    /// file, say).
    pub fn in_file(mut self, file: &Path) -> Self {
        if self.file.is_none() {
            self.file = Some(file.to_path_buf());
        }
        self
    }

    pub fn at_node(mut self, node: impl Into<String>) -> Self {
        if self.node.is_none() {
            self.node = Some(node.into());
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if let Some(node) = &self.node {
            write!(f, "node '{node}': ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// Shorthand for an error located in a file.
pub fn file_error(file: &Path, message: impl Into<String>) -> Error {
    Error::msg(message).in_file(file)
}
