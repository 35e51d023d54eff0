//! The `q` parameter of `files.list`, as far as the fake understands it.

/// The clauses of a `files.list` query this fake understands.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct FilesQuery {
    pub(super) parents: Vec<String>,
    pub(super) trashed: Option<bool>,
}

/// Parse `'<id>' in parents and trashed=false` and the like: clauses joined by `and`,
/// each `'<id>' in parents` (with `\'` and `\\` escapes) or `trashed = true|false`.
pub(super) fn parse_files_query(q: &str) -> Option<FilesQuery> {
    let mut out = FilesQuery::default();
    let mut rest = q.trim();
    loop {
        if let Some(after_quote) = rest.strip_prefix('\'') {
            // '<id>' in parents
            let mut id = String::new();
            let mut chars = after_quote.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => id.push(chars.next()?.1),
                    (i, '\'') => break i + 1,
                    (_, c) => id.push(c),
                }
            };
            let tail = after_quote[end..].trim_start();
            let tail = tail.strip_prefix("in")?.trim_start();
            rest = tail.strip_prefix("parents")?.trim_start();
            out.parents.push(id);
        } else {
            let tail = rest.strip_prefix("trashed")?.trim_start();
            let tail = tail.strip_prefix('=')?.trim_start();
            let (value, tail) = if let Some(t) = tail.strip_prefix("true") {
                (true, t)
            } else {
                (false, tail.strip_prefix("false")?)
            };
            out.trashed = Some(value);
            rest = tail.trim_start();
        }
        if rest.is_empty() {
            return Some(out);
        }
        rest = rest.strip_prefix("and")?;
        if !rest.starts_with(char::is_whitespace) {
            return None;
        }
        rest = rest.trim_start();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_supported_files_queries() {
        let q = |s: &str| parse_files_query(s);
        assert_eq!(
            q("'abc' in parents and trashed=false"),
            Some(FilesQuery {
                parents: vec!["abc".into()],
                trashed: Some(false)
            })
        );
        assert_eq!(
            q(r"  'it\'s\\x'  in  parents and trashed = true "),
            Some(FilesQuery {
                parents: vec![r"it's\x".into()],
                trashed: Some(true)
            })
        );
        assert_eq!(
            q("trashed=false"),
            Some(FilesQuery {
                parents: vec![],
                trashed: Some(false)
            })
        );
        for bad in [
            "",
            "'abc' in parents andtrashed=false",
            "'abc' in parents or trashed=false",
            "'abc in parents",
            "name = 'x'",
            "trashed=maybe",
            "'a' in parents and",
        ] {
            assert_eq!(q(bad), None, "{bad:?}");
        }
    }
}
