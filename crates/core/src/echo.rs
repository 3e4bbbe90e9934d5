//! Quoting back what a caller sent, in messages, without sending all of it
//! back.
//!
//! An error message names the input it refuses, so the reader knows which;
//! but input can be as long as the request that carried it. Quoted whole,
//! a 120 KB target made a gRPC status larger than a client accepts, and a
//! 1 MB target rendered by a rule was stored in the event's error, the
//! audit trail and the log. Every message that quotes a caller's value
//! goes through [`quote`] or [`elide`]: short values whole, long ones as
//! their beginning and their size.

use std::borrow::Cow;

/// How many characters of a value a message keeps.
pub const ECHOED_CHARS: usize = 120;

/// `value` as a Rust string literal (`"web-1"`), whole if it is at most
/// [`ECHOED_CHARS`] characters long, otherwise its beginning and its size:
/// `"web-1 or web-2 or…" (120000 bytes)`.
pub fn quote(value: &str) -> String {
    match cut(value) {
        None => format!("{value:?}"),
        Some(kept) => format!("{kept:?}… ({} bytes)", value.len()),
    }
}

/// `value` as it is if it is at most [`ECHOED_CHARS`] characters long,
/// otherwise its beginning and its size: `web-1 or web-2 or… (120000
/// bytes)`.
pub fn elide(value: &str) -> Cow<'_, str> {
    match cut(value) {
        None => Cow::Borrowed(value),
        Some(kept) => Cow::Owned(format!("{kept}… ({} bytes)", value.len())),
    }
}

/// The first [`ECHOED_CHARS`] characters of `value`, if it has more.
fn cut(value: &str) -> Option<&str> {
    value
        .char_indices()
        .nth(ECHOED_CHARS)
        .map(|(end, _)| &value[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_echoed_whole() {
        assert_eq!(quote("web-1"), "\"web-1\"");
        assert_eq!(quote("a\"b\n"), "\"a\\\"b\\n\"");
        assert_eq!(elide("web-1"), "web-1");
        let limit = "x".repeat(ECHOED_CHARS);
        assert_eq!(elide(&limit), limit.as_str());
        assert_eq!(quote(&limit), format!("{limit:?}"));
    }

    #[test]
    fn long_values_keep_their_beginning_and_say_their_size() {
        let long = "web-".repeat(30_000);
        let kept = &long[..ECHOED_CHARS];
        assert_eq!(quote(&long), format!("{kept:?}… (120000 bytes)"));
        assert_eq!(elide(&long), format!("{kept}… (120000 bytes)"));
    }

    #[test]
    fn values_are_cut_at_a_character_boundary() {
        let long = "é".repeat(ECHOED_CHARS + 1);
        let shown = elide(&long);
        assert!(shown.starts_with(&"é".repeat(ECHOED_CHARS)), "{shown}");
        assert!(
            shown.ends_with(&format!("… ({} bytes)", long.len())),
            "{shown}"
        );
    }
}
