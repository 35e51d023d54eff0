//! What callers send, as the logs show it: [`untrusted`] truncates and escapes.
//!
//! A log line is written per request, often before the caller is authenticated (a
//! webhook's channel id, a request's path), so a value logged whole lets anyone make
//! every line as long as their request, or forge lines with newlines and escapes. Every
//! log of a caller-sent value goes through this one helper.

use std::fmt;

/// How much of a caller-sent value a log line shows, in characters (before escaping).
pub const SHOWN_CHARS: usize = 96;

/// A caller-sent value for a log field: its first [`SHOWN_CHARS`] characters with
/// control, quote and non-printable characters escaped (`\n`, `\u{1b}`, ...), then, if
/// it was longer, how many bytes were left out.
pub fn untrusted(value: &str) -> Untrusted<'_> {
    Untrusted(value)
}

/// See [`untrusted`].
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(&'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self
            .0
            .char_indices()
            .nth(SHOWN_CHARS)
            .map_or(self.0.len(), |(i, _)| i);
        let (shown, rest) = self.0.split_at(end);
        for c in shown.chars() {
            write!(f, "{}", c.escape_debug())?;
        }
        if !rest.is_empty() {
            write!(f, "...(+{} bytes)", rest.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plain_values_are_shown_as_they_are() {
        assert_eq!(untrusted("chan-1").to_string(), "chan-1");
        assert_eq!(untrusted("").to_string(), "");
        assert_eq!(format!("{:?}", untrusted("a b")), "\"a b\"");
    }

    #[test]
    fn long_values_are_cut_and_say_how_much_was_left_out() {
        let long = "x".repeat(16 * 1024);
        let shown = untrusted(&long).to_string();
        assert_eq!(
            shown,
            format!(
                "{}...(+{} bytes)",
                "x".repeat(SHOWN_CHARS),
                16 * 1024 - SHOWN_CHARS
            )
        );
        // Cut on a character, never inside one.
        let wide = "é".repeat(SHOWN_CHARS + 1);
        assert_eq!(
            untrusted(&wide).to_string(),
            format!("{}...(+2 bytes)", "é".repeat(SHOWN_CHARS))
        );
    }

    #[test]
    fn control_and_quote_characters_are_escaped() {
        let forged = "a\n{\"level\":\"ERROR\"}\u{1b}[31m\r\t\\";
        let shown = untrusted(forged).to_string();
        assert_eq!(shown, r#"a\n{\"level\":\"ERROR\"}\u{1b}[31m\r\t\\"#);
        assert!(!shown.chars().any(char::is_control), "{shown}");
    }
}
