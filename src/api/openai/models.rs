//! `GET /v1/models` and `GET /v1/models/{model}`: the `Model` objects we write.

use serde::Serialize;

/// The `created` time of every listed model: fixed, so listings are reproducible.
const CREATED: u64 = 1_700_000_000;

/// `Model`.
#[derive(Serialize)]
struct ModelJson<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

impl<'a> ModelJson<'a> {
    fn new(id: &'a str) -> Self {
        Self {
            id,
            object: "model",
            created: CREATED,
            owned_by: "llm-edge",
        }
    }
}

/// Renders `ListModelsResponse` for these model ids.
pub fn render_list<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    #[derive(Serialize)]
    struct ListJson<'a> {
        object: &'static str,
        data: Vec<ModelJson<'a>>,
    }
    let list = ListJson {
        object: "list",
        data: ids.into_iter().map(ModelJson::new).collect(),
    };
    serde_json::to_vec(&list).expect("serializing plain data cannot fail")
}

/// Renders one `Model`.
pub fn render_model(id: &str) -> Vec<u8> {
    serde_json::to_vec(&ModelJson::new(id)).expect("serializing plain data cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn lists_and_retrieves_in_openais_shape() {
        let list: Value = serde_json::from_slice(&render_list(["a", "b"])).unwrap();
        assert_eq!(list["object"], "list");
        assert_eq!(
            list["data"][1],
            json!({"id": "b", "object": "model", "created": CREATED, "owned_by": "llm-edge"})
        );
        let model: Value = serde_json::from_slice(&render_model("a")).unwrap();
        assert_eq!(model["id"], "a");
    }
}
