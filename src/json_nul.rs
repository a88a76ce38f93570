//! jsonb cannot store the NUL character (`\u0000`): payloads are checked for it before they
//! are sent, so the error names the payload (and the item of a batch) rather than the server's
//! bare "unsupported Unicode escape sequence" (22P05).

use serde_json::Value;

/// Whether a string or key anywhere in `v` holds a NUL character.
pub(crate) fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(contains_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod test {
    use super::contains_nul;
    use serde_json::json;

    #[test]
    fn finds_nul_in_strings_keys_and_nesting() {
        assert!(!contains_nul(&json!({"a": [1, "b", null]})));
        assert!(contains_nul(&json!("x\u{0}")));
        assert!(contains_nul(&json!({"a": [{"b": "\u{0}"}]})));
        assert!(contains_nul(&json!({"k\u{0}": 1})));
    }
}
