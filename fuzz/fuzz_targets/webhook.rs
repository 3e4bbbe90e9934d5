//! A generic webhook's body, as `POST /v1/webhooks/{name}` reads it once
//! the sender is authenticated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ultron8_core::intake;
use ultron8_core::triggers::nul_character_at;

fuzz_target!(|data: &[u8]| {
    match intake::webhook_body(data) {
        // Accepted means storable: no NUL character anywhere.
        Ok(body) => assert_eq!(nul_character_at(&body), None),
        // A refusal is answered to the sender: bounded, whatever the body.
        Err(message) => assert!(message.len() < 1024, "{} bytes", message.len()),
    }
});
