//! The configuration's JSON reader (`core::json`) against serde_json: the same documents are
//! accepted (up to the reader's nesting limit), read to the same values, and `skip_value`
//! agrees with reading. Nothing panics, whatever the bytes.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use sandbox_router::core::json::{Error, Kind, Reader, MAX_DEPTH};
use serde_json::{Map, Number, Value};

/// Reads one value with the pull reader into a serde_json value. `odd_number` is set for a
/// number serde_json cannot hold (out of f64 range): serde_json rejects those documents.
fn read(r: &mut Reader<'_>, depth: usize, odd_number: &mut bool) -> Result<Value, Error> {
    assert!(
        depth <= MAX_DEPTH + 1,
        "the reader let nesting reach {depth}"
    );
    Ok(match r.peek()? {
        Kind::Object => {
            r.begin_object()?;
            let mut map = Map::new();
            let mut first = true;
            while let Some(key) = r.next_key(first)? {
                first = false;
                let value = read(r, depth + 1, odd_number)?;
                map.insert(key.into_owned(), value);
            }
            Value::Object(map)
        }
        Kind::Array => {
            r.begin_array()?;
            let mut items = Vec::new();
            let mut first = true;
            while r.next_element(first)? {
                first = false;
                items.push(read(r, depth + 1, odd_number)?);
            }
            Value::Array(items)
        }
        Kind::String => {
            let s: Cow<'_, str> = r.string()?;
            Value::String(s.into_owned())
        }
        Kind::Number => {
            let text = r.number()?;
            match text.parse::<Number>() {
                Ok(n) => Value::Number(n),
                Err(_) => {
                    *odd_number = true;
                    Value::Null
                }
            }
        }
        Kind::Bool => Value::Bool(r.boolean()?),
        Kind::Null => {
            r.null()?;
            Value::Null
        }
    })
}

fn nesting(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(nesting).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_error(e: &Error, input: &[u8]) {
    assert!(e.line >= 1 && e.column >= 1, "{e:?}");
    assert!(e.line <= input.len() + 1, "{e:?}");
    let _ = e.to_string();
}

fuzz_target!(|data: &[u8]| {
    let mut odd_number = false;
    let mut r = Reader::new(data);
    let ours = read(&mut r, 0, &mut odd_number).and_then(|v| r.end().map(|()| v));
    let mut skipper = Reader::new(data);
    let skipped = skipper.skip_value().and_then(|()| skipper.end());
    let theirs: Result<Value, _> = serde_json::from_slice(data);

    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => assert_eq!(
            a,
            b,
            "read differently: {:?}",
            String::from_utf8_lossy(data)
        ),
        (Ok(_), Err(e)) => assert!(
            odd_number,
            "accepted what serde_json rejects ({e}): {:?}",
            String::from_utf8_lossy(data)
        ),
        (Err(e), Ok(v)) => {
            check_error(e, data);
            assert!(
                nesting(v) > MAX_DEPTH,
                "rejected valid JSON ({e}): {:?}",
                String::from_utf8_lossy(data)
            );
        }
        (Err(e), Err(_)) => check_error(e, data),
    }
    assert_eq!(
        ours.is_ok(),
        skipped.is_ok(),
        "skip_value disagrees with reading ({skipped:?}): {:?}",
        String::from_utf8_lossy(data)
    );
});
