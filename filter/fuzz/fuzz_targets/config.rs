//! Configuration parsing and validation from raw bytes: `Ok` or `Err`, never a panic.
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
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty(), "an empty configuration error");
        }
    }
});
