//! Picks the mapped values out of a JSON message in one pass, without building the document.
//!
//! A meter message carries a dozen numbers; parsing it into a [`Value`] tree first costs an
//! allocation per key and per object, and each mapped field is then looked up again by its
//! JSON pointer. Here the mapped pointers form a tree of object keys ([`Paths`]); the parser
//! walks the message once, skips what no pointer names ([`IgnoredAny`]) and keeps a `Value`
//! only for the mapped leaves. The result is what `Value::pointer` on the parsed document
//! would give for every pointer, including where a pointer crosses an array (that subtree is
//! kept as a `Value` and the rest of the pointer resolved on it) and for repeated keys (the
//! last one wins, as in `Value`).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::value::SeqAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// JSON pointers as a tree of object keys; each pointer fills one slot of the result.
#[derive(Debug, Clone, Default)]
pub(super) struct Paths {
    /// Slots of the pointers that end here.
    slots: Vec<usize>,
    /// Children by unescaped key, in the order the pointers named them.
    children: Vec<(String, Paths)>,
    /// Every pointer below this node, relative to it (escaped), with its slot: resolved on a
    /// captured `Value` when the node is not an object.
    below: Vec<(String, usize)>,
    /// Number of slots (root only).
    len: usize,
}

impl Paths {
    /// The tree of `pointers`; the value of `pointers[i]` lands in slot `i`.
    pub(super) fn new<'a>(pointers: impl IntoIterator<Item = &'a str>) -> Paths {
        let mut root = Paths::default();
        for (slot, p) in pointers.into_iter().enumerate() {
            root.len = slot + 1;
            // `Value::pointer` finds nothing for a non-empty pointer without a leading '/'.
            if p.is_empty() || p.starts_with('/') {
                root.insert(p, slot);
            }
        }
        root
    }

    fn insert(&mut self, pointer: &str, slot: usize) {
        let segs: Vec<&str> = pointer.split('/').skip(1).collect();
        let mut node = self;
        for (i, seg) in segs.iter().enumerate() {
            let rest: String = segs[i..].iter().flat_map(|s| ["/", s]).collect();
            node.below.push((rest, slot));
            // The unescaping of `Value::pointer`.
            let key = seg.replace("~1", "/").replace("~0", "~");
            let at = match node.children.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => {
                    node.children.push((key, Paths::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[at].1;
        }
        node.slots.push(slot);
    }

    /// Forgets what an earlier occurrence of this node's key filled in.
    fn reset(&self, out: &mut [Option<Value>]) {
        for &s in self.slots.iter().chain(self.below.iter().map(|(_, s)| s)) {
            out[s] = None;
        }
    }

    /// Fills the slots of this node and of every pointer below it from `v`.
    fn fill(&self, v: Value, out: &mut [Option<Value>]) {
        for (rel, s) in &self.below {
            out[*s] = v.pointer(rel).cloned();
        }
        if let Some((&last, rest)) = self.slots.split_last() {
            for &s in rest {
                out[s] = Some(v.clone());
            }
            out[last] = Some(v);
        }
    }
}

/// What [`extract`] found: whether the message is a JSON object, and the value at each
/// pointer (`None` where `Value::pointer` would find nothing).
pub(super) struct Extracted {
    /// The top level is an object.
    pub is_object: bool,
    /// The value of each pointer, by slot.
    pub values: Vec<Option<Value>>,
}

/// Parses `payload` (one JSON document, nothing after it) and takes the values at `paths`.
pub(super) fn extract(payload: &[u8], paths: &Paths) -> Result<Extracted, serde_json::Error> {
    let mut values = vec![None; paths.len];
    let mut de = serde_json::Deserializer::from_slice(payload);
    let is_object = Root {
        node: paths,
        out: &mut values,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(Extracted { is_object, values })
}

/// The top level: like [`Node`], and also says whether it is an object.
struct Root<'a> {
    node: &'a Paths,
    out: &'a mut [Option<Value>],
}

impl<'de> DeserializeSeed<'de> for Root<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        if !self.node.slots.is_empty() {
            // The empty pointer names the whole document.
            let v = Value::deserialize(d)?;
            let is_object = v.is_object();
            self.node.fill(v, self.out);
            return Ok(is_object);
        }
        d.deserialize_any(NodeVisitor {
            node: self.node,
            out: self.out,
        })
    }
}

/// The value of a key that some pointer goes through or ends at.
struct Node<'a> {
    node: &'a Paths,
    out: &'a mut [Option<Value>],
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.node.reset(self.out);
        if !self.node.slots.is_empty() {
            let v = Value::deserialize(d)?;
            self.node.fill(v, self.out);
            return Ok(());
        }
        d.deserialize_any(NodeVisitor {
            node: self.node,
            out: self.out,
        })
        .map(|_| ())
    }
}

/// Walks an object; anything else is kept only as far as pointers go into it. Returns
/// whether the value was an object.
struct NodeVisitor<'a> {
    node: &'a Paths,
    out: &'a mut [Option<Value>],
}

impl<'de> Visitor<'de> for NodeVisitor<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let children = &self.node.children;
        // Messages list their keys in the same order every time, usually the mapping's
        // order: look where the last match was first.
        let mut hint = 0;
        while let Some(key) = map.next_key_seed(Key)? {
            let found = (0..children.len())
                .map(|i| (hint + i) % children.len())
                .find(|&i| children[i].0 == key);
            match found {
                Some(i) => {
                    hint = i + 1;
                    map.next_value_seed(Node {
                        node: &children[i].1,
                        out: self.out,
                    })?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        if self.node.below.is_empty() {
            IgnoredAny.visit_seq(seq)?;
        } else {
            // A pointer goes into an array ("/phases/0"): keep it and resolve there.
            let v = Value::deserialize(SeqAccessDeserializer::new(seq))?;
            self.node.fill(v, self.out);
        }
        Ok(false)
    }

    // A scalar has nothing below it: pointers into it find nothing.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// An object key, borrowed from the message unless it has escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `Value::pointer` gives on the fully parsed document: the oracle.
    fn oracle(doc: &str, pointers: &[&str]) -> (bool, Vec<Option<Value>>) {
        let v: Value = serde_json::from_str(doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
        let found = pointers.iter().map(|p| v.pointer(p).cloned()).collect();
        (v.is_object(), found)
    }

    fn check(doc: &str, pointers: &[&str]) {
        let got = extract(doc.as_bytes(), &Paths::new(pointers.iter().copied()))
            .unwrap_or_else(|e| panic!("{doc}: {e}"));
        assert_eq!(
            (got.is_object, got.values),
            oracle(doc, pointers),
            "{doc} {pointers:?}"
        );
    }

    #[test]
    fn same_values_as_pointers_on_the_parsed_document() {
        let ptrs = [
            "/ts",
            "/voltage_a",
            "/v/a",
            "/v/b/c",
            "/arr/1",
            "/arr/1/x",
            "/a~1b",
            "/t~0",
            "/missing",
            "",
            "/v",
            "nope",
        ];
        for doc in [
            r#"{"ts": 5, "voltage_a": 230.1, "v": {"a": 1, "b": {"c": "x"}}, "other": [1, {"q": 2}]}"#,
            r#"{"arr": [0, {"x": 7}], "a/b": true, "t~": null}"#,
            r#"{"v": {"a": 1}, "v": 3}"#,
            r#"{"v": 3, "v": {"a": 2, "b": {"c": [1]}}}"#,
            r#"{"v": [1, 2], "arr": {"1": {"x": "key, not index"}}}"#,
            r#"{"voltage_a": {"nested": 1}, "ts": "2026-01-01T00:00:00Z"}"#,
            r#"{"k\u0065y": 1, "v": {"\u0061": 4}}"#,
            r#"{}"#,
            r#"[1, 2, {"ts": 1}]"#,
            "42",
            r#""text""#,
            "null",
        ] {
            check(doc, &ptrs);
            check(doc, &["/ts", "/voltage_a", "/v/a"]);
        }
    }

    #[test]
    fn malformed_documents_are_errors() {
        let paths = Paths::new(["/a"]);
        for doc in [
            "",
            "{",
            r#"{"a": }"#,
            r#"{"a": 1} trailing"#,
            r#"{"b": [1, }"#,
            r#"{"a": 1e999}"#,
        ] {
            let ours = extract(doc.as_bytes(), &paths).is_err();
            let theirs = serde_json::from_str::<Value>(doc).is_err();
            assert_eq!(ours, theirs, "{doc:?}");
            assert!(ours, "{doc:?}");
        }
    }
}
