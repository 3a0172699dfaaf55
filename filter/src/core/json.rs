//! A small, strict JSON reader (RFC 8259) for the configuration.
//!
//! It is a pull reader: the caller asks for one token at a time and walks the document with
//! its own typed code, so nothing but the value in hand is ever materialised. Strings borrow
//! the input unless they hold escapes. Objects and arrays nest at most [`MAX_DEPTH`] deep and
//! nothing here recurses, so no input exhausts the stack, and no input panics.

use std::borrow::Cow;
use std::fmt;

/// The deepest nesting of objects and arrays accepted.
pub const MAX_DEPTH: usize = 64;

/// What is wrong, and where: line and column (in bytes) are 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub reason: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.reason, self.line, self.column
        )
    }
}

/// The type of the next value, told by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl Kind {
    /// For messages: "invalid type: a string, expected ...".
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Object => "an object",
            Kind::Array => "an array",
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::Null => "null",
        }
    }
}

/// Reads one JSON document from `input`.
///
/// An object is read as `begin_object()`, then `next_key(first)` until it gives `None` (with
/// `first` true only on the first call) reading each member's value in between. An array is
/// read alike with `begin_array()` and `next_element(first)`.
pub struct Reader<'a> {
    input: &'a [u8],
    /// The input as text when it is all UTF-8 (the usual case): then strings are sliced from
    /// it without checking each again.
    text: Option<&'a str>,
    pos: usize,
    /// Objects and arrays open at `pos`.
    depth: usize,
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Reader {
            input,
            text: std::str::from_utf8(input).ok(),
            pos: 0,
            depth: 0,
        }
    }

    /// A reader of the same input at byte `pos`, inside `depth` open objects and arrays: to
    /// read again a value whose position was noted earlier.
    pub fn at(&self, pos: usize, depth: usize) -> Self {
        Reader {
            input: self.input,
            text: self.text,
            pos,
            depth,
        }
    }

    /// The byte offset reached.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// An error at the current position.
    pub fn error(&self, reason: impl Into<String>) -> Error {
        self.error_at(self.pos, reason)
    }

    pub fn error_at(&self, at: usize, reason: impl Into<String>) -> Error {
        let before = self.input.get(..at).unwrap_or(self.input);
        let line = before.iter().filter(|&&b| b == b'\n').count();
        let column = before.iter().rev().take_while(|&&b| b != b'\n').count();
        Error {
            reason: reason.into(),
            line: line.saturating_add(1),
            column: column.saturating_add(1),
        }
    }

    /// "unexpected X, expected `wanted`" at the current position.
    fn unexpected(&self, wanted: &str) -> Error {
        match self.byte() {
            None => self.error(format!("unexpected end of input, expected {wanted}")),
            Some(b) if b.is_ascii_graphic() => {
                self.error(format!("unexpected `{}`, expected {wanted}", char::from(b)))
            }
            Some(b) => self.error(format!("unexpected byte {b:#04x}, expected {wanted}")),
        }
    }

    fn byte(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn bump(&mut self) {
        self.pos = self.pos.saturating_add(1);
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.byte(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }

    /// The type of the next value (whitespace skipped).
    pub fn peek(&mut self) -> Result<Kind, Error> {
        self.skip_whitespace();
        match self.byte() {
            Some(b'{') => Ok(Kind::Object),
            Some(b'[') => Ok(Kind::Array),
            Some(b'"') => Ok(Kind::String),
            Some(b'-' | b'0'..=b'9') => Ok(Kind::Number),
            Some(b't' | b'f') => Ok(Kind::Bool),
            Some(b'n') => Ok(Kind::Null),
            _ => Err(self.unexpected("a value")),
        }
    }

    /// Only whitespace may follow the document.
    pub fn end(&mut self) -> Result<(), Error> {
        self.skip_whitespace();
        match self.byte() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters after the top-level value")),
        }
    }

    fn open(&mut self, byte: u8, wanted: &str) -> Result<(), Error> {
        self.skip_whitespace();
        if self.byte() != Some(byte) {
            return Err(self.unexpected(wanted));
        }
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.bump();
        self.depth = self.depth.saturating_add(1);
        Ok(())
    }

    /// Consumes `close` (true) or, unless `first`, a comma (false); anything else is an error.
    fn close_or_comma(&mut self, first: bool, close: u8, wanted: &str) -> Result<bool, Error> {
        self.skip_whitespace();
        if self.byte() == Some(close) {
            self.bump();
            self.depth = self.depth.saturating_sub(1);
            return Ok(true);
        }
        if !first {
            if self.byte() != Some(b',') {
                return Err(self.unexpected(wanted));
            }
            self.bump();
        }
        Ok(false)
    }

    pub fn begin_object(&mut self) -> Result<(), Error> {
        self.open(b'{', "`{`")
    }

    /// The next member's key, its `:` consumed, or `None` once the object's `}` is.
    pub fn next_key(&mut self, first: bool) -> Result<Option<Cow<'a, str>>, Error> {
        if self.close_or_comma(first, b'}', "`,` or `}`")? {
            return Ok(None);
        }
        let key = self.key(true)?;
        Ok(Some(key))
    }

    fn key(&mut self, keep: bool) -> Result<Cow<'a, str>, Error> {
        self.skip_whitespace();
        if self.byte() != Some(b'"') {
            return Err(self.unexpected("a string key"));
        }
        let key = self.string_body(keep)?;
        self.skip_whitespace();
        if self.byte() != Some(b':') {
            return Err(self.unexpected("`:`"));
        }
        self.bump();
        Ok(key)
    }

    pub fn begin_array(&mut self) -> Result<(), Error> {
        self.open(b'[', "`[`")
    }

    /// Whether another element follows (the reader is then at it); false once `]` is consumed.
    pub fn next_element(&mut self, first: bool) -> Result<bool, Error> {
        Ok(!self.close_or_comma(first, b']', "`,` or `]`")?)
    }

    pub fn string(&mut self) -> Result<Cow<'a, str>, Error> {
        self.skip_whitespace();
        if self.byte() != Some(b'"') {
            return Err(self.unexpected("a string"));
        }
        self.string_body(true)
    }

    /// Reads a string from its opening quote. Unless `keep`, it is only validated.
    fn string_body(&mut self, keep: bool) -> Result<Cow<'a, str>, Error> {
        self.bump();
        let mut owned: Option<String> = None;
        let mut start = self.pos;
        loop {
            // Up to the next quote, backslash or control character.
            let rest = self.input.get(self.pos..).unwrap_or_default();
            let plain = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(rest.len());
            self.pos = self.pos.saturating_add(plain);
            match self.byte() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    let tail = self.text(start)?;
                    self.bump();
                    return Ok(match owned {
                        Some(mut text) => {
                            text.push_str(tail);
                            Cow::Owned(text)
                        }
                        None if keep => Cow::Borrowed(tail),
                        None => Cow::Borrowed(""),
                    });
                }
                Some(b'\\') => {
                    let segment = self.text(start)?;
                    self.bump();
                    let c = self.escape()?;
                    if keep {
                        let text = owned.get_or_insert_with(String::new);
                        text.push_str(segment);
                        text.push(c);
                    }
                    start = self.pos;
                }
                Some(_) => return Err(self.error("control character in string")),
            }
        }
    }

    /// The input from `start` to the current position, which must be UTF-8.
    fn text(&self, start: usize) -> Result<&'a str, Error> {
        if let Some(text) = self.text.and_then(|text| text.get(start..self.pos)) {
            return Ok(text);
        }
        let input: &'a [u8] = self.input;
        let bytes = input
            .get(start..self.pos)
            .ok_or_else(|| self.error("internal error: bad span"))?;
        std::str::from_utf8(bytes).map_err(|e| {
            self.error_at(
                start.saturating_add(e.valid_up_to()),
                "invalid UTF-8 in string",
            )
        })
    }

    /// Decodes the escape after a backslash.
    fn escape(&mut self) -> Result<char, Error> {
        let at = self.pos.saturating_sub(1);
        let Some(b) = self.byte() else {
            return Err(self.error("unterminated string"));
        };
        self.bump();
        let simple = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.unicode_escape(at),
            _ => return Err(self.error_at(at, "invalid escape in string")),
        };
        Ok(simple)
    }

    /// `\uXXXX`, or a surrogate pair `\uD8XX\uDCXX`; a lone surrogate is an error.
    fn unicode_escape(&mut self, at: usize) -> Result<char, Error> {
        let unit = self.hex4()?;
        let code = match unit {
            0xD800..=0xDBFF => {
                let pair = self.byte() == Some(b'\\')
                    && self.input.get(self.pos.saturating_add(1)) == Some(&b'u');
                if !pair {
                    return Err(self.error_at(at, "lone surrogate in \\u escape"));
                }
                self.bump();
                self.bump();
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(self.error_at(at, "lone surrogate in \\u escape"));
                }
                // At most 0xFFFFF: no overflow.
                0x1_0000u32.wrapping_add((unit & 0x3FF).wrapping_shl(10) | (low & 0x3FF))
            }
            0xDC00..=0xDFFF => return Err(self.error_at(at, "lone surrogate in \\u escape")),
            _ => unit,
        };
        char::from_u32(code).ok_or_else(|| self.error_at(at, "invalid \\u escape"))
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let mut value = 0u32;
        for _ in 0..4 {
            let digit = self
                .byte()
                .and_then(|b| char::from(b).to_digit(16))
                .ok_or_else(|| self.unexpected("a hex digit"))?;
            value = value.wrapping_shl(4) | digit;
            self.bump();
        }
        Ok(value)
    }

    /// A number's text, checked against the JSON grammar
    /// (`-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`).
    pub fn number(&mut self) -> Result<&'a str, Error> {
        self.skip_whitespace();
        let start = self.pos;
        if self.byte() == Some(b'-') {
            self.bump();
        }
        match self.byte() {
            Some(b'0') => {
                self.bump();
                if matches!(self.byte(), Some(b'0'..=b'9')) {
                    return Err(self.error("invalid number: leading zero"));
                }
            }
            Some(b'1'..=b'9') => self.digits()?,
            _ => return Err(self.unexpected("a digit")),
        }
        if self.byte() == Some(b'.') {
            self.bump();
            self.digits()?;
        }
        if matches!(self.byte(), Some(b'e' | b'E')) {
            self.bump();
            if matches!(self.byte(), Some(b'+' | b'-')) {
                self.bump();
            }
            self.digits()?;
        }
        self.text(start)
    }

    /// One or more digits.
    fn digits(&mut self) -> Result<(), Error> {
        if !matches!(self.byte(), Some(b'0'..=b'9')) {
            return Err(self.unexpected("a digit"));
        }
        while matches!(self.byte(), Some(b'0'..=b'9')) {
            self.bump();
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let found = self
            .input
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(word));
        if found {
            self.pos = self.pos.saturating_add(word.len());
        }
        found
    }

    pub fn boolean(&mut self) -> Result<bool, Error> {
        self.skip_whitespace();
        if self.literal(b"true") {
            Ok(true)
        } else if self.literal(b"false") {
            Ok(false)
        } else {
            Err(self.unexpected("`true` or `false`"))
        }
    }

    pub fn null(&mut self) -> Result<(), Error> {
        self.skip_whitespace();
        if self.literal(b"null") {
            Ok(())
        } else {
            Err(self.unexpected("`null`"))
        }
    }

    /// Reads past the next value, checking it fully, without keeping anything. Iterative:
    /// the kinds of the open containers are a flag per level, bounded by [`MAX_DEPTH`].
    pub fn skip_value(&mut self) -> Result<(), Error> {
        let base = self.depth;
        // Entry `d` is true when the container open at depth `d + 1` is an object.
        let mut objects = [false; MAX_DEPTH];
        loop {
            // One value: a scalar, or the start of a container.
            let opened = match self.peek()? {
                Kind::Object => {
                    self.begin_object()?;
                    self.mark(&mut objects, true)?;
                    if self.close_or_comma(true, b'}', "`,` or `}`")? {
                        false
                    } else {
                        self.key(false)?;
                        true
                    }
                }
                Kind::Array => {
                    self.begin_array()?;
                    self.mark(&mut objects, false)?;
                    self.next_element(true)?
                }
                Kind::String => {
                    self.string_body(false)?;
                    false
                }
                Kind::Number => {
                    self.number()?;
                    false
                }
                Kind::Bool => {
                    self.boolean()?;
                    false
                }
                Kind::Null => {
                    self.null()?;
                    false
                }
            };
            if opened {
                continue;
            }
            // A value is complete: close containers until one has another value to read.
            loop {
                if self.depth <= base {
                    return Ok(());
                }
                let is_object = self
                    .depth
                    .checked_sub(1)
                    .and_then(|level| objects.get(level).copied())
                    .ok_or_else(|| self.error("internal error: depth"))?;
                if is_object {
                    if !self.close_or_comma(false, b'}', "`,` or `}`")? {
                        self.key(false)?;
                        break;
                    }
                } else if self.next_element(false)? {
                    break;
                }
            }
        }
    }

    /// Records the kind of the container just opened.
    fn mark(&self, objects: &mut [bool; MAX_DEPTH], is_object: bool) -> Result<(), Error> {
        let slot = self
            .depth
            .checked_sub(1)
            .and_then(|level| objects.get_mut(level))
            .ok_or_else(|| self.error("internal error: depth"))?;
        *slot = is_object;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn string(json: &str) -> Result<String, String> {
        let mut r = Reader::new(json.as_bytes());
        let s = r.string().map_err(|e| e.to_string())?;
        r.end().map_err(|e| e.to_string())?;
        Ok(s.into_owned())
    }

    fn number(json: &str) -> Result<String, String> {
        let mut r = Reader::new(json.as_bytes());
        let n = r.number().map_err(|e| e.to_string())?;
        r.end().map_err(|e| e.to_string())?;
        Ok(n.to_owned())
    }

    fn skip(json: &[u8]) -> Result<(), Error> {
        let mut r = Reader::new(json);
        r.skip_value()?;
        r.end()
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(string(r#""plain""#).unwrap(), "plain");
        assert_eq!(string(r#""""#).unwrap(), "");
        assert_eq!(
            string(r#""a\"b\\c\/d\be\ff\ng\rh\ti""#).unwrap(),
            "a\"b\\c/d\u{8}e\u{c}f\ng\rh\ti"
        );
        assert_eq!(string(r#""\u0041\u00e9\u20AC""#).unwrap(), "Aé€");
        assert_eq!(string("\"é€😀\"").unwrap(), "é€😀");
        assert_eq!(string(r#""\u0000""#).unwrap(), "\0");
        // Unescaped strings borrow the input.
        let mut r = Reader::new(br#""borrowed""#);
        assert!(matches!(r.string().unwrap(), Cow::Borrowed("borrowed")));
        for bad in [
            r#""\x""#,
            r#""\u12""#,
            r#""\u12G4""#,
            r#""\"#,
            r#""abc"#,
            "\"a\nb\"",
            "\"a\tb\"",
            "\"\u{1f}\"",
            r#""\U0041""#,
        ] {
            assert!(string(bad).is_err(), "{bad}");
        }
        // Invalid UTF-8, overlong forms and encoded surrogates are rejected.
        for bad in [
            &b"\"\xff\""[..],
            b"\"\xc0\xaf\"",
            b"\"\xed\xa0\x80\"",
            b"\"\xe2\x82\"",
        ] {
            let mut r = Reader::new(bad);
            assert!(r.string().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn surrogate_pairs() {
        assert_eq!(string(r#""\ud83d\ude00""#).unwrap(), "😀");
        assert_eq!(string(r#""\uD834\uDD1E x""#).unwrap(), "𝄞 x");
        assert_eq!(string(r#""\uDBFF\uDFFF""#).unwrap(), "\u{10FFFF}");
        for bad in [
            r#""\ud83d""#,
            r#""\ud83dx""#,
            r#""\ud83d\n""#,
            r#""\ud83d\u0041""#,
            r#""\ud83d\ud83d""#,
            r#""\ude00""#,
            r#""\ude00\ud83d""#,
            r#""\ud83d\u""#,
        ] {
            let e = string(bad).unwrap_err();
            assert!(
                e.contains("surrogate") || e.contains("hex digit"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn numbers() {
        for good in [
            "0",
            "-0",
            "7",
            "-7",
            "10",
            "4294967296",
            "0.5",
            "-0.25",
            "1e3",
            "1E+3",
            "1.5e-3",
            "0e0",
            "123456789012345678901234567890",
        ] {
            assert_eq!(number(good).unwrap(), good);
        }
        for bad in [
            "",
            "-",
            "+1",
            "01",
            "00",
            "1.",
            ".5",
            "1e",
            "1e+",
            "1.e3",
            "--1",
            "0x10",
            "1_000",
            "NaN",
            "Infinity",
            "-Infinity",
            "1 2",
        ] {
            assert!(number(bad).is_err(), "{bad}");
        }
        // The grammar is a subset of what `str::parse::<f64>` accepts.
        for text in [
            "0", "-0", "0.5", "1e3", "1E+3", "1.5e-3", "1e400", "-1e-400",
        ] {
            assert!(text.parse::<f64>().is_ok(), "{text}");
        }
    }

    #[test]
    fn objects_arrays_and_literals() {
        let mut r = Reader::new(br#" { "a" : [ true , false , null ] , "b\u0021" : {} } "#);
        r.begin_object().unwrap();
        assert_eq!(r.next_key(true).unwrap().as_deref(), Some("a"));
        assert_eq!(r.peek().unwrap(), Kind::Array);
        r.begin_array().unwrap();
        assert!(r.next_element(true).unwrap());
        assert!(r.boolean().unwrap());
        assert!(r.next_element(false).unwrap());
        assert!(!r.boolean().unwrap());
        assert!(r.next_element(false).unwrap());
        assert_eq!(r.peek().unwrap(), Kind::Null);
        r.null().unwrap();
        assert!(!r.next_element(false).unwrap());
        assert_eq!(r.next_key(false).unwrap().as_deref(), Some("b!"));
        r.skip_value().unwrap();
        assert_eq!(r.next_key(false).unwrap(), None);
        r.end().unwrap();

        for good in [
            &br#"{}"#[..],
            b"[]",
            b"[[],{},[{}]]",
            br#"{"a":{"b":[1,-2.5e3,"x",true,false,null]},"c":[]}"#,
            b" \t\r\n 12 \n",
            b"\"s\"",
            b"null",
        ] {
            skip(good).unwrap();
        }
        for bad in [
            &br#"{"a":1,}"#[..],
            b"[1,]",
            b"[,1]",
            b"{,}",
            br#"{"a" 1}"#,
            br#"{"a":1 "b":2}"#,
            b"[1 2]",
            br#"{1:2}"#,
            br#"{"a"}"#,
            b"[}",
            b"{]",
            b"tru",
            b"nul",
            b"True",
            b"'a'",
            b"\xef\xbb\xbf{}",
            b"{}\x0c",
            b"",
            b"  ",
        ] {
            assert!(skip(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn trailing_garbage() {
        let e = skip(b"{} x").unwrap_err();
        assert!(e.reason.contains("trailing"), "{e}");
        assert!(skip(b"{}}").is_err());
        assert!(skip(b"{} {}").is_err());
        assert!(skip(b"1 2").is_err());
        skip(b"{} \n\t\r").unwrap();
    }

    #[test]
    fn errors_tell_line_and_column() {
        let e = skip(b"{\n  \"a\": 1,\n  \"b\": x\n}").unwrap_err();
        assert_eq!((e.line, e.column), (3, 8), "{e}");
        assert!(e.to_string().ends_with(" at line 3 column 8"), "{e}");
        let e = skip(b"[1,").unwrap_err();
        assert_eq!((e.line, e.column), (1, 4), "{e}");
        assert!(e.reason.contains("end of input"), "{e}");
    }

    #[test]
    fn depth_is_limited() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        skip(nested(MAX_DEPTH).as_bytes()).unwrap();
        let e = skip(nested(MAX_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(e.reason.contains("nested deeper"), "{e}");
        let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        skip(objects(MAX_DEPTH).as_bytes()).unwrap();
        assert!(skip(objects(MAX_DEPTH + 1).as_bytes()).is_err());
        // Far too deep, closed or not: an error, not a stack overflow.
        assert!(skip(nested(1_000_000).as_bytes()).is_err());
        assert!(skip(r#"{"a":"#.repeat(100_000).as_bytes()).is_err());
        // The limit counts the levels a resumed reader is already inside.
        let mut r = Reader::new(b"[[]]").at(0, MAX_DEPTH - 1);
        assert!(r.skip_value().is_err());
    }

    #[test]
    fn resumes_inside_a_document() {
        let doc = br#"{"a": [1, 2], "b": {"c": "d"}}"#;
        let mut r = Reader::new(doc);
        r.begin_object().unwrap();
        r.next_key(true).unwrap();
        r.skip_value().unwrap();
        r.next_key(false).unwrap();
        r.skip_whitespace();
        let at = r.position();
        r.skip_value().unwrap();
        let mut again = r.at(at, 1);
        again.begin_object().unwrap();
        assert_eq!(again.next_key(true).unwrap().as_deref(), Some("c"));
        assert_eq!(again.string().unwrap(), "d");
        assert_eq!(again.next_key(false).unwrap(), None);
        assert_eq!(again.position(), r.position());
    }

    /// Every prefix of a valid document is rejected without a panic, and so is every
    /// single-byte corruption of it (which may also leave it valid).
    #[test]
    fn truncations_and_corruptions_never_panic() {
        let doc = br#"{"a": [1, -2.5e+3, 0, "x\"\\\u00e9\ud83d\ude00", true, false, null],
            "b": {"c": {}, "d": [], "e\u0041": "f"}, "g": "h\u00e9"}"#;
        skip(doc).unwrap();
        for cut in 0..doc.len() {
            let prefix = &doc[..cut];
            assert!(skip(prefix).is_err(), "{}", String::from_utf8_lossy(prefix));
        }
        let mut copy = doc.to_vec();
        for i in 0..copy.len() {
            for b in [
                b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'u', b'0', 0xff, 0,
            ] {
                let original = copy[i];
                copy[i] = b;
                let _ = skip(&copy);
                copy[i] = original;
            }
        }
    }
}
