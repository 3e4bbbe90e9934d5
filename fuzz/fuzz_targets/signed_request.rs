//! A message off the drone's queue: `ultron8_drone::runtime::verify`
//! decodes a `SignedActionRequest`, checks its key and signature, that it
//! names this drone and was signed after the drone enrolled, and the
//! command in it is read as the drone reads it before running anything.
//!
//! The broker is not trusted, so any bytes can arrive; but bytes the
//! fuzzer makes up never carry a valid signature, so they would never get
//! past it. The first byte therefore chooses: even, the rest is the
//! message as it arrives; odd, the rest is an `ActionRequest` that the
//! target signs with the fixture key first (as a hive holding it would),
//! so that what follows the signature check is reached too.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use ultron8_core::ExecutionStatus;
use ultron8_drone::runtime::verify;
use ultron8_pki::{RequestSigningKey, RequestVerifier};
use ultron8_proto::convert::command_from_wire;
use ultron8_proto::v1;

/// The drone the requests are for; the seed corpus addresses it.
const DRONE: &str = "web-1";
/// When it enrolled (2023-11-14): the seeds were signed after, in 2030.
const ENROLLED_AT_MS: i64 = 1_700_000_000_000;

/// A fixture key (PKCS#8 v1 of the Ed25519 seed 0x07 × 32), so that the
/// signed seeds in the corpus verify on every run. Never a hive's key.
fn fixture_key() -> RequestSigningKey {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&[7; 32]);
    RequestSigningKey::from_pkcs8(&der).expect("the fixture key loads")
}

static KEY: LazyLock<RequestSigningKey> = LazyLock::new(fixture_key);
static VERIFIER: LazyLock<RequestVerifier> =
    LazyLock::new(|| RequestVerifier::new(KEY.public_key()));

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        v1::SignedActionRequest {
            signature: KEY.sign(rest),
            key_id: KEY.key_id(),
            request: rest.to_vec(),
        }
        .encode_to_vec()
    };
    match verify(&body, DRONE, ENROLLED_AT_MS, &VERIFIER) {
        Ok(request) => {
            assert_eq!(request.drone_id, DRONE);
            assert!(request.issued_at_ms >= ENROLLED_AT_MS);
            let _ = command_from_wire(request.command);
        }
        Err(refusal) => {
            assert_eq!(refusal.status, ExecutionStatus::Rejected);
            // The reason is reported to the hive and kept in its audit
            // trail: bounded, however long the message's fields.
            assert!(
                refusal.reason.len() < 1024,
                "{} bytes",
                refusal.reason.len()
            );
        }
    }
});
