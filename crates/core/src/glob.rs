//! Shell-style globs, anchored at both ends: `*`, `?`, and classes
//! `[abc]`, `[a-z]`, `[!x]`/`[^x]`. One engine for target expressions
//! (drone names and labels) and the `wildcard` criteria operator.
//!
//! Matching is iterative with a single backtrack point (the last `*`), so
//! the worst case is O(pattern × text), never exponential, whatever a
//! pattern from a pack or an operator looks like.

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Glob {
    /// Kept verbatim for `Display`.
    pub(crate) source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Part {
    Literal(char),
    AnyChar,
    AnyRun,
    Class {
        negated: bool,
        /// Inclusive; a single character is `(c, c)`.
        ranges: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GlobError {
    /// Char index of the `[` that is never closed.
    Unterminated { open: usize },
    /// Char index of the range's first character.
    BadRange { at: usize, lo: char, hi: char },
}

impl Glob {
    /// Like [`Glob::new`], but a `[` that does not open a valid class is a
    /// literal `[`, as in most shells; for patterns matched at run time,
    /// where refusing is no longer an option.
    pub(crate) fn lenient(source: &str) -> Self {
        let chars: Vec<char> = source.chars().collect();
        let mut parts = Vec::new();
        let mut i = 0;
        while let Some(&c) = chars.get(i) {
            match c {
                '[' => match parse_class(&chars, i) {
                    Ok((class, next)) => {
                        parts.push(class);
                        i = next;
                        continue;
                    }
                    Err(_) => parts.push(Part::Literal('[')),
                },
                '*' if parts.last() == Some(&Part::AnyRun) => {}
                '*' => parts.push(Part::AnyRun),
                '?' => parts.push(Part::AnyChar),
                c => parts.push(Part::Literal(c)),
            }
            i += 1;
        }
        Glob {
            source: source.to_string(),
            parts,
        }
    }

    pub(crate) fn new(source: &str) -> Result<Self, GlobError> {
        let chars: Vec<char> = source.chars().collect();
        let mut parts = Vec::new();
        let mut i = 0;
        while let Some(&c) = chars.get(i) {
            match c {
                '*' => {
                    // Adjacent stars are equivalent to one and would only
                    // add backtracking.
                    if parts.last() != Some(&Part::AnyRun) {
                        parts.push(Part::AnyRun);
                    }
                    i += 1;
                }
                '?' => {
                    parts.push(Part::AnyChar);
                    i += 1;
                }
                '[' => {
                    let (class, next) = parse_class(&chars, i)?;
                    parts.push(class);
                    i = next;
                }
                c => {
                    parts.push(Part::Literal(c));
                    i += 1;
                }
            }
        }
        Ok(Glob {
            source: source.to_string(),
            parts,
        })
    }

    /// The exact string this glob matches, if it has no wildcards.
    pub(crate) fn literal(&self) -> Option<&str> {
        self.parts
            .iter()
            .all(|part| matches!(part, Part::Literal(_)))
            .then_some(self.source.as_str())
    }

    /// Anchored match. Iterative with a single backtrack point (the last
    /// `*`), which is enough for globs and keeps the worst case at
    /// O(pattern × text) instead of exponential.
    pub(crate) fn matches(&self, text: &str, fold_case: bool) -> bool {
        let (mut p, mut t) = (0, 0);
        let mut resume: Option<(usize, usize)> = None;
        loop {
            match self.parts.get(p) {
                Some(Part::AnyRun) => {
                    resume = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                Some(part) => {
                    if let Some(c) = text[t..].chars().next()
                        && part.matches_char(c, fold_case)
                    {
                        p += 1;
                        t += c.len_utf8();
                        continue;
                    }
                }
                None if t == text.len() => return true,
                None => {}
            }
            // Mismatch: let the last `*` swallow one more character.
            let Some((resume_p, resume_t)) = resume else {
                return false;
            };
            let Some(c) = text[resume_t..].chars().next() else {
                return false;
            };
            p = resume_p;
            t = resume_t + c.len_utf8();
            resume = Some((p, t));
        }
    }
}

impl Part {
    fn matches_char(&self, c: char, fold_case: bool) -> bool {
        match self {
            Part::Literal(l) => *l == c || (fold_case && l.eq_ignore_ascii_case(&c)),
            Part::AnyChar | Part::AnyRun => true,
            Part::Class { negated, ranges } => {
                let hit = |x: char| ranges.iter().any(|&(lo, hi)| lo <= x && x <= hi);
                let inside = hit(c)
                    || (fold_case && (hit(c.to_ascii_lowercase()) || hit(c.to_ascii_uppercase())));
                inside != *negated
            }
        }
    }
}

/// Parses the class opening at `chars[open] == '['`; returns it and the index
/// after its `]`.
fn parse_class(chars: &[char], open: usize) -> Result<(Part, usize), GlobError> {
    let mut i = open + 1;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let Some(&lo) = chars.get(i) else {
            return Err(GlobError::Unterminated { open });
        };
        if lo == ']' && !first {
            return Ok((Part::Class { negated, ranges }, i + 1));
        }
        first = false;
        // A '-' right before the closing ']' is literal, as in POSIX.
        match (chars.get(i + 1), chars.get(i + 2)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                if hi < lo {
                    return Err(GlobError::BadRange { at: i, lo, hi });
                }
                ranges.push((lo, hi));
                i += 3;
            }
            _ => {
                ranges.push((lo, lo));
                i += 1;
            }
        }
    }
}
