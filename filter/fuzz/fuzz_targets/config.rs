//! Configuration parsing and validation from raw bytes: `Ok` or `Err`, never a panic. Whatever
//! is accepted is a JSON document (serde_json reads it too); whatever is refused says why.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandbox_router::core::config::{compile, HostFacts};

fuzz_target!(|data: &[u8]| {
    // Byte 0 chooses whether Istio's node metadata supplies a namespace.
    let Some((&facts_byte, json)) = data.split_first() else {
        return;
    };
    let facts = HostFacts {
        namespace: match facts_byte % 3 {
            0 => None,
            1 => Some("shop".to_owned()),
            _ => Some("Not A Namespace".to_owned()),
        },
    };
    match compile(json, &facts) {
        Ok(router) => {
            // Whatever compiled can be asked about a request without trouble.
            let _ = router.sandbox_count();
            if !json.iter().all(u8::is_ascii_whitespace) {
                let document: Result<serde_json::Value, _> = serde_json::from_slice(json);
                assert!(document.is_ok(), "accepted a document serde_json refuses");
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty(), "an empty configuration error");
        }
    }
});
