//! What `load` reports: one [`Problem`] per thing wrong, each pointing at a
//! place in a file of the pack.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One thing wrong with a pack, at a 1-based line and column (in characters)
/// of one of its files. A problem about a whole file (a missing `pack.yaml`,
/// a file that is not UTF-8, a directory that should not be there) points at
/// `1:1`, so every problem renders the same way and editors can jump to it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Problem {
    /// Relative path inside the pack, with `/`.
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for Problem {}

/// A 1-based position in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// Where whole-file problems point.
    pub const START: Pos = Pos { line: 1, column: 1 };
}

/// Collects the problems of one file. Decoders keep going after a problem so
/// that one `load` reports everything wrong, not just the first thing.
pub(crate) struct Sink<'a> {
    file: &'a str,
    problems: &'a mut Vec<Problem>,
}

impl<'a> Sink<'a> {
    pub fn new(file: &'a str, problems: &'a mut Vec<Problem>) -> Self {
        Sink { file, problems }
    }

    pub fn file(&self) -> &str {
        self.file
    }

    pub fn at(&mut self, pos: Pos, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        });
    }

    /// How many problems have been recorded so far (for every file), so a
    /// decoder can tell whether a part it just checked was clean.
    pub fn count(&self) -> usize {
        self.problems.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_file_line_column_message() {
        let problem = Problem {
            file: "actions/restart.yaml".into(),
            line: 3,
            column: 7,
            message: "unknown key `paramters` (did you mean `parameters`?)".into(),
        };
        assert_eq!(
            problem.to_string(),
            "actions/restart.yaml:3:7: unknown key `paramters` (did you mean `parameters`?)"
        );
    }
}
