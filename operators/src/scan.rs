//! A fast path for the common shape of a raw tick line: a flat JSON object whose values are
//! strings (without `\\u` escapes), numbers, `true`, `false` or `null`.
//!
//! [`flat_members`] walks such a line once, without allocating, and hands each member's key
//! and raw value text (as `serde_json::value::RawValue::get` would give it) to a callback. It
//! answers `None` for anything outside that subset (an escape, a nested value, a control
//! character, a number or literal JSON spells otherwise, trailing text) and the caller falls
//! back to `serde_json`, which then decides (and words) the outcome. So the fast path only
//! ever accepts lines `serde_json` accepts, with the same values.
//!
//! [`rfc3339_ns`] is the same idea for the common timestamp form
//! `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`; `None` means "ask chrono".

/// Calls `member(key, raw_value, plain)` for each member of the flat JSON object `line`, in
/// order; `plain` tells a string value without escapes (its content is the text between its
/// quotes). `None`: the line is outside the fast subset (not necessarily invalid JSON).
pub fn flat_members<'a>(
    line: &'a str,
    mut member: impl FnMut(&'a str, &'a str, bool),
) -> Option<()> {
    match plain_quotes(line.as_bytes()) {
        Some(quotes) => plain_members(line, &quotes, &mut member),
        None => bytewise_members(line, member),
    }
}

/// [`flat_members`] a byte at a time: any line, escapes and all.
fn bytewise_members<'a>(
    line: &'a str,
    mut member: impl FnMut(&'a str, &'a str, bool),
) -> Option<()> {
    let b = line.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some(());
    }
    loop {
        let (key_end, key, escaped) = string(b, i)?;
        if escaped {
            // An escaped key may spell a known one: serde_json decides.
            return None;
        }
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let (end, escaped) = value(b, i)?;
        // Strings end on a `"` and numbers and literals on ASCII, so both ends are char
        // boundaries.
        let plain = b[i] == b'"' && !escaped;
        member(&line[key.0..key.1], &line[i..end], plain);
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return (skip_ws(b, i + 1) == b.len()).then_some(()),
            _ => return None,
        }
    }
}

/// Lines up to `64 * WORDS` bytes may take the word-at-a-time path.
const WORDS: usize = 8;
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// Bit 8k+7 set exactly where byte k of `w` is zero.
fn zero_bytes(w: u64) -> u64 {
    !(((w & LOW7).wrapping_add(LOW7)) | w | LOW7)
}

/// The high bits of [`zero_bytes`] gathered into one bit per byte, byte k at bit k.
fn byte_bits(high: u64) -> u64 {
    (high >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56
}

/// The positions of the quotes of a line up to 512 bytes with no backslash and no control
/// character (one bit per byte), built 8 bytes at a time; `None` for any other line.
fn plain_quotes(b: &[u8]) -> Option<[u64; WORDS]> {
    if b.len() > 64 * WORDS {
        return None;
    }
    let mut quotes = [0u64; WORDS];
    let mut special = 0u64;
    let mut word = |c: usize, w: u64| {
        // Control characters (below 0x20) and backslashes: exact as an "any" test, since a
        // borrow only carries past a byte that is itself one.
        let bs = w ^ (ONES * u64::from(b'\\'));
        special |= (w.wrapping_sub(ONES * 0x20) & !w) | (bs.wrapping_sub(ONES) & !bs);
        quotes[(c / 8) % WORDS] |=
            byte_bits(zero_bytes(w ^ (ONES * u64::from(b'"')))) << (c % 8 * 8);
    };
    let mut chunks = b.chunks_exact(8);
    for (c, chunk) in (&mut chunks).enumerate() {
        word(c, u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])));
    }
    let mut tail = [b' '; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    word(b.len() / 8, u64::from_le_bytes(tail));
    (special & HIGH == 0).then_some(quotes)
}

/// [`flat_members`] of a line [`plain_quotes`] takes: no string of it has an escape, so each
/// ends at the next quote. The grammar is the byte-wise scan's (whitespace can only be
/// spaces here), so its answer is final.
fn plain_members<'a>(
    line: &'a str,
    quotes: &[u64; WORDS],
    member: &mut impl FnMut(&'a str, &'a str, bool),
) -> Option<()> {
    let b = line.as_bytes();
    let next_quote = |from: usize| -> Option<usize> {
        let mut w = from / 64;
        let mut bits = quotes.get(w)? & (!0u64 << (from % 64));
        while bits == 0 {
            w += 1;
            bits = *quotes.get(w)?;
        }
        Some(w * 64 + bits.trailing_zeros() as usize)
    };
    let spaces = |mut i: usize| {
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        i
    };
    let mut i = spaces(0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = spaces(i + 1);
    if b.get(i) == Some(&b'}') {
        return (spaces(i + 1) == b.len()).then_some(());
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = next_quote(i + 1)?;
        let key = line.get(i + 1..key_end)?;
        i = spaces(key_end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = spaces(i + 1);
        let (end, plain) = match b.get(i)? {
            b'"' => (next_quote(i + 1)? + 1, true),
            _ => (value(b, i)?.0, false),
        };
        member(key, line.get(i..end)?, plain);
        i = spaces(end);
        match b.get(i) {
            Some(b',') => i = spaces(i + 1),
            Some(b'}') => return (spaces(i + 1) == b.len()).then_some(()),
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// A string at `i` with no control characters and no `\\u` escapes: (index after it, content
/// range, whether it has escapes).
fn string(b: &[u8], i: usize) -> Option<(usize, (usize, usize), bool)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let (mut j, mut escaped) = (start, false);
    loop {
        j += b[j..].iter().position(|&c| STRING_STOP[c as usize])?;
        match b[j] {
            b'"' => return Some((j + 1, (start, j), escaped)),
            b'\\' => match b.get(j + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                    escaped = true;
                    j += 2;
                }
                _ => return None,
            },
            _ => return None,
        }
    }
}

/// The bytes that end a plain string's run: `"`, `\` and control characters.
const STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The end of a scalar value at `i`, and whether it is a string with escapes.
fn value(b: &[u8], i: usize) -> Option<(usize, bool)> {
    let end = match *b.get(i)? {
        b'"' => return string(b, i).map(|(end, _, escaped)| (end, escaped)),
        b'-' | b'0'..=b'9' => number(b, i),
        b't' => literal(b, i, b"true"),
        b'f' => literal(b, i, b"false"),
        b'n' => literal(b, i, b"null"),
        _ => None,
    };
    end.map(|e| (e, false))
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    b[i..].starts_with(word).then_some(i + word.len())
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// A JSON number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    if b[i] == b'-' {
        i += 1;
    }
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(b, i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(b, i);
        if end == i {
            return None;
        }
        i = end;
    }
    // A number runs into the next structural character or whitespace.
    match b.get(i) {
        None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') => Some(i),
        _ => None,
    }
}

/// The content of a JSON string value's raw text when it has no escapes.
pub fn plain_string(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

fn num<const N: usize>(b: &[u8], at: usize) -> Option<u32> {
    let mut v = 0u32;
    for &c in b.get(at..at + N)? {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn is_leap(y: u32) -> bool {
    y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400))
}

/// Days from 1970-01-01 to the civil date (proleptic Gregorian), for valid dates.
fn days_from_civil(y: u32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Nanoseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+HH:MM|-HH:MM)` for years
/// 1970 to 2261 and seconds below 60; `None` for anything else (chrono then decides).
pub fn rfc3339_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num::<4>(b, 0)?, num::<2>(b, 5)?, num::<2>(b, 8)?);
    let (h, mi, sec) = (num::<2>(b, 11)?, num::<2>(b, 14)?, num::<2>(b, 17)?);
    if !(1970..=2261).contains(&y) || !(1..=12).contains(&mo) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let month_days = [
        31,
        28 + u32::from(is_leap(y)),
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d == 0 || d > month_days[mo as usize - 1] {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b[i] == b'.' {
        let end = digits(b, i + 1);
        let n = end - i - 1;
        if n == 0 || n > 9 {
            return None;
        }
        for &c in &b[i + 1..end] {
            nanos = nanos * 10 + i64::from(c - b'0');
        }
        nanos *= 10i64.pow(9 - n as u32);
        i = end;
    }
    let offset_s = match b.get(i..)? {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num::<2>(b, i + 1)?, num::<2>(b, i + 4)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + sec) - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use proptest::prelude::*;

    fn members(line: &str) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        flat_members(line, |k, v, plain| {
            assert_eq!(plain, v.starts_with('"') && !v.contains('\\'), "{v}");
            out.push((k.to_string(), v.to_string()))
        })?;
        Some(out)
    }

    #[test]
    fn flat_objects_are_scanned_like_serde_json_raw_values() {
        let m = members(r#" { "a": "x y", "b":-1.5e+3 ,"c" :true, "d": null, "e": 0}  "#).unwrap();
        let want = [
            ("a", "\"x y\""),
            ("b", "-1.5e+3"),
            ("c", "true"),
            ("d", "null"),
            ("e", "0"),
        ];
        assert_eq!(
            m,
            want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
        );
        assert_eq!(members("{}").unwrap(), vec![]);
    }

    #[test]
    fn anything_outside_the_subset_falls_back() {
        for line in [
            r#"{"a":"x\u0041"}"#,
            r#"{"a":"x\q"}"#,
            r#"{"a":"x\"}"#,
            r#"{"a\n":1}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":tru}"#,
            r#"{"a":1} x"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            "{\"a\":\"\t\"}",
            r#"{"a":1"#,
            r#"["a"]"#,
            r#"{"a":1x}"#,
        ] {
            assert!(members(line).is_none(), "{line}");
        }
    }

    #[test]
    fn timestamps_match_chrono() {
        for s in [
            "2024-03-01T14:29:59.231Z",
            "2024-02-29T23:59:59.999999999+01:30",
            "1970-01-01T00:00:00Z",
            "2000-12-31T12:00:00.5-05:00",
            "2261-12-31T23:59:59Z",
        ] {
            let want = DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap();
            assert_eq!(rfc3339_ns(s), Some(want), "{s}");
        }
        for s in [
            "2023-02-29T00:00:00Z",
            "2024-03-01T24:00:00Z",
            "2024-03-01T10:00:60Z",
            "2024-03-01T10:00:00",
            "2024-03-01T10:00:00.Z",
            "2024-03-01T10:00:00.1234567891Z",
            "2024-03-01 10:00:00Z",
            "1969-12-31T23:59:59Z",
            "2024-03-01T10:00:00+0100",
        ] {
            assert_eq!(rfc3339_ns(s), None, "{s}");
        }
    }

    /// The members the byte-wise scan finds, or `None`.
    fn bytewise(line: &str) -> Option<Vec<(String, String, bool)>> {
        let mut out = Vec::new();
        bytewise_members(line, |k, v, p| out.push((k.into(), v.into(), p)))?;
        Some(out)
    }

    #[test]
    fn zero_bytes_are_found_exactly_at_every_position() {
        for k in 0..8 {
            for v in 0..=255u8 {
                for fill in [0u8, 1, 0x22, 0x80, 0xff] {
                    let mut bytes = [fill; 8];
                    bytes[k] = v;
                    let want = bytes
                        .iter()
                        .enumerate()
                        .fold(0u64, |m, (i, &c)| m | u64::from(c == 0) << i);
                    assert_eq!(byte_bits(zero_bytes(u64::from_le_bytes(bytes))), want);
                }
            }
        }
    }

    #[test]
    fn plain_lines_take_the_word_path_and_others_the_byte_path() {
        let tick = r#"{"venue": "ARCX", "symbol": " é ZEM", "ts": "2024-03-01T14:29:59.231Z", "price": 172.93, "size": "4", "seq": 1, "currency": null}"#;
        assert!(plain_quotes(tick.as_bytes()).is_some());
        assert_eq!(members(tick).unwrap().len(), 7);
        for other in [
            r#"{"a":"x\"y"}"#,
            "{\"a\":\t1}",
            &format!(r#"{{"a":"{}"}}"#, "x".repeat(600)),
        ] {
            assert!(plain_quotes(other.as_bytes()).is_none(), "{other}");
            assert!(bytewise(other).is_some(), "{other}");
        }
    }

    proptest! {
        /// On every line the word path takes, it answers what the byte path answers; it takes
        /// every line without escapes or control characters up to 512 bytes.
        #[test]
        fn the_word_path_answers_as_the_byte_path(
            parts in proptest::collection::vec(
                (
                    prop_oneof![
                        8 => prop_oneof![
                            Just("\"venue\""), Just("\"seq\""), Just("\"a b\""), Just("\"\""),
                            Just("\"é\""),
                        ],
                        1 => prop_oneof![Just("venue"), Just("\"k\\\"q\"")],
                    ],
                    prop_oneof![
                        8 => prop_oneof![
                            Just("\"XNAS\""), Just("\" a:b, }\""), Just("\"\""), Just("null"),
                            Just("-12.5e+3"), Just("0"), Just("true"), Just("\"日本\""),
                        ],
                        1 => prop_oneof![
                            Just("01"), Just("1."), Just("fals"), Just("{}"), Just("[1]"),
                            Just("\"x\\ty\""), Just("\"open"), Just("\"tab\there\""),
                        ],
                    ],
                    prop_oneof![8 => Just(""), 8 => Just(" "), 2 => Just("  "), 1 => Just("\t")],
                    prop_oneof![8 => Just(":"), 4 => Just(" : "), 1 => Just(""), 1 => Just(",")],
                ),
                0..20,
            ),
            open in prop_oneof![8 => Just("{"), 4 => Just(" { "), 1 => Just("["), 1 => Just("")],
            close in prop_oneof![
                8 => Just("}"), 4 => Just(" } "), 1 => Just("}x"), 1 => Just(",}"), 1 => Just(""),
            ],
            sep in prop_oneof![8 => Just(","), 8 => Just(", "), 2 => Just(" ,"), 1 => Just(";")],
        ) {
            let body: Vec<String> = parts
                .iter()
                .map(|(k, v, ws, colon)| format!("{ws}{k}{colon}{ws}{v}"))
                .collect();
            let line = format!("{open}{}{close}", body.join(sep));
            let byte = bytewise(&line);
            match plain_quotes(line.as_bytes()) {
                Some(quotes) => {
                    let mut out = Vec::new();
                    let word = plain_members(&line, &quotes, &mut |k: &str, v: &str, p| {
                        out.push((k.to_string(), v.to_string(), p))
                    })
                    .map(|()| out);
                    prop_assert_eq!(word, byte, "{}", line);
                }
                None => prop_assert!(
                    line.len() > 512 || line.bytes().any(|c| c < 0x20 || c == b'\\'),
                    "{} left to the byte path", line
                ),
            }
        }

        #[test]
        fn any_valid_timestamp_matches_chrono(
            y in 1970u32..2262, mo in 1u32..13, d in 1u32..32, h in 0u32..24, mi in 0u32..60,
            s in 0u32..60, frac in proptest::option::of(1usize..10), fv in 0u64..1_000_000_000,
            off in proptest::option::of((any::<bool>(), 0u32..24, 0u32..60)),
        ) {
            let mut text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
            if let Some(n) = frac {
                let digits = format!("{fv:09}");
                text.push('.');
                text.push_str(&digits[..n]);
            }
            match off {
                None => text.push('Z'),
                Some((neg, oh, om)) => {
                    text.push_str(&format!("{}{oh:02}:{om:02}", if neg { '-' } else { '+' }))
                }
            }
            let want = DateTime::parse_from_rfc3339(&text)
                .ok()
                .and_then(|dt| dt.timestamp_nanos_opt());
            match rfc3339_ns(&text) {
                Some(ns) => prop_assert_eq!(Some(ns), want, "{}", text),
                None => prop_assert!(want.is_none(), "{} parsed by chrono only", text),
            }
        }
    }
}
