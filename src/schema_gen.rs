//! Values that validate against a JSON Schema: tool-call arguments and structured output.
//!
//! Covers what OpenAI's function and structured-output schemas use: `type` (one or a list),
//! `enum`, `const`, `anyOf`/`oneOf` (one branch), `allOf` (merged objects), `properties` with
//! `required` (optional ones included at random), `items`, `minItems`/`maxItems`, numeric bounds
//! (inclusive and exclusive), `minLength`/`maxLength`, common string `format`s, and `$ref` into
//! `$defs`/`definitions`. `pattern` is not solved: a string under one is plain words. Recursion
//! stops at a fixed depth with the smallest value the schema allows.

use rand::RngExt;
use rand::rngs::StdRng;
use serde_json::{Map, Number, Value, json};

/// How deep `$ref`s and nesting may go before values are cut to their smallest form.
const MAX_DEPTH: usize = 12;

const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];

/// A value for `schema`, drawn from `rng`.
pub fn generate(schema: &Value, rng: &mut StdRng) -> Value {
    Generator { root: schema, rng }.value(schema, 0)
}

struct Generator<'a, 'r> {
    root: &'a Value,
    rng: &'r mut StdRng,
}

impl Generator<'_, '_> {
    fn value(&mut self, schema: &Value, depth: usize) -> Value {
        let Value::Object(schema) = schema else {
            // `true` or `{}`-like: anything goes; a string is the friendliest anything.
            return json!("value");
        };
        if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
            return match self.resolve(target) {
                Some(resolved) if depth < MAX_DEPTH => self.value(&resolved.clone(), depth + 1),
                _ => Value::Null,
            };
        }
        if let Some(constant) = schema.get("const") {
            return constant.clone();
        }
        if let Some(Value::Array(choices)) = schema.get("enum") {
            if !choices.is_empty() {
                return choices[self.rng.random_range(0..choices.len())].clone();
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
            "integer" => self.integer(schema),
            "number" => self.number(schema),
            "boolean" => Value::Bool(self.rng.random()),
            "null" => Value::Null,
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

    fn resolve(&self, target: &str) -> Option<&Value> {
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
        if let Some(Value::Object(properties)) = schema.get("properties") {
            for (name, property) in properties {
                let include = required.contains(&name.as_str())
                    || (depth < MAX_DEPTH && self.rng.random_bool(0.5));
                if include {
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
        let mut rest = schema.clone();
        rest.remove("allOf");
        if rest.contains_key("properties") {
            if let Value::Object(fields) = self.object(&rest, depth) {
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
        let items = schema.get("items").cloned().unwrap_or(Value::Bool(true));
        Value::Array((0..len).map(|_| self.value(&items, depth + 1)).collect())
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
        let x: f64 = if high > low {
            self.rng.random_range(low..=high)
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
        while text.chars().count() < min {
            text.push('x');
        }
        if let Some(max) = max {
            text = text.chars().take(max).collect();
        }
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
