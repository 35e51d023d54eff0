//! The `fields` partial-response selector Google applies to every answer
//! (`a,b(c,d),e/f`, `*`), so a client that forgets to ask for a field does not get it.

use serde_json::Value;
use std::collections::BTreeMap;

/// Why a `fields` selector does not parse (Google answers 400 `invalidParameter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MaskError {
    /// This character where a name, `,`, `/`, `(` or `)` was expected.
    Unexpected(char, usize),
    /// A `(` never closed.
    Unclosed,
    /// No field name at this position.
    NameExpected(usize),
}

impl std::fmt::Display for MaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaskError::Unexpected(c, at) => write!(f, "unexpected {c:?} at {at}"),
            MaskError::Unclosed => f.write_str("unclosed '('"),
            MaskError::NameExpected(at) => write!(f, "a field name expected at {at}"),
        }
    }
}

/// A parsed `fields` selector: `a,b(c,d),e/f`, `*` for every field at a level.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct FieldMask(BTreeMap<String, Option<FieldMask>>);

impl FieldMask {
    pub(crate) fn parse(text: &str) -> Result<Self, MaskError> {
        let chars: Vec<char> = text.chars().collect();
        let mut pos = 0;
        let mask = Self::parse_list(&chars, &mut pos, 0)?;
        if pos != chars.len() {
            return Err(MaskError::Unexpected(chars[pos], pos));
        }
        Ok(mask)
    }

    fn parse_list(chars: &[char], pos: &mut usize, depth: usize) -> Result<Self, MaskError> {
        let mut mask = FieldMask::default();
        loop {
            skip_spaces(chars, pos);
            // path: name ('/' name)*
            let mut path = vec![parse_name(chars, pos)?];
            while chars.get(*pos) == Some(&'/') {
                *pos += 1;
                path.push(parse_name(chars, pos)?);
            }
            skip_spaces(chars, pos);
            let sub = if chars.get(*pos) == Some(&'(') {
                *pos += 1;
                let sub = Self::parse_list(chars, pos, depth + 1)?;
                if chars.get(*pos) != Some(&')') {
                    return Err(MaskError::Unclosed);
                }
                *pos += 1;
                skip_spaces(chars, pos);
                Some(sub)
            } else {
                None
            };
            mask.insert(&path, sub);
            match chars.get(*pos) {
                Some(',') => *pos += 1,
                Some(')') if depth > 0 => return Ok(mask),
                None if depth == 0 => return Ok(mask),
                Some(c) => return Err(MaskError::Unexpected(*c, *pos)),
                None => return Err(MaskError::Unclosed),
            }
        }
    }

    /// Add `path` with its sub-selection (None: the whole value).
    fn insert(&mut self, path: &[String], sub: Option<FieldMask>) {
        let (first, rest) = path.split_first().expect("a path has a name");
        let leaf = if rest.is_empty() {
            sub
        } else {
            let mut inner = FieldMask::default();
            inner.insert(rest, sub);
            Some(inner)
        };
        match (self.0.get_mut(first), leaf) {
            (None, leaf) => {
                self.0.insert(first.clone(), leaf);
            }
            // Already whole: stays whole.
            (Some(None), _) => {}
            (Some(slot @ Some(_)), None) => *slot = None,
            (Some(Some(existing)), Some(more)) => {
                for (k, v) in more.0 {
                    existing.insert(std::slice::from_ref(&k), v);
                }
            }
        }
    }

    pub(crate) fn apply(&self, value: Value) -> Value {
        match value {
            Value::Object(map) => {
                if self.0.contains_key("*") {
                    return Value::Object(map);
                }
                let kept = map
                    .into_iter()
                    .filter_map(|(k, v)| match self.0.get(&k) {
                        None => None,
                        Some(None) => Some((k, v)),
                        Some(Some(sub)) => Some((k, sub.apply(v))),
                    })
                    .collect();
                Value::Object(kept)
            }
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.apply(v)).collect()),
            other => other,
        }
    }
}

fn skip_spaces(chars: &[char], pos: &mut usize) {
    while chars.get(*pos).is_some_and(|c| c.is_whitespace()) {
        *pos += 1;
    }
}

fn parse_name(chars: &[char], pos: &mut usize) -> Result<String, MaskError> {
    let start = *pos;
    while chars
        .get(*pos)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '*')
    {
        *pos += 1;
    }
    if start == *pos {
        return Err(MaskError::NameExpected(start));
    }
    Ok(chars[start..*pos].iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_masks_parse_and_merge() {
        let mask = FieldMask::parse("a,b(c,d/e),b/f, g/h(i)").unwrap();
        let v = json!({
            "a": 1, "z": 0,
            "b": [{"c": 2, "d": {"e": 3, "x": 0}, "f": 4, "y": 0}],
            "g": {"h": {"i": 5, "j": 0}, "k": 0}
        });
        assert_eq!(
            mask.apply(v),
            json!({"a": 1, "b": [{"c": 2, "d": {"e": 3}, "f": 4}], "g": {"h": {"i": 5}}})
        );
        // a whole field wins over a sub-selection of it
        let mask = FieldMask::parse("a(b),a").unwrap();
        assert_eq!(
            mask.apply(json!({"a": {"b": 1, "c": 2}})),
            json!({"a": {"b": 1, "c": 2}})
        );
        for bad in ["", "a,", "a(b", "a)b", "a(b))", "a//b", "a b"] {
            assert!(FieldMask::parse(bad).is_err(), "{bad:?}");
        }
    }
}
