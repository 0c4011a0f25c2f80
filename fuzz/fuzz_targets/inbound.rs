//! Inbound WebSocket frames: what apps send up, in both dialects.
//!
//! tungstenite hands the session only valid UTF-8 text frames, so that is what is
//! parsed. Every refusal must say something (it goes back in an `error` frame), a
//! position must be finite, and the three channels routes must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logi_fuzz::DIALECTS;
use ws_edge::dialect::{error_frame, inbound};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let results = DIALECTS.map(|dialect| inbound::parse(dialect, text));
    for result in &results {
        match result {
            Ok(p) => assert!(p.latitude.is_finite() && p.longitude.is_finite(), "{p:?}"),
            Err(e) => {
                let message = e.to_string();
                assert!(!message.is_empty(), "{e:?}");
                let frame = serde_json::to_string(&error_frame(&message)).expect("serializes");
                assert!(
                    frame.starts_with(r#"{"type":"error","message":"#),
                    "{frame}"
                );
            }
        }
    }
    // The channels routes share one frame format.
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], results[2]);
});
