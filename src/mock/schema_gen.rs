//! Values that validate against a JSON Schema: tool-call arguments and structured output.
//!
//! Covers what OpenAI's function and structured-output schemas use: `type` (one or a list),
//! `enum`, `const`, `anyOf`/`oneOf` (one branch), `allOf` (merged objects), `properties` with
//! `required` (optional ones included at random), `items`, `minItems`/`maxItems`, numeric bounds
//! (inclusive and exclusive), `minLength`/`maxLength`, common string `format`s, and `$ref` into
//! `$defs`/`definitions`. `pattern` is not solved: a string under one is plain words. Recursion
//! stops at a fixed depth with the smallest value the schema allows.
//!
//! Schemas come from clients, so generation is bounded: a value never serialises to more than
//! [`MAX_OUTPUT_BYTES`]. A schema that asks for more (a huge `minItems` or `minLength`, or wide
//! recursion) gets a value cut short there, which may not validate, instead of a stalled worker.

use crate::api::json_writer;
use rand::RngExt;
use rand::rngs::StdRng;
use serde_json::{Map, Number, Value, json};

/// How deep `$ref`s and nesting may go before values are cut to their smallest form.
const MAX_DEPTH: usize = 12;

/// The most JSON one generated value serialises to, give or take a `null` per nesting level
/// where the room ran out.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// The serialised size of the largest number generated (`-1.2345678901234567e-300`).
const NUMBER_BYTES: usize = 24;

const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];

/// A value for `schema`, drawn from `rng`.
pub fn generate(schema: &Value, rng: &mut StdRng) -> Value {
    Generator {
        root: schema,
        rng,
        room: MAX_OUTPUT_BYTES,
    }
    .value(schema, 0)
}

struct Generator<'a, 'r> {
    root: &'a Value,
    rng: &'r mut StdRng,
    /// Output bytes still allowed; at zero every further value is `null` and containers stop.
    room: usize,
}

impl<'a> Generator<'a, '_> {
    /// Takes `bytes` of the room left; when they do not fit, the room is used up and `false`.
    fn spend(&mut self, bytes: usize) -> bool {
        match self.room.checked_sub(bytes) {
            Some(left) => {
                self.room = left;
                true
            }
            None => {
                self.room = 0;
                false
            }
        }
    }

    /// A value taken whole from the schema (`const`, `enum`), if it fits.
    fn copied(&mut self, value: &Value) -> Value {
        if self.spend(json_writer::serialized_len(value)) {
            value.clone()
        } else {
            Value::Null
        }
    }

    fn null(&mut self) -> Value {
        self.spend("null".len());
        Value::Null
    }

    fn value(&mut self, schema: &Value, depth: usize) -> Value {
        if self.room == 0 {
            return Value::Null;
        }
        let Value::Object(schema) = schema else {
            // `true` or `{}`-like: anything goes; a string is the friendliest anything.
            self.spend("\"value\"".len());
            return json!("value");
        };
        if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
            return match self.resolve(target) {
                Some(resolved) if depth < MAX_DEPTH => self.value(resolved, depth + 1),
                _ => self.null(),
            };
        }
        if let Some(constant) = schema.get("const") {
            return self.copied(constant);
        }
        if let Some(Value::Array(choices)) = schema.get("enum") {
            if !choices.is_empty() {
                let pick = self.rng.random_range(0..choices.len());
                return self.copied(&choices[pick]);
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = schema.get(key) {
                if !branches.is_empty() {
                    // Past the depth limit, take the first branch: often the terminating one.
                    let pick = if depth >= MAX_DEPTH {
                        0
                    } else {
                        self.rng.random_range(0..branches.len())
                    };
                    return self.value(&branches[pick], depth + 1);
                }
            }
        }
        if let Some(Value::Array(parts)) = schema.get("allOf") {
            return self.all_of(schema, parts, depth);
        }
        match self.type_of(schema, depth) {
            "object" => self.object(schema, depth),
            "array" => self.array(schema, depth),
            "integer" => {
                self.spend(NUMBER_BYTES);
                self.integer(schema)
            }
            "number" => {
                self.spend(NUMBER_BYTES);
                self.number(schema)
            }
            "boolean" => {
                self.spend("false".len());
                Value::Bool(self.rng.random())
            }
            "null" => self.null(),
            _ => self.string(schema),
        }
    }

    /// The type to generate: the schema's (a random non-null one from a list, or null past the
    /// depth limit when allowed), else guessed from the keywords present.
    fn type_of(&mut self, schema: &Map<String, Value>, depth: usize) -> &'static str {
        let known = |name: &str| -> &'static str {
            match name {
                "object" => "object",
                "array" => "array",
                "integer" => "integer",
                "number" => "number",
                "boolean" => "boolean",
                "null" => "null",
                _ => "string",
            }
        };
        match schema.get("type") {
            Some(Value::String(name)) => known(name),
            Some(Value::Array(names)) => {
                let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
                if depth >= MAX_DEPTH && names.contains(&"null") {
                    return "null";
                }
                let concrete: Vec<&str> = names.iter().copied().filter(|n| *n != "null").collect();
                match concrete.len() {
                    0 => "null",
                    n => known(concrete[self.rng.random_range(0..n)]),
                }
            }
            _ if schema.contains_key("properties") => "object",
            _ if schema.contains_key("items") => "array",
            _ => "string",
        }
    }

    fn resolve(&self, target: &str) -> Option<&'a Value> {
        let pointer = target.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    fn object(&mut self, schema: &Map<String, Value>, depth: usize) -> Value {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut object = Map::new();
        self.spend("{}".len());
        if let Some(Value::Object(properties)) = schema.get("properties") {
            for (name, property) in properties {
                let include = required.contains(&name.as_str())
                    || (depth < MAX_DEPTH && self.rng.random_bool(0.5));
                // The key, quoted and escaped, its colon and a comma.
                if include && self.spend(json_writer::serialized_len(name) + 2) {
                    let value = self.value(property, depth + 1);
                    object.insert(name.clone(), value);
                }
            }
        }
        Value::Object(object)
    }

    fn all_of(&mut self, schema: &Map<String, Value>, parts: &[Value], depth: usize) -> Value {
        let mut merged = Map::new();
        for part in parts {
            if let Value::Object(fields) = self.value(part, depth + 1) {
                merged.extend(fields);
            }
        }
        // The schema's own properties, beside `allOf`, belong to the object too.
        if schema.contains_key("properties") {
            if let Value::Object(fields) = self.object(schema, depth) {
                merged.extend(fields);
            }
        }
        Value::Object(merged)
    }

    fn array(&mut self, schema: &Map<String, Value>, depth: usize) -> Value {
        let min = bound(schema, "minItems").unwrap_or(1.0).max(0.0) as usize;
        let max = bound(schema, "maxItems")
            .map_or(min.max(3), |max| max as usize)
            .max(min);
        let len = if depth >= MAX_DEPTH {
            min
        } else {
            self.rng.random_range(min..=max)
        };
        self.spend("[]".len());
        static ANYTHING: Value = Value::Bool(true);
        let items = schema.get("items").unwrap_or(&ANYTHING);
        let mut array = Vec::new();
        // Each item's comma is spent here, the item itself as it is generated.
        while array.len() < len && self.spend(1) {
            array.push(self.value(items, depth + 1));
        }
        Value::Array(array)
    }

    /// The inclusive range a number must fall in, from the bounds present.
    fn range(schema: &Map<String, Value>, step: f64) -> (f64, f64) {
        let mut low = bound(schema, "minimum").unwrap_or(f64::NAN);
        let mut high = bound(schema, "maximum").unwrap_or(f64::NAN);
        if let Some(exclusive) = bound(schema, "exclusiveMinimum") {
            low = low.max(exclusive + step);
            if low.is_nan() {
                low = exclusive + step;
            }
        }
        if let Some(exclusive) = bound(schema, "exclusiveMaximum") {
            high = high.min(exclusive - step);
            if high.is_nan() {
                high = exclusive - step;
            }
        }
        match (low.is_nan(), high.is_nan()) {
            (true, true) => (0.0, 100.0),
            (false, true) => (low, low + 100.0),
            (true, false) => (high - 100.0, high),
            (false, false) => (low, high.max(low)),
        }
    }

    fn integer(&mut self, schema: &Map<String, Value>) -> Value {
        let (low, high) = Self::range(schema, 1.0);
        let (low, high) = (low.ceil() as i64, high.floor() as i64);
        Value::from(self.rng.random_range(low..=high.max(low)))
    }

    fn number(&mut self, schema: &Map<String, Value>) -> Value {
        let (low, high) = Self::range(schema, 1e-6);
        let x: f64 = if high > low && (high - low).is_finite() {
            self.rng.random_range(low..=high)
        } else if high > low {
            // Bounds so far apart that their span overflows: their midpoint is a fine value.
            low / 2.0 + high / 2.0
        } else {
            low
        };
        // Two decimals reads like a real value; rounding stays within the bounds.
        let rounded = (x * 100.0).round() / 100.0;
        let x = if (low..=high).contains(&rounded) {
            rounded
        } else {
            x
        };
        Number::from_f64(x).map_or(Value::from(0), Value::Number)
    }

    fn string(&mut self, schema: &Map<String, Value>) -> Value {
        let min = bound(schema, "minLength").unwrap_or(0.0).max(0.0) as usize;
        let max = bound(schema, "maxLength").map(|max| max as usize);
        let text = match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => "2024-05-13T09:30:00Z".to_owned(),
            Some("date") => "2024-05-13".to_owned(),
            Some("time") => "09:30:00".to_owned(),
            Some("email") => "user@example.com".to_owned(),
            Some("uri" | "url") => "https://example.com/resource".to_owned(),
            Some("uuid") => format!(
                "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                self.rng.random::<u32>(),
                self.rng.random::<u16>(),
                self.rng.random_range(0..0x1000u16),
                self.rng.random_range(0..0x1000u16),
                self.rng.random_range(0..1u64 << 48)
            ),
            _ => {
                let words = self.rng.random_range(1..=3);
                (0..words)
                    .map(|_| WORDS[self.rng.random_range(0..WORDS.len())])
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        let mut text = text;
        // Generated text is ASCII: its length in bytes is its length in characters.
        let min = min.min(self.room.saturating_sub(2));
        if text.len() < min {
            text.push_str(&"x".repeat(min - text.len()));
        }
        if let Some(max) = max {
            text.truncate(max);
        }
        text.truncate(self.room.saturating_sub(2));
        self.spend(text.len() + 2);
        Value::String(text)
    }
}

fn bound(schema: &Map<String, Value>, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn many(schema: Value) -> Vec<Value> {
        let mut rng = StdRng::seed_from_u64(3);
        (0..200).map(|_| generate(&schema, &mut rng)).collect()
    }

    #[test]
    fn objects_have_required_properties_of_the_right_types() {
        let schema = json!({
            "type": "object",
            "properties": {
                "location": {"type": "string", "minLength": 3, "maxLength": 20},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "flags": {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 4},
                "note": {"type": ["string", "null"]}
            },
            "required": ["location", "unit", "days", "ratio", "flags"]
        });
        let mut saw_optional = false;
        for value in many(schema) {
            let location = value["location"].as_str().unwrap();
            assert!((3..=20).contains(&location.chars().count()), "{location}");
            assert!(["celsius", "fahrenheit"].contains(&value["unit"].as_str().unwrap()));
            assert!((1..=7).contains(&value["days"].as_i64().unwrap()));
            let ratio = value["ratio"].as_f64().unwrap();
            assert!(ratio > 0.0 && ratio < 1.0, "{ratio}");
            let flags = value["flags"].as_array().unwrap();
            assert!((2..=4).contains(&flags.len()) && flags.iter().all(Value::is_boolean));
            if let Some(note) = value.get("note") {
                saw_optional = true;
                assert!(note.is_string() || note.is_null());
            }
        }
        assert!(saw_optional);
    }

    #[test]
    fn refs_any_of_const_and_formats() {
        let schema = json!({
            "$defs": {"step": {"type": "object", "properties": {"n": {"const": 4}}, "required": ["n"]}},
            "type": "object",
            "properties": {
                "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}},
                "either": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]},
                "when": {"type": "string", "format": "date-time"},
                "id": {"type": "string", "format": "uuid"}
            },
            "required": ["steps", "either", "when", "id"]
        });
        for value in many(schema) {
            assert!(
                value["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|s| s["n"] == 4)
            );
            assert!(value["either"].is_i64() || value["either"].is_boolean());
            assert_eq!(value["when"], "2024-05-13T09:30:00Z");
            assert_eq!(value["id"].as_str().unwrap().len(), 36);
        }
    }

    #[test]
    fn recursive_schemas_terminate() {
        let schema = json!({
            "$defs": {"node": {"type": "object", "properties": {
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["children"]}},
            "$ref": "#/$defs/node"
        });
        for value in many(schema) {
            assert!(value.is_object() || value.is_null());
        }
    }

    /// Found by the `schema` fuzz target: each of these used to stall a worker or abort on a
    /// huge allocation.
    #[test]
    fn hostile_schemas_give_small_values_promptly() {
        let wide: Map<String, Value> = (0..50)
            .map(|i| (format!("p{i}"), json!({"$ref": "#"})))
            .collect();
        let names: Vec<String> = wide.keys().cloned().collect();
        let schemas = [
            json!({"type": "array", "minItems": 1e18}),
            json!({"type": "array", "minItems": 1e3, "items": {"type": "array", "minItems": 1e3}}),
            json!({"type": "string", "minLength": 1e12}),
            json!({"type": "array", "minItems": 1e6, "items": {"const": "x".repeat(10_000)}}),
            json!({"type": "object", "properties": wide, "required": names}),
            json!({"type": "number", "minimum": -1e308, "maximum": 1e308}),
        ];
        let mut rng = StdRng::seed_from_u64(5);
        for schema in schemas {
            let text = generate(&schema, &mut rng).to_string();
            // Give or take a `null` per nesting level, where the room ran out.
            assert!(text.len() <= MAX_OUTPUT_BYTES + 16, "{} bytes", text.len());
        }
    }

    #[test]
    fn all_of_merges_and_untyped_schemas_still_give_values() {
        let schema = json!({"allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"type": "object", "properties": {"b": {"type": "boolean"}}, "required": ["b"]}
        ]});
        for value in many(schema) {
            assert!(value["a"].is_i64() && value["b"].is_boolean());
        }
        let mut rng = StdRng::seed_from_u64(1);
        assert!(generate(&json!({}), &mut rng).is_string());
        assert!(
            generate(
                &json!({"properties": {"x": {"type": "null"}}, "required": ["x"]}),
                &mut rng
            )["x"]
                .is_null()
        );
    }
}
