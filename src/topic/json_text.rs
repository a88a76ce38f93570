//! Column types of read events: JSON kept as the text PostgreSQL sent and parsed when first
//! asked for, and `xid8` read in binary.

use std::error::Error as StdError;
use std::fmt;
use std::sync::OnceLock;

use postgres::types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};
use serde_json::Value;

type BoxError = Box<dyn StdError + Sync + Send>;

/// The version byte of jsonb's binary format.
const JSONB_VERSION: u8 = 1;

/// A `json`/`jsonb` value as its text, parsed into a [`Value`] on first use. Reading a batch
/// then costs one copy per payload: parsing every payload into a `Value` was over half of a
/// consumer's client time, and handlers that deserialize into their own types, pass the JSON
/// on, or look only at some events do not need it.
#[derive(Clone)]
pub(crate) struct JsonText {
    text: Box<str>,
    value: OnceLock<Value>,
}

impl JsonText {
    /// The JSON text.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed value; `Value::Null` when serde_json cannot represent it (nesting deeper
    /// than its limit of 128), logged once.
    pub(crate) fn value(&self) -> &Value {
        self.value.get_or_init(|| {
            serde_json::from_str(&self.text).unwrap_or_else(|e| {
                log::warn!("pgbroker: event JSON not representable as serde_json::Value: {e}");
                Value::Null
            })
        })
    }

    /// Deserializes the text into `T`.
    pub(crate) fn parse<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(&self.text)
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        // PostgreSQL prints equal jsonb values alike (keys sorted, one spacing).
        self.text == other.text
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'a> FromSql<'a> for JsonText {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let raw = match (*ty == Type::JSONB, raw.split_first()) {
            (true, Some((&JSONB_VERSION, text))) => text,
            (true, _) => return Err("unsupported jsonb format version".into()),
            (false, _) => raw,
        };
        Ok(JsonText {
            text: std::str::from_utf8(raw)?.into(),
            value: OnceLock::new(),
        })
    }

    accepts!(JSON, JSONB);
}

impl ToSql for JsonText {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&[JSONB_VERSION]);
        }
        out.extend_from_slice(self.text.as_bytes());
        Ok(IsNull::No)
    }

    accepts!(JSON, JSONB);
    to_sql_checked!();
}

/// A transaction id (`xid8`): read in binary, or from its text (older statements cast it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Xid8(pub(crate) u64);

impl<'a> FromSql<'a> for Xid8 {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        if *ty == Type::XID8 {
            let bytes: [u8; 8] = raw.try_into().map_err(|_| "xid8 is not 8 bytes")?;
            return Ok(Xid8(u64::from_be_bytes(bytes)));
        }
        let text = std::str::from_utf8(raw)?;
        Ok(Xid8(
            text.parse()
                .map_err(|_| format!("unexpected xid8 value {text:?}"))?,
        ))
    }

    accepts!(XID8, TEXT);
}

impl ToSql for Xid8 {
    fn to_sql(&self, _: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        out.extend_from_slice(&self.0.to_be_bytes());
        Ok(IsNull::No)
    }

    accepts!(XID8);
    to_sql_checked!();
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn jsonb_text_parses_lazily_and_round_trips() {
        let j = JsonText::from_sql(&Type::JSONB, b"\x01{\"a\": [1, 2.5]}").unwrap();
        assert_eq!(j.as_str(), r#"{"a": [1, 2.5]}"#);
        assert!(j.value.get().is_none());
        assert_eq!(j.value(), &serde_json::json!({"a": [1, 2.5]}));
        let mut out = bytes::BytesMut::new();
        j.to_sql(&Type::JSONB, &mut out).unwrap();
        assert_eq!(&out[..], b"\x01{\"a\": [1, 2.5]}");
        let mut out = bytes::BytesMut::new();
        j.to_sql(&Type::JSON, &mut out).unwrap();
        assert_eq!(&out[..], b"{\"a\": [1, 2.5]}");
        assert!(JsonText::from_sql(&Type::JSONB, b"\x02{}").is_err());
        assert!(JsonText::from_sql(&Type::JSONB, b"").is_err());
        assert!(JsonText::from_sql(&Type::JSONB, b"\x01\xff").is_err());
    }

    #[test]
    fn too_deep_json_reads_as_null_but_keeps_its_text() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let j = JsonText::from_sql(&Type::JSON, deep.as_bytes()).unwrap();
        assert_eq!(j.value(), &Value::Null);
        assert_eq!(j.as_str(), deep);
        assert!(j.parse::<Value>().is_err());
    }

    #[test]
    fn xid8_from_binary_and_text() {
        let raw = 0x0000_0001_0000_002au64.to_be_bytes();
        assert_eq!(
            Xid8::from_sql(&Type::XID8, &raw).unwrap(),
            Xid8(4_294_967_338)
        );
        assert_eq!(Xid8::from_sql(&Type::TEXT, b"42").unwrap(), Xid8(42));
        assert!(Xid8::from_sql(&Type::XID8, &raw[..4]).is_err());
        assert!(Xid8::from_sql(&Type::TEXT, b"-1").is_err());
        let mut out = bytes::BytesMut::new();
        Xid8(4_294_967_338).to_sql(&Type::XID8, &mut out).unwrap();
        assert_eq!(&out[..], &raw);
    }
}
