//! Templates, as written in packs (parameters, targets, cooldown keys,
//! commands, shell scripts) and rendered over an event's payload. The
//! input is the template, then a NUL byte, then the context as JSON (a
//! realistic alert when it is missing or not JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use ultron8_core::template;

fuzz_target!(|data: &[u8]| {
    let (source, context) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let context = serde_json::from_slice::<Value>(context).unwrap_or_else(|_| {
        json!({
            "status": "firing",
            "labels": {"alertname": "ServiceDown", "instance": "web-1", "service": "nginx"},
            "annotations": {"summary": "nginx is down on web-1"},
            "starts_at": "2026-01-01T00:00:00Z",
            "fingerprint": "8f2c",
            "webhook": "demo",
            "body": {"name": "world", "items": [1, 2, 3]},
            "service": "nginx",
            "force": true,
        })
    });
    let _ = template::check(source);
    let _ = template::render_str(source, &context);
    let _ = template::render_shell(source, &context);
    let _ = template::render_value(&Value::String(source.to_string()), &context);
    let _ = template::render_value(&json!({"a": [source, {"b": source}]}), &context);
});
