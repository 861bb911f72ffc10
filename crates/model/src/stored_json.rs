//! What MySQL's `JSON` column refuses in text that is otherwise well-formed JSON.
//!
//! `properties` and `user_properties` travel as the client's own JSON text (`RawValue`), which
//! serde_json checks for syntax only: a string escape is consumed without being decoded. Two
//! things pass that check and fail the worker's insert, so they are refused at the door:
//!
//! - an unpaired UTF-16 surrogate escape (`"\ud800"`): it encodes no character, and MySQL
//!   refuses the document (`Invalid JSON text: "Invalid encoding in string."`);
//! - a number beyond the range of a double (`1e400`): MySQL stores JSON numbers as doubles
//!   and refuses it (`"Number too big to be stored in double."`).

/// Why MySQL would refuse the well-formed JSON text `json`, if it would.
pub(crate) fn refused_by_mysql(json: &str) -> Option<String> {
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => match scan_string(json, i + 1) {
                Scan::End(next) => i = next,
                Scan::LoneSurrogate(at) => {
                    return Some(format!(
                        "holds {}, an unpaired UTF-16 surrogate: it encodes no character",
                        &json[at..at + 6]
                    ))
                }
            },
            b'-' | b'0'..=b'9' => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .map_or(bytes.len(), |n| i + n);
                let number = &json[i..end];
                // Below 309 digits and without an exponent a number cannot exceed f64::MAX
                // (about 1.8e308); only the others are worth parsing.
                if (number.len() > 300 || number.contains(['e', 'E']))
                    && !number.parse::<f64>().is_ok_and(f64::is_finite)
                {
                    return Some(format!(
                        "holds the number {}, too large to be stored as a double",
                        abbreviated(number)
                    ));
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    None
}

enum Scan {
    /// The string ends; the index after its closing quote.
    End(usize),
    /// A `\uXXXX` escape at this index is a surrogate without its pair.
    LoneSurrogate(usize),
}

/// Walks a string whose content starts at `start`.
fn scan_string(json: &str, start: usize) -> Scan {
    let bytes = json.as_bytes();
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Scan::End(i + 1),
            b'\\' if bytes.get(i + 1) == Some(&b'u') => {
                let unit = hex4(bytes, i + 2);
                match unit {
                    Some(0xD800..=0xDBFF) => {
                        // A high surrogate must be followed at once by an escaped low one.
                        let low = (bytes.get(i + 6) == Some(&b'\\')
                            && bytes.get(i + 7) == Some(&b'u'))
                        .then(|| hex4(bytes, i + 8))
                        .flatten();
                        if !matches!(low, Some(0xDC00..=0xDFFF)) {
                            return Scan::LoneSurrogate(i);
                        }
                        i += 12;
                    }
                    Some(0xDC00..=0xDFFF) => return Scan::LoneSurrogate(i),
                    _ => i += 6,
                }
            }
            // Any other escape is two bytes; skipping both keeps `\\` from escaping the next.
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Scan::End(bytes.len())
}

fn hex4(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = bytes.get(at..at + 4)?;
    let text = std::str::from_utf8(digits).ok()?;
    u16::from_str_radix(text, 16).ok()
}

fn abbreviated(number: &str) -> String {
    if number.len() <= 24 {
        number.to_owned()
    } else {
        format!("{}... ({} characters)", &number[..16], number.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_are_found_and_pairs_and_look_alikes_are_not() {
        for bad in [
            r#"{"a":"\ud800"}"#,
            r#"{"a":"x\uDBFFy"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"\ud800":1}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\ud800\ud800"}"#,
            r#"{"a":["ok","\\","\ud83d"]}"#,
        ] {
            let reason = refused_by_mysql(bad).unwrap_or_default();
            assert!(
                reason.contains("unpaired UTF-16 surrogate"),
                "{bad}: {reason}"
            );
        }
        for good in [
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":"\\ud800"}"#,
            r#"{"a":"\\\\","b":"\u0041\n\""}"#,
            r#"{"a":"😀"}"#,
        ] {
            assert_eq!(refused_by_mysql(good), None, "{good}");
        }
    }

    #[test]
    fn numbers_beyond_a_double_are_found() {
        for bad in [
            "{\"a\":1e400}",
            "{\"a\":[-1E309]}",
            &format!("{{\"a\":{}}}", "9".repeat(400)),
        ] {
            let reason = refused_by_mysql(bad).unwrap_or_default();
            assert!(reason.contains("too large"), "{bad}: {reason}");
        }
        for good in [
            "{\"a\":1.7e308,\"b\":-12.5e-3,\"c\":123456789012345678901234567890}",
            "{\"1e400\":true}",
        ] {
            assert_eq!(refused_by_mysql(good), None, "{good}");
        }
    }
}
