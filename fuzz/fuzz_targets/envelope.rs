//! Any body through the envelope reader, which reads `event`, `timestamp`, `workspaceId` and
//! `data.id` without building a tree. Whatever it reads must agree with a full
//! `serde_json::Value` parse of the same body, and the dedup key must be built from exactly
//! those fields.
#![no_main]

use illumitunnel::event::Envelope;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// How the reader renders a scalar field: strings as they are, numbers in serde_json's form.
fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(env) = Envelope::parse(data) else {
        return;
    };
    let first = data.iter().find(|b| !b.is_ascii_whitespace());
    assert_eq!(
        first,
        Some(&b'{'),
        "an envelope from a body that is not an object"
    );
    let tree: Value = match serde_json::from_slice(data) {
        Ok(tree) => tree,
        // JSON's grammar allows numbers of any size and `\u` escapes of lone surrogates;
        // serde_json's tree refuses what overflows an f64 (`1e999`) or cannot be a Rust string
        // (`"\ud800"`), and the skipping reader rightly takes both in fields it skips.
        Err(e) if e.to_string().starts_with("number out of range") => return,
        Err(e) if e.to_string().contains("surrogate") => return,
        // The same lone surrogate followed by another escape (`"\ud957\""`): the tree wants a
        // low surrogate there. Skipping still checks that every `\u` has four hex digits.
        Err(e) if e.to_string().starts_with("unexpected end of hex escape") => return,
        Err(e) => panic!("the reader accepted invalid JSON: {e}"),
    };
    let obj = tree.as_object().expect("the reader accepted a non-object");
    assert_eq!(
        obj.get("event").and_then(Value::as_str),
        Some(env.event.as_str())
    );
    assert_eq!(scalar(obj.get("timestamp")), env.timestamp);
    assert_eq!(scalar(obj.get("workspaceId")), env.workspace_id);
    if let Some(id) = &env.resource_id {
        let from_tree = scalar(obj.get("data").and_then(|d| d.get("id")));
        assert_eq!(from_tree.as_ref(), Some(id));
    }
    match (&env.resource_id, &env.timestamp) {
        (Some(id), Some(ts)) => {
            assert_eq!(env.dedup_key(), Some(format!("{}:{id}:{ts}", env.event)))
        }
        _ => assert_eq!(env.dedup_key(), None),
    }
});
