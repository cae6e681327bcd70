//! A pre-pass over a saved plan's JSON that refuses any object holding a key twice: serde keeps
//! the last of a map's duplicate keys silently (a `changes` entry would vanish).

use std::collections::HashSet;

/// Refuses a JSON text in which any object holds the same key twice (serde would keep the last
/// one of a map silently). The error names the key, where it is, and its line and column.
pub(super) fn reject_duplicate_keys(bytes: &[u8]) -> Result<(), String> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let checked = Unique { at: None }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    checked.map_err(|e| {
        // Our own message, with the position in words instead of the parser's suffix.
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let text = e.to_string();
        let text = text.strip_suffix(&suffix).unwrap_or(&text);
        format!("line {}, column {}: {text}", e.line(), e.column())
    })?;
    Ok(())
}

/// Where a value sits in the file, for the duplicate-key message: a chain up to the root.
#[derive(Clone, Copy)]
struct At<'a> {
    up: Option<&'a At<'a>>,
    key: Option<&'a str>,
    index: usize,
}

impl At<'_> {
    fn render(at: Option<&At<'_>>) -> String {
        let mut parts = Vec::new();
        let mut cur = at;
        while let Some(a) = cur {
            parts.push(match a.key {
                Some(k) => format!(".{k}"),
                None => format!("[{}]", a.index),
            });
            cur = a.up;
        }
        parts.reverse();
        if parts.is_empty() {
            "the top level".into()
        } else {
            parts.concat().trim_start_matches('.').to_string()
        }
    }
}

/// A visitor over any JSON value that fails on the first object with a repeated key.
struct Unique<'a> {
    at: Option<&'a At<'a>>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Unique<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Unique<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            let here = At {
                up: self.at,
                key: None,
                index,
            };
            if seq.next_element_seed(Unique { at: Some(&here) })?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key \"{key}\" appears twice in {}; a saved plan never repeats a key",
                    At::render(self.at)
                )));
            }
            let here = At {
                up: self.at,
                key: Some(&key),
                index: 0,
            };
            map.next_value_seed(Unique { at: Some(&here) })?;
            seen.insert(key);
        }
        Ok(())
    }
}
