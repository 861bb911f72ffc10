//! A JSON object read as (key, unparsed value) pairs borrowed from the body, and the reverse:
//! an object assembled from such pairs without building a `serde_json::Value` tree.

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::raw::Text;
use crate::FieldError;

/// The members of one JSON object, in order, values left unparsed.
#[derive(Debug)]
pub(crate) struct Members<'a>(pub Vec<(Text<'a>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

impl<'a> Members<'a> {
    pub(crate) fn parse(json: &'a str, field: &str) -> Result<Self, FieldError> {
        serde_json::from_str(json).map_err(|_| FieldError::new(field, "must be a JSON object"))
    }
}

/// Writes `{"k":v,...}` from keys and already well-formed JSON values.
pub(crate) fn object<'k>(members: impl IntoIterator<Item = (&'k str, &'k str)>) -> Box<RawValue> {
    let mut out = String::with_capacity(128);
    out.push('{');
    for (i, (key, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // A `str` always serializes; the key is escaped exactly as JSON requires.
        out.push_str(&serde_json::to_string(key).unwrap_or_else(|_| "\"\"".to_owned()));
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    RawValue::from_string(out).unwrap_or_else(|_| empty_object())
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("{{}} is JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_into_an_object() {
        let members = Members::parse(r#"{"a":1,"b\"":{"c":[true]}}"#, "x").unwrap();
        let keys: Vec<&str> = members.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b\""]);
        let rebuilt = object(members.0.iter().map(|(k, v)| (k.as_str(), v.get())));
        assert_eq!(rebuilt.get(), r#"{"a":1,"b\"":{"c":[true]}}"#);
        assert_eq!(Members::parse("[1]", "data").unwrap_err().field, "data");
    }
}
