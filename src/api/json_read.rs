//! Reading JSON that llm-edge passes on after reading it: a value as serde_json reads it, and
//! whether any object in it names a key twice. Parsers disagree on which of two equal keys counts
//! (serde_json and Python take the last, others the first), so a body read here and sent on must
//! be sent as it was read.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Whether `body` opens as a JSON object (after whitespace). serde's derived readers of a struct
/// also take an array, field by field, so a reader of a request or reply as a struct checks this
/// first.
pub(crate) fn opens_object(body: &[u8]) -> bool {
    body.trim_ascii_start().first() == Some(&b'{')
}

/// Any JSON value, as `serde_json::from_slice` reads it, and whether any object in it names a
/// key twice.
pub(crate) fn parse_value_noting_duplicates(body: &[u8]) -> serde_json::Result<(Value, bool)> {
    let duplicated = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = NotingDuplicates(&duplicated).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok((value, duplicated.get()))
}

/// Builds a [`Value`] as serde_json does, setting the flag when an object repeats a key (the
/// last value wins, as in serde_json).
struct NotingDuplicates<'a>(&'a Cell<bool>);

impl<'de> DeserializeSeed<'de> for NotingDuplicates<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NotingDuplicates<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(NotingDuplicates(self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(NotingDuplicates(self.0))?;
            if fields.insert(key, value).is_some() {
                self.0.set(true);
            }
        }
        Ok(Value::Object(fields))
    }
}
