//! Raw input text. Records travel through the dataflow as `String`s; a line whose bytes are
//! not valid UTF-8 travels as a marker holding the original bytes in base64, so that the
//! normalize step dead-letters it and the dead letter carries the bytes that arrived, not a
//! lossy copy.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Starts the text of a line that was not valid UTF-8 (NUL never starts a JSON line).
const MARKER: &str = "\u{0}tickflow-invalid-utf8:";

/// The text of a raw line: itself when valid UTF-8, else the marker with the offset of the
/// first invalid byte and the bytes in base64.
pub fn line_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(e) => format!("{MARKER}{}:{}", e.valid_up_to(), STANDARD.encode(bytes)),
    }
}

/// For a line made by [`line_text`] from bytes that were not UTF-8: the offset of the first
/// invalid byte and the original bytes, base64.
pub fn invalid_utf8(text: &str) -> Option<(usize, &str)> {
    let rest = text.strip_prefix(MARKER)?;
    let (offset, b64) = rest.split_once(':')?;
    Some((offset.parse().ok()?, b64))
}

/// The original bytes of such a line, shown with U+FFFD for what is not UTF-8.
pub fn lossy(b64: &str) -> String {
    STANDARD
        .decode(b64)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_text_passes_and_invalid_bytes_round_trip() {
        assert_eq!(line_text("{\"a\": \"é\"}".as_bytes()), "{\"a\": \"é\"}");
        assert_eq!(invalid_utf8("{\"a\": 1}"), None);
        let bytes = b"{\"venue\": \"X\xff\xfeY\"}";
        let text = line_text(bytes);
        let (offset, b64) = invalid_utf8(&text).unwrap();
        assert_eq!(offset, 12);
        assert_eq!(STANDARD.decode(b64).unwrap(), bytes);
        assert_eq!(lossy(b64), "{\"venue\": \"X\u{fffd}\u{fffd}Y\"}");
    }
}
