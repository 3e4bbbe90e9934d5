//! Target expressions, as typed after `ultronctl run -t` or rendered from
//! a rule's template over an event.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use ultron8_core::target::{TargetSubject, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    match parse(input) {
        Ok(expr) => {
            // The canonical form is what is stored and re-validated on
            // every load: it must parse back to the same expression.
            let canonical = expr.to_string();
            let again = parse(&canonical)
                .unwrap_or_else(|e| panic!("{canonical:?} does not parse back: {e}"));
            assert_eq!(again, expr, "{canonical:?}");
            let labels: BTreeMap<String, String> = [
                ("role".to_string(), "web".to_string()),
                ("env".to_string(), "prod".to_string()),
                (String::new(), "*".to_string()),
            ]
            .into();
            let no_labels = BTreeMap::new();
            for (id, hostname, labels) in [
                ("web-1", "web-1.example.com", &labels),
                ("db.3", "", &no_labels),
                ("", "", &no_labels),
            ] {
                let _ = expr.matches(&TargetSubject {
                    id,
                    hostname,
                    labels,
                });
            }
        }
        Err(error) => {
            assert!(error.column >= 1 && error.column <= input.chars().count() + 1);
            // What a CLI prints: two lines, whatever the input.
            let rendered = error.render(input);
            assert_eq!(rendered.lines().count(), 2, "{rendered:?}");
        }
    }
});
