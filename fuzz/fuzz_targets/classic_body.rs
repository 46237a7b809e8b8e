//! `POST /client/v4/accounts/{id}/ai/run/{model}`: the body is the `input` object itself. The
//! first byte picks the model, the rest is the body.
#![no_main]

use gallop_api::{ModelId, parse_input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let model = ModelId::ALL[pick as usize % ModelId::ALL.len()];
    let Ok(input) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    match parse_input(model, &input) {
        Ok(request) => {
            assert_eq!(request.model, model);
            assert!((1..=9).contains(&request.images.len()));
            assert!((3..=15).contains(&request.duration));
        }
        Err(e) => assert!(e.to_string().starts_with("/input"), "{e}"),
    }
});
