//! The hive's named secrets, as far as pure code can know them: which
//! names and values are valid, the environment variable a secret reaches
//! a command by, and masking secrets in output that arrives in pieces.
//!
//! # Where a secret's value goes
//!
//! A pack writes `{{ secret.NAME }}` (see [`crate::template`]); rendering
//! it produces a *reference*, never the value: in a `shell:` script the
//! quoted expansion `"$ULTRON8_SECRET_NAME"`, in an `env:` value an entry of
//! [`crate::CommandSpec::secret_env`]. So the job's stored command and the
//! request published to the broker hold names only. The drone fetches the
//! values from the hive just before it starts the command, passes them in
//! the command's environment (never its argv, which every user of the host
//! can read in `/proc/PID/cmdline`), and masks them in the output with
//! [`OutputMasker`].

use crate::model::{MIN_REDACTED_LEN, REDACTED, maskable};

/// Longest secret name.
pub const MAX_NAME_LEN: usize = 64;

/// Largest secret value, in bytes. Values travel in a command's
/// environment, where Linux allows 128 KiB per variable; this leaves room
/// for the rest of the environment.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;

/// Prefix of the environment variables that carry secrets into `shell:`
/// scripts: `{{ secret.db_password }}` reads `$ULTRON8_SECRET_db_password`.
pub const ENV_PREFIX: &str = "ULTRON8_SECRET_";

/// Checks a secret's name: a letter or `_`, then letters, digits or `_`,
/// at most [`MAX_NAME_LEN`] characters. Such a name is a template
/// attribute (`secret.NAME`) and the tail of an environment variable's name
/// as it is, so no two secrets share a variable.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "{} is not a valid secret name: use a letter or _ followed by letters, digits or _ (e.g. db_password)",
            crate::echo::quote(name)
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "a secret name has at most {MAX_NAME_LEN} characters; this one has {}",
            name.len()
        ));
    }
    Ok(())
}

/// Checks a secret's value. Never quotes it. A value must be long enough
/// to be masked in output (see [`MIN_REDACTED_LEN`]), fit in an
/// environment variable, and hold no NUL (which no environment variable
/// can).
pub fn check_value(value: &str) -> Result<(), String> {
    if value.chars().count() < MIN_REDACTED_LEN {
        return Err(format!(
            "the value is shorter than {MIN_REDACTED_LEN} characters: a value that short cannot be masked in output without giving it away"
        ));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "the value is {} bytes; a secret holds at most {MAX_VALUE_BYTES}",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err(
            "the value holds a NUL character, which no environment variable can carry".into(),
        );
    }
    Ok(())
}

/// The environment variable a `shell:` script reads secret `name` from.
pub fn env_var(name: &str) -> String {
    format!("{ENV_PREFIX}{name}")
}

/// Masks secrets in one output stream that arrives in chunks, so that a
/// secret written in two pieces (`printf %s "$S" | fold -w 3`, or just a
/// pipe's buffer boundary) is masked as surely as one written whole.
///
/// At the end of each chunk it holds back the bytes that could still be
/// the beginning of a secret (at most the longest secret's length less
/// one) until the next chunk or [`OutputMasker::finish`] decides them. The
/// concatenation of everything it returns is exactly what
/// [`crate::model::redact_bytes`] makes of the whole stream.
#[derive(Debug, Clone, Default)]
pub struct OutputMasker {
    /// Longest first, as [`crate::model::redact_bytes`] tries them.
    secrets: Vec<Vec<u8>>,
    /// Bytes received and not yet decided.
    pending: Vec<u8>,
}

impl OutputMasker {
    pub fn new(secrets: &[String]) -> OutputMasker {
        OutputMasker {
            secrets: maskable(secrets).into_iter().map(<[u8]>::to_vec).collect(),
            pending: Vec::new(),
        }
    }

    /// The masked output `chunk` completes; may be empty while the end of
    /// the stream so far could still begin a secret.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return chunk.to_vec();
        }
        self.pending.extend_from_slice(chunk);
        let (out, decided) = self.mask(false);
        self.pending.drain(..decided);
        out
    }

    /// The masked rest of the stream, once it has ended.
    pub fn finish(&mut self) -> Vec<u8> {
        let (out, _) = self.mask(true);
        self.pending.clear();
        out
    }

    /// Masks `pending` from its start; returns the output and how many
    /// bytes of `pending` it decided. Unless `at_end`, it stops at the
    /// first position where the bytes left are a proper prefix of a
    /// secret: more output could make them a secret, or a longer one than
    /// matches now, which would win there.
    fn mask(&self, at_end: bool) -> (Vec<u8>, usize) {
        let bytes = &self.pending;
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        'scan: while i < bytes.len() {
            let rest = &bytes[i..];
            if !at_end
                && self
                    .secrets
                    .iter()
                    .any(|s| s.len() > rest.len() && s.starts_with(rest))
            {
                break;
            }
            for secret in &self.secrets {
                if rest.starts_with(secret) {
                    out.extend_from_slice(REDACTED.as_bytes());
                    i += secret.len();
                    continue 'scan;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        (out, i)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::redact_bytes;

    fn streamed(secrets: &[String], chunks: &[&[u8]]) -> Vec<u8> {
        let mut masker = OutputMasker::new(secrets);
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(masker.push(chunk));
        }
        out.extend(masker.finish());
        out
    }

    #[test]
    fn a_secret_split_at_every_position_is_masked() {
        let secret = "s3cr3t-value-42".to_string();
        let text = format!("token={secret} and again {secret}\n");
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let out = streamed(
                std::slice::from_ref(&secret),
                &[&bytes[..cut], &bytes[cut..]],
            );
            assert_eq!(
                out,
                b"token=******** and again ********\n".to_vec(),
                "cut at {cut}"
            );
        }
        // And in three pieces, cut at every pair of positions.
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let out = streamed(
                    std::slice::from_ref(&secret),
                    &[&bytes[..a], &bytes[a..b], &bytes[b..]],
                );
                assert!(
                    !out.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "cuts at {a} and {b}"
                );
            }
        }
    }

    #[test]
    fn held_back_bytes_are_at_most_the_longest_secret_less_one() {
        let secrets = vec!["abcdef".to_string(), "abcd".to_string()];
        let mut masker = OutputMasker::new(&secrets);
        // "abcde" could still become "abcdef": all held.
        assert_eq!(masker.push(b"xxabcde"), b"xx".to_vec());
        // It did not: the shorter secret matches and the rest is output.
        assert_eq!(masker.push(b"Z"), b"********eZ".to_vec());
        assert_eq!(masker.push(b"plain"), b"plain".to_vec());
        assert_eq!(masker.finish(), Vec::<u8>::new());
        // A stream ending on a secret's beginning gives it back at the end.
        let mut masker = OutputMasker::new(&secrets);
        assert_eq!(masker.push(b"abc"), Vec::<u8>::new());
        assert_eq!(masker.finish(), b"abc".to_vec());
    }

    #[test]
    fn without_secrets_chunks_pass_through() {
        let mut masker = OutputMasker::new(&["ab".to_string()]);
        assert_eq!(masker.push(b"abab"), b"abab".to_vec());
        assert_eq!(masker.finish(), Vec::<u8>::new());
    }

    #[test]
    fn names_and_values_are_checked_without_quoting_values() {
        for good in ["db_password", "_x", "A1", &"n".repeat(MAX_NAME_LEN)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "db-password",
            "db.password",
            "a b",
            &"n".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(check_value("hunter22"), Ok(()));
        for bad in ["abc", "with\0nul", &"x".repeat(MAX_VALUE_BYTES + 1)] {
            let message = check_value(bad).expect_err("refused");
            assert!(!message.contains(bad), "{message}");
        }
        assert_eq!(env_var("db_password"), "ULTRON8_SECRET_db_password");
    }

    proptest! {
        #[test]
        fn streaming_masks_exactly_as_masking_the_whole(
            secrets in proptest::collection::vec("[ab]{1,6}", 1..4),
            text in "[abc]{0,40}",
            cuts in proptest::collection::vec(0usize..41, 0..6),
        ) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut from = 0;
            for cut in cuts {
                chunks.push(&bytes[from..cut]);
                from = cut;
            }
            chunks.push(&bytes[from..]);
            prop_assert_eq!(streamed(&secrets, &chunks), redact_bytes(bytes, &secrets));
        }
    }
}
