//! Configuration errors: the field path and the reason, with the line and column of parse
//! errors in the whole document.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() || self.field == "." {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

pub fn error(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A serde error at `path` (as serde_path_to_error renders it, `.` for the root; relative to
/// `prefix`, a field path). `start` is where the parsed
/// text begins in the whole document (`None`: it is the whole document), so that the line and
/// column name the place in what the user wrote.
pub fn parse_error(
    path: &str,
    e: &serde_json::Error,
    prefix: &str,
    start: Option<(&[u8], usize)>,
) -> ConfigError {
    let field = match (prefix.is_empty(), path) {
        (_, ".") => prefix.to_owned(),
        (true, _) => path.to_owned(),
        (false, _) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, _) => format!("{prefix}.{path}"),
    };
    let text = e.to_string();
    let reason = match (e.line(), start) {
        (0, _) | (_, None) => text,
        (line, Some((document, offset))) => {
            let suffix = format!(" at line {line} column {}", e.column());
            let message = text.strip_suffix(&suffix).unwrap_or(&text);
            let (line, column) = relocate(document, offset, line, e.column());
            format!("{message} at line {line} column {column}")
        }
    };
    ConfigError { field, reason }
}

/// Line and column in `document` of (`line`, `column`) counted from byte `offset` of it.
fn relocate(document: &[u8], offset: usize, line: usize, column: usize) -> (usize, usize) {
    let before = document.get(..offset).unwrap_or_default();
    let start_line = before
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        .saturating_add(1);
    let start_column = before.iter().rev().take_while(|&&b| b != b'\n').count();
    if line <= 1 {
        (start_line, start_column.saturating_add(column))
    } else {
        (start_line.saturating_add(line).saturating_sub(1), column)
    }
}
