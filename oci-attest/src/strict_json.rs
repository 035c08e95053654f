//! Reading JSON that someone else wrote and signed (policies, statements): an object that
//! repeats a key is an error. serde_json, Go's `encoding/json` and the Rego evaluator each keep
//! one of the repeated values, not always the same one, so a document that says
//! `"exitcode": 1, "exitcode": 0` could read one way to the signer's tools and another way to
//! the gate. No crate offers the check, so this walks the document once with serde, holding
//! only the keys of the objects still open.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Parses `bytes` as `T` after checking that no object in it repeats a key. The error names
/// the repeated key and where it is (line and column).
pub fn from_slice<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    check_unique_keys(bytes)?;
    serde_json::from_slice(bytes)
}

/// Checks that `bytes` is one JSON value in which no object repeats a key (serde_json's
/// nesting limit of 128 levels applies).
pub fn check_unique_keys(bytes: &[u8]) -> serde_json::Result<()> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    UniqueKeys.deserialize(&mut deserializer)?;
    deserializer.end()
}

/// Walks one value; every object's keys must be distinct.
#[derive(Clone, Copy)]
struct UniqueKeys;

impl<'de> DeserializeSeed<'de> for UniqueKeys {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
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

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items.next_element_seed(UniqueKeys)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = entries.next_key_seed(Key)? {
            if seen.contains(&key) {
                return Err(de::Error::custom(format_args!(
                    "the object repeats the key {key:?}"
                )));
            }
            entries.next_value_seed(UniqueKeys)?;
            seen.insert(key);
        }
        Ok(())
    }
}

/// An object key, borrowed from the input unless it holds escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_at_any_depth_is_an_error_naming_it() {
        assert!(check_unique_keys(br#"{"a":1,"b":[{"a":2},{"a":3}],"c":{"a":{"a":4}}}"#).is_ok());
        for (document, key) in [
            (r#"{"exitcode":1,"exitcode":0}"#, "exitcode"),
            (r#"{"x":[1,{"y":{"z":1,"q":2,"z":3}}]}"#, "z"),
            // The same key written once plainly and once with an escape is still the same key.
            (r#"{"steps":{},"st\u0065ps":{}}"#, "steps"),
        ] {
            let error = check_unique_keys(document.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("repeats the key \"{key}\"")),
                "{document}: {error}"
            );
            assert!(error.contains("line 1 column"), "{error}");
        }
    }

    #[test]
    fn the_typed_parse_follows_the_check() {
        #[derive(Deserialize, Debug)]
        struct Doc {
            a: std::collections::BTreeMap<String, u32>,
        }
        let doc: Doc = from_slice(br#"{"a":{"x":1,"y":2}}"#).unwrap();
        assert_eq!(doc.a["y"], 2);
        // serde_json alone would keep the last value of a map key.
        assert!(from_slice::<Doc>(br#"{"a":{"x":1,"x":2}}"#).is_err());
        assert!(from_slice::<Doc>(br#"{"a":{}} trailing"#).is_err());
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        let error = check_unique_keys(deep.as_bytes()).unwrap_err().to_string();
        assert!(error.contains("recursion limit"), "{error}");
    }
}
