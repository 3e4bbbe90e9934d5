//! An Alertmanager notification body, as `POST /v1/alertmanager` reads it
//! once the sender is authorized.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ultron8_core::intake;
use ultron8_core::triggers::nul_character_at;

fuzz_target!(|data: &[u8]| {
    let Ok(alerts) = intake::alertmanager(data) else {
        return;
    };
    for alert in alerts {
        // What is accepted must be storable: no NUL anywhere, and an
        // identity that is the JSON array it is documented to be.
        assert_eq!(nul_character_at(&alert.payload), None);
        if let Some(identity) = &alert.identity {
            let parsed: serde_json::Value =
                serde_json::from_str(identity).expect("the identity is JSON");
            assert_eq!(parsed.as_array().map(Vec::len), Some(4));
        }
        let _ = alert.payload.to_string();
    }
});
