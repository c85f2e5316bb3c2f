//! How deeply a JSON text nests arrays and objects, measured in one linear
//! pass over its bytes with a counter: no recursion and no allocation, so a
//! hostile text of any depth costs O(len) time and O(1) memory.
//!
//! Invariant: brackets inside strings (escapes included) are not counted;
//! the text is not otherwise validated (the parser that follows does that),
//! so the answer for invalid JSON is only "how deep its brackets go".

/// The default deepest nesting a client frame may have, the frame's own
/// object counting as level 1. SUMU's Python backends fail past ~1,000
/// levels (`RecursionError`, the message goes to their DLQ); serde_json's
/// own limit for typed values is 128; real messages rarely pass 10.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;

/// The deepest nesting of arrays and objects in `text` (0 for a scalar),
/// stopping early once it passes `limit` (then the answer is `limit + 1`).
pub fn json_depth(text: &[u8], limit: usize) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > deepest {
                    deepest = depth;
                    if deepest > limit {
                        return deepest;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nesting_and_skips_strings() {
        assert_eq!(json_depth(b"1", 10), 0);
        assert_eq!(json_depth(b"{}", 10), 1);
        assert_eq!(json_depth(br#"{"a":[1,{"b":[]}]}"#, 10), 4);
        assert_eq!(json_depth(br#"[[],[],[[]]]"#, 10), 3);
        // Brackets in strings, escaped quotes and backslashes included.
        assert_eq!(json_depth(br#"{"a":"[[[{{{"}"#, 10), 1);
        assert_eq!(json_depth(br#"{"a":"\"[[[","b":"\\","c":[]}"#, 10), 2);
    }

    #[test]
    fn stops_once_past_the_limit() {
        let deep = "[".repeat(1_000_000);
        assert_eq!(json_depth(deep.as_bytes(), 64), 65);
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(json_depth(ok.as_bytes(), 64), 64);
    }
}
