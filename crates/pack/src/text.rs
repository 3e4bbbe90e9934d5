//! Small text helpers shared by the decoders: name rules, "did you mean"
//! suggestions and lists in messages.

/// Longest pack, action, rule or parameter name. Names end up in references,
/// table columns and database keys; nothing legitimate comes close.
pub(crate) const MAX_NAME_LEN: usize = 64;

/// Names that would be read as template syntax rather than variables, so a
/// parameter called `not` could never be used in a template.
const TEMPLATE_KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "loop",
];

/// Checks `[a-z][a-z0-9_]*` (at most [`MAX_NAME_LEN`] long) and says what is
/// wrong in words.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("is longer than {MAX_NAME_LEN} characters"));
    }
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter (a-z)".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(format!(
            "may only contain lowercase letters, digits and `_` (found {bad:?})"
        ));
    }
    Ok(())
}

/// [`check_name`], plus the words templates reserve.
pub(crate) fn check_parameter_name(name: &str) -> Result<(), String> {
    check_name(name)?;
    if name == "secret" {
        return Err("is reserved: templates read the hive's secrets as `secret.NAME`".to_string());
    }
    if TEMPLATE_KEYWORDS.contains(&name) {
        return Err(format!(
            "is a template keyword, so templates could not read it (reserved: {})",
            TEMPLATE_KEYWORDS.join(", ")
        ));
    }
    Ok(())
}

/// The candidate closest to `word`, if it is close enough to be a typo.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word_len = word.chars().count();
    // Short words are close to everything; only suggest for a real typo.
    let limit = match word_len {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    };
    let candidates: Vec<&str> = candidates.into_iter().filter(|c| *c != word).collect();
    let close = candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    // An abbreviation (`bool`, `int`, `str`) is a typo too, when it names
    // one candidate only.
    close.or_else(|| {
        let mut longer = candidates
            .iter()
            .filter(|c| word_len >= 3 && c.starts_with(word));
        match (longer.next(), longer.next()) {
            (Some(only), None) => Some(*only),
            _ => None,
        }
    })
}

/// Optimal string alignment distance: Levenshtein plus adjacent
/// transpositions, so `lables` is one edit from `labels`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Keys and names are short; bound the work on hostile input anyway.
    if a.len() > 128 || b.len() > 128 {
        return usize::MAX;
    }
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// "` (did you mean `x`?)`" or nothing.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    suggest(word, candidates)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// `a, b, c` for messages.
pub(crate) fn list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items.into_iter().collect::<Vec<_>>().join(", ")
}

/// Whether a string holds template syntax. Values without any are literals
/// and can be checked against a parameter's type at install time.
pub(crate) fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("linux").is_ok());
        assert!(check_name("restart_service2").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("Linux").is_err());
        assert!(check_name("2fa").is_err());
        assert!(check_name("my-pack").is_err());
        assert!(check_name("_x").is_err());
        assert!(check_name(&"a".repeat(MAX_NAME_LEN)).is_ok());
        assert!(check_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(check_parameter_name("service").is_ok());
        assert!(check_parameter_name("not").is_err());
    }

    #[test]
    fn suggestions() {
        let keys = ["name", "parameters", "runner", "description"];
        assert_eq!(suggest("paramters", keys), Some("parameters"));
        assert_eq!(suggest("runer", keys), Some("runner"));
        assert_eq!(suggest("nmae", keys), Some("name"));
        assert_eq!(suggest("colour", keys), None);
        assert_eq!(suggest("bool", ["string", "boolean"]), Some("boolean"));
        assert_eq!(suggest("int", ["integer", "number"]), Some("integer"));
        // Ambiguous abbreviations suggest nothing.
        assert_eq!(suggest("ab", ["abc", "abd"]), None);
        assert_eq!(suggest("ti", ["timediff_lt", "timediff_gt"]), None);
        assert_eq!(suggest("lables", ["status", "labels"]), Some("labels"));
        // Two-letter words are too short to guess at.
        assert_eq!(suggest("ip", ["in", "op"]), None);
        assert_eq!(
            did_you_mean("servce", ["service", "force"]),
            " (did you mean `service`?)"
        );
        assert_eq!(did_you_mean("zzz", ["service"]), "");
    }

    #[test]
    fn distance_is_bounded_on_long_input() {
        let long = "x".repeat(10_000);
        assert_eq!(suggest(&long, ["x"]), None);
    }

    #[test]
    fn templates_are_recognised() {
        assert!(is_template("{{ service }}"));
        assert!(is_template("{% if x %}a{% endif %}"));
        assert!(!is_template("nginx"));
        assert!(!is_template("{ not a template }"));
    }
}
